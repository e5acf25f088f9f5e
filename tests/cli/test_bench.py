"""`railyard bench`: a short run against a test cluster returns a sane JSON result."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from railyard.cli.app import app
from tests.support.cluster import LocalCluster

REQUIRED = {"records_per_sec", "requests_per_sec", "mb_per_sec", "p50_ms", "p99_ms", "errors"}


def bench(cluster: LocalCluster, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["bench", *args, "-c", str(cluster.config_path), "-o", "json"])
    assert result.exit_code == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_bench_put_and_get_report_sane_figures(cli_cluster: LocalCluster) -> None:
    single = bench(cli_cluster, "put", "--stream", "b1", "--count", "200", "--in-flight", "8")
    assert set(single) >= REQUIRED
    assert single["records"] == 200
    assert single["requests"] == 200
    assert single["errors"] == 0
    assert isinstance(single["records_per_sec"], float) and single["records_per_sec"] > 0
    # Rates are consistent with the counts (both figures are rounded, hence the tolerance).
    expected_mb = 200 * 100 / single["duration_s"] / 1e6
    assert single["mb_per_sec"] == pytest.approx(expected_mb, rel=0.01, abs=0.001)
    expected_rate = 200 / single["duration_s"]
    assert single["records_per_sec"] == pytest.approx(expected_rate, rel=0.01)
    assert 0 < single["p50_ms"] <= single["p99_ms"] <= single["max_ms"]
    assert single["path"] == "coalesced"
    per_call = bench(
        cli_cluster, "put", "--stream", "b1", "--count", "100", "--in-flight", "8", "--no-coalesce"
    )
    assert (per_call["path"], per_call["records"], per_call["errors"]) == ("per-call", 100, 0)

    batched = bench(
        cli_cluster, "put", "--stream", "b1", "--count", "1000", "--batch", "100", "--size", "1KiB"
    )
    assert (batched["records"], batched["requests"], batched["errors"]) == (1000, 10, 0)
    assert batched["bytes"] == 1000 * 1024

    assert batched["path"] == "stream"

    read = bench(cli_cluster, "get", "--stream", "b1", "--page", "300")
    assert read["records"] == 1300  # the stream once, from its oldest record
    assert read["errors"] == 0
    assert read["records_per_sec"] > 0


def test_bench_get_on_a_missing_stream_is_a_clear_error(cli_cluster: LocalCluster) -> None:
    result = CliRunner().invoke(
        app, ["bench", "get", "--stream", "never-made", "-c", str(cli_cluster.config_path)]
    )
    assert result.exit_code == 1
    assert "railyard bench put" in result.stderr


def test_a_streaming_window_beyond_what_the_cluster_remembers_is_refused() -> None:
    result = CliRunner().invoke(
        app, ["bench", "put", "--batch", "100", "--in-flight", "65", "--count", "10"]
    )
    assert result.exit_code == 2
    assert "--in-flight" in result.output and "64" in result.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--no-coalesce", "--batch", "10"], "use --batch 1 and --mode unary or auto"),
        (["--no-coalesce", "--mode", "stream"], "use --batch 1 and --mode unary or auto"),
        ([], "add --no-coalesce"),
        (["--no-coalesce", "--transport", "nativ"], "'nativ' is not one of"),
    ],
    ids=["batched", "streaming", "coalesced", "unknown"],
)
def test_the_native_transport_is_refused_where_it_would_be_ignored(
    args: list[str], says: str
) -> None:
    transport = [] if "--transport" in args else ["--transport", "native"]
    result = CliRunner().invoke(app, ["bench", "put", *transport, *args, "--count", "10"])
    assert result.exit_code == 2
    assert says in " ".join(result.output.split())
