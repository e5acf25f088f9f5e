"""The metrics registry, the /metrics /health /ready endpoint and the JSON log format,
in one process (the node-level checks are in tests/cluster/test_metrics.py)."""

from __future__ import annotations

import io
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from railyard.node.observability import (
    MetricsEndpoint,
    NodeMetrics,
    Probe,
    RateMeter,
    RecentSamples,
    StateSample,
    StreamFigures,
    configure_logging,
    event,
)
from railyard.node.observability.logs import JsonFormatter

HTTP_TIMEOUT_S = 5.0


def sample(**overrides: object) -> StateSample:
    values: dict[str, object] = {
        "has_leader": True,
        "is_leader": False,
        "term": 3,
        "commit_index": 10,
        "applied_index": 9,
        "snapshot_index": 0,
        "catching_up": False,
        "proposals_pending": 1,
        "active_peers": 2,
        "streams": (),
    }
    values.update(overrides)
    return StateSample(**values)  # type: ignore[arg-type]


def scrape(metrics: NodeMetrics) -> dict[str, tuple[str, list[tuple[dict[str, str], float]]]]:
    from prometheus_client import generate_latest

    assert metrics.registry is not None
    text = generate_latest(metrics.registry).decode()
    return {
        f.name: (f.type, [(s.labels, s.value) for s in f.samples])
        for f in text_string_to_metric_families(text)
    }


def test_recent_samples_p99_and_rate_meter() -> None:
    recent = RecentSamples(size=100)
    assert recent.quantile(0.99) is None
    for i in range(1, 201):  # only the last 100 are kept: 101..200
        recent.add(float(i))
    assert recent.quantile(0.99) == 200.0
    assert recent.quantile(0.0) == 101.0
    meter = RateMeter(window_s=5)
    for second in range(10, 20):
        meter.add(7, second + 0.5)
    # Seconds 15..19 are the window before 20.0; each held 7.
    assert meter.per_second(20.0) == 7.0
    assert meter.per_second(40.0) == 0.0


def test_disabled_metrics_have_no_registry_but_keep_status_figures() -> None:
    metrics = NodeMetrics(peers=["n2"], enabled=False)
    assert metrics.registry is None
    metrics.observe_fsync(0.004)
    metrics.heartbeat_sent("n2", 1.0)
    metrics.heartbeat_answered("n2", 1.002)
    metrics.committed(5, 100.2)
    assert metrics.fsync_p99_s() == 0.004
    assert metrics.round_trip_s["n2"] == pytest.approx(0.002)
    assert metrics.committed_per_s(101.5) == 1.0


def test_registry_has_every_metric_with_its_type_and_labels(tmp_path: Path) -> None:
    (tmp_path / "raft.db").write_bytes(b"x" * 100)
    (tmp_path / "raft.db-wal").write_bytes(b"x" * 20)
    (tmp_path / "streams.db").write_bytes(b"x" * 7)
    metrics = NodeMetrics(
        peers=["n2", "n3"], enabled=True, data_dir=tmp_path, max_streams=1, node_id="n1"
    )
    streams = (StreamFigures("b", 2, 20), StreamFigures("a", 1, 10))
    metrics.sampler = lambda: sample(
        is_leader=True, streams=streams, instruments=metrics.copy_instruments()
    )
    metrics.observe_fsync(0.003)
    metrics.heartbeat_sent("n2", 1.0)
    metrics.heartbeat_answered("n2", 1.001)
    metrics.applied(entries=2, records=3)
    families = scrape(metrics)
    for name, kind in [
        ("railyard_server_has_leader", "gauge"),
        ("railyard_server_is_leader", "gauge"),
        ("railyard_server_leader_changes_seen", "counter"),
        ("railyard_server_term", "gauge"),
        ("railyard_server_proposals_committed", "counter"),
        ("railyard_server_proposals_applied", "counter"),
        ("railyard_server_proposals_pending", "gauge"),
        ("railyard_server_proposals_failed", "counter"),
        ("railyard_server_commit_index", "gauge"),
        ("railyard_server_applied_index", "gauge"),
        ("railyard_server_snapshot_index", "gauge"),
        ("railyard_server_catching_up", "gauge"),
        ("railyard_disk_log_fsync_duration_seconds", "histogram"),
        ("railyard_disk_apply_duration_seconds", "histogram"),
        ("railyard_disk_snapshot_duration_seconds", "histogram"),
        ("railyard_disk_log_bytes", "gauge"),
        ("railyard_disk_state_bytes", "gauge"),
        ("railyard_disk_free_bytes", "gauge"),
        ("railyard_disk_state_scrubbed_rows", "counter"),
        ("railyard_disk_state_scrubs", "counter"),
        ("railyard_network_peer_round_trip_time_seconds", "histogram"),
        ("railyard_network_peer_sent_bytes", "counter"),
        ("railyard_network_peer_received_bytes", "counter"),
        ("railyard_network_peer_send_failures", "counter"),
        ("railyard_network_active_peers", "gauge"),
        ("railyard_records_appended", "counter"),
        ("railyard_records_read", "counter"),
        ("railyard_stream_records", "gauge"),
        ("railyard_stream_bytes", "gauge"),
        ("process_cpu_seconds", "counter"),
        ("python_info", "gauge"),
    ]:
        assert name in families, name
        assert families[name][0] == kind, name
    values = {name: samples for name, (_, samples) in families.items()}
    assert values["railyard_server_is_leader"] == [({}, 1.0)]
    assert values["railyard_disk_log_bytes"] == [({}, 120.0)]
    assert values["railyard_disk_state_bytes"] == [({}, 7.0)]
    assert values["railyard_records_appended"][0][1] == 3.0
    # Capped to max_streams=1: the first by name.
    assert values["railyard_stream_records"] == [({"stream": "a"}, 1.0)]
    peers = {s[0]["peer"] for s in values["railyard_network_peer_sent_bytes"]}
    assert peers == {"n2", "n3"}
    fsync = dict((s[0].get("le"), s[1]) for s in values["railyard_disk_log_fsync_duration_seconds"])
    assert fsync["0.001"] == 0.0 and fsync["0.004"] == 1.0 and fsync["8.192"] == 1.0


def test_a_sampler_that_cannot_answer_keeps_the_last_sample() -> None:
    metrics = NodeMetrics(peers=[], enabled=True)
    metrics.sampler = lambda: sample(term=4)
    assert metrics.sample() == sample(term=4)
    metrics.sampler = lambda: None
    assert metrics.sample() == sample(term=4)


@pytest.fixture
def endpoint() -> Iterator[tuple[MetricsEndpoint, dict[str, Probe]]]:
    metrics = NodeMetrics(peers=["n2"], enabled=True)
    metrics.sampler = lambda: sample()
    probes = {"health": Probe(True), "ready": Probe(False, "catching up")}
    assert metrics.registry is not None
    ep = MetricsEndpoint(
        "127.0.0.1:0",
        metrics.registry,
        health=lambda: probes["health"],
        ready=lambda: probes["ready"],
        log=logging.getLogger("test"),
    )
    ep.start()
    try:
        yield ep, probes
    finally:
        ep.close()


def get(ep: MetricsEndpoint, path: str) -> tuple[int, str, str]:
    url = f"http://127.0.0.1:{ep.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_endpoint_serves_metrics_health_and_ready(
    endpoint: tuple[MetricsEndpoint, dict[str, Probe]],
) -> None:
    ep, probes = endpoint
    code, content_type, body = get(ep, "/metrics")
    assert code == 200 and content_type.startswith("text/plain")
    assert "railyard_server_has_leader 1.0" in body
    assert get(ep, "/health")[::2] == (200, '{"health": true}\n')
    code, _, body = get(ep, "/ready")
    assert code == 503 and json.loads(body) == {"ready": False, "reason": "catching up"}
    probes["health"] = Probe(False, "no leader")
    code, _, body = get(ep, "/health")
    assert code == 503 and json.loads(body) == {"health": False, "reason": "no leader"}
    assert get(ep, "/nope")[0] == 404


def test_endpoint_refuses_a_port_in_use(endpoint: tuple[MetricsEndpoint, dict[str, Probe]]) -> None:
    ep, _ = endpoint
    other = MetricsEndpoint(
        f"127.0.0.1:{ep.port}",
        ep.registry,
        health=lambda: Probe(True),
        ready=lambda: Probe(True),
        log=logging.getLogger("test"),
    )
    with pytest.raises(OSError):
        other.start()


def test_json_lines_carry_time_level_node_event_and_fields() -> None:
    log = configure_logging("n7", "info", "json")
    stream = io.StringIO()
    log.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    log.info("became leader term=%d", 3, extra=event("role_change", role="leader", term=3))
    log.warning("plain line")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["node"] == "n7" and first["level"] == "info"
    assert first["event"] == "role_change"
    assert first["fields"] == {"role": "leader", "term": 3}
    assert first["message"] == "became leader term=3"
    assert first["time"].endswith("Z") and first["time"][10] == "T"
    assert second["event"] == "log" and second["level"] == "warning"
    with pytest.raises(ValueError, match="expected one of text, json"):
        configure_logging("n7", "info", "xml")


def test_json_formatter_keeps_the_exception() -> None:
    formatter = JsonFormatter("n1")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.getLogger("t").makeRecord(
            "t", logging.ERROR, __file__, 1, "failed", (), exc_info=__import__("sys").exc_info()
        )
    doc = json.loads(formatter.format(record))
    assert "RuntimeError: boom" in doc["fields"]["exception"]
