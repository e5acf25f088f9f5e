"""The railyard CLI against a real 3-node cluster: the user's commands and their contracts.

Most commands run in-process (typer's CliRunner: fast); the ones where the
process boundary matters -- stdin, exit codes, no traceback -- run as
`python -m railyard` subprocesses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from railyard.cli.app import app
from tests.support.cluster import LocalCluster

SUBPROCESS_TIMEOUT_S = 60
RAILYARD = [sys.executable, "-m", "railyard"]
# The crash test feeds stdin in bursts, so lines keep arriving across the crash.
FEED_BURST = 20
FEED_PAUSE_S = 0.01
STATUS_KEYS = {
    "awaiting_catch_up",
    "fsync_p99_ms",
    "apply_lag",
    "proposals_per_s",
    "disk_free_bytes",
    "state_scrub_passes",
    "state_scrub_rows",
    "peer_round_trip_ms",
    "native_address",
    "id",
    "address",
    "reachable",
    "role",
    "term",
    "leader",
    "commit_index",
    "applied_index",
    "last_log_index",
    "snapshot_index",
    "tls",
    "insecure",
    "cert_days_left",
    "member",
    "match_index",
}


def cli(cluster: LocalCluster, *args: str) -> Result:
    return CliRunner().invoke(app, [*args, "-c", str(cluster.config_path)])


def ok(result: Result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.stderr}"
    return result.stdout


def assert_one_line_error(result: Result, *needles: str) -> None:
    """Exit 1, nothing on stdout, one 'error: ...' line on stderr naming `needles`."""
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def railyard(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RAILYARD, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        env={**os.environ, **(env or {})},
        check=False,
    )


def stream_info(cluster: LocalCluster, name: str) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(ok(cli(cluster, "stream", "describe", name, "-o", "json")))
    return info


# ------------------------------------------------------------------ happy paths


def test_create_put_get_describe(cli_cluster: LocalCluster) -> None:
    name = fresh("orders")
    created = json.loads(
        ok(cli(cli_cluster, "stream", "create", name, "--max-age", "24h", "-o", "json"))
    )
    assert created["name"] == name
    assert created["retention"]["max_age_ms"] == 24 * 3600 * 1000

    first = int(ok(cli(cli_cluster, "put", name, "hello")).strip())
    acked = json.loads(ok(cli(cli_cluster, "put", name, "wörld", "--key", "k1", "-o", "json")))
    assert acked == {"stream": name, "sequence": first + 1}

    lines = ok(cli(cli_cluster, "get", name, "--from-start")).splitlines()
    assert lines == [f"{first}\thello", f"{first + 1}\twörld"]

    records = [
        json.loads(line)
        for line in ok(
            cli(cli_cluster, "get", name, "--after", str(first), "-o", "json")
        ).splitlines()
    ]
    assert len(records) == 1
    assert records[0]["sequence"] == first + 1
    assert records[0]["data"] == "wörld"
    assert records[0]["key"] == "k1"
    assert records[0]["timestamp"].endswith("Z")

    assert (
        ok(cli(cli_cluster, "get", name, "--from", str(first), "--limit", "1"))
        == f"{first}\thello\n"
    )
    assert ok(cli(cli_cluster, "get", name, "--since", "10m")).count("\n") == 2

    info = stream_info(cli_cluster, name)
    assert info["record_count"] == 2
    assert info["last_sequence"] == first + 1
    listed = json.loads(ok(cli(cli_cluster, "stream", "list", "-o", "json")))
    assert name in [s["name"] for s in listed]

    ok(cli(cli_cluster, "stream", "delete", name))
    assert_one_line_error(cli(cli_cluster, "stream", "describe", name), name)

    # Every node applied the same log.
    cli_cluster.wait_converged()


def test_status_json_shape_with_one_leader(cli_cluster: LocalCluster) -> None:
    cli_cluster.wait_for_leader()
    doc = json.loads(ok(cli(cli_cluster, "status", "-o", "json")))
    assert set(doc) == {
        "cluster",
        "leader",
        "term",
        "security",
        "nodes",
        "config_index",
        "members",
    }
    assert [m["id"] for m in doc["members"]] == cli_cluster.node_ids
    assert {n["member"] for n in doc["nodes"]} == {"voter"}
    assert doc["cluster"] == "cli"
    assert doc["security"] == "plaintext"  # loopback, no [tls]
    assert [n["id"] for n in doc["nodes"]] == cli_cluster.node_ids
    assert [n["address"] for n in doc["nodes"]] == cli_cluster.endpoints
    for node in doc["nodes"]:
        assert set(node) == STATUS_KEYS
        assert node["reachable"] is True
        assert isinstance(node["awaiting_catch_up"], bool)
        assert (node["tls"], node["insecure"], node["cert_days_left"]) == (False, False, None)
        assert node["role"] in {"leader", "follower", "candidate", "pre-candidate"}
        # Every node saved its log at least once (the leader's first entry).
        assert node["fsync_p99_ms"] > 0
        assert node["disk_free_bytes"] > 0
        assert node["apply_lag"] >= 0 and node["proposals_per_s"] >= 0
        assert node["state_scrub_passes"] >= 0 and node["state_scrub_rows"] >= 0
    leaders = [n["id"] for n in doc["nodes"] if n["role"] == "leader"]
    assert leaders == [doc["leader"]]
    assert doc["term"] == max(n["term"] for n in doc["nodes"])
    by_id = {n["id"]: n for n in doc["nodes"]}
    followers = set(cli_cluster.node_ids) - {doc["leader"]}
    assert set(by_id[doc["leader"]]["peer_round_trip_ms"]) == followers

    table = ok(cli(cli_cluster, "status"))
    assert "leader" in table and all(nid in table for nid in cli_cluster.node_ids)


def test_force_election_moves_leadership_to_the_named_node(cli_cluster: LocalCluster) -> None:
    before = cli_cluster.wait_for_leader()
    target = next(nid for nid in cli_cluster.node_ids if nid != before)
    doc = json.loads(ok(cli(cli_cluster, "force-election", "--node", target, "-o", "json")))
    assert doc["previous_leader"] == before
    assert doc["leader"] == target
    assert isinstance(doc["term"], int)
    assert cli_cluster.wait_for_leader() == target


def test_put_from_stdin_acknowledges_every_line_in_order(cli_cluster: LocalCluster) -> None:
    name = fresh("lines")
    lines = [f"line {i}" for i in range(1500)]
    done = railyard("put", name, "-", "-c", str(cli_cluster.config_path), stdin="\n".join(lines))
    assert done.returncode == 0, done.stderr
    sequences = [int(s) for s in done.stdout.split()]
    assert len(sequences) == len(lines)
    assert sequences == list(range(sequences[0], sequences[0] + len(lines)))

    got = ok(cli(cli_cluster, "get", name, "--from-start")).splitlines()
    assert got == [f"{seq}\t{line}" for seq, line in zip(sequences, lines, strict=True)]


def test_status_shows_an_unreachable_node_as_nulls(cli_cluster: LocalCluster) -> None:
    victim = cli_cluster.node_ids[-1]
    cli_cluster.stop_node(victim)
    try:
        result = cli(cli_cluster, "status", "-o", "json")
        # 3: the victim led, and the others have not elected another yet.
        assert result.exit_code in (0, 3), result.stderr
        doc = json.loads(result.stdout)
        down = next(n for n in doc["nodes"] if n["id"] == victim)
        assert down["reachable"] is False
        # What the node would say is unknown; the leader still lists it as a member.
        known = {"id", "address", "reachable", "member", "match_index"}
        assert all(down[k] is None for k in STATUS_KEYS - known)
        assert down["member"] in ("voter", None)  # None: no leader to ask
    finally:
        cli_cluster.start_node(victim)
        cli_cluster.wait_ready(victim)
        cli_cluster.wait_for_leader()


# ------------------------------------------------------------------ bad input


def test_invalid_stream_name_is_refused_and_nothing_changes(cli_cluster: LocalCluster) -> None:
    before = json.loads(ok(cli(cli_cluster, "stream", "list", "-o", "json")))
    assert_one_line_error(cli(cli_cluster, "stream", "create", "no spaces/allowed!"))
    assert_one_line_error(cli(cli_cluster, "put", "no spaces/allowed!", "x"))
    after = json.loads(ok(cli(cli_cluster, "stream", "list", "-o", "json")))
    assert [s["name"] for s in after] == [s["name"] for s in before]


def test_oversized_record_is_refused_and_nothing_changes(cli_cluster: LocalCluster) -> None:
    name = fresh("big")
    ok(cli(cli_cluster, "stream", "create", name))
    assert_one_line_error(cli(cli_cluster, "put", name, "x" * ((1 << 20) + 1)), "limit")
    assert stream_info(cli_cluster, name)["record_count"] == 0


def test_get_from_an_unknown_stream_fails_clearly(cli_cluster: LocalCluster) -> None:
    name = fresh("missing")
    assert_one_line_error(cli(cli_cluster, "get", name, "--from-start"), name)


def test_malformed_cluster_files_fail_with_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[cluster]\nname = "x"\n[[nodes]]\nid = "a"\naddress = "nowhere"\n')
    result = CliRunner().invoke(app, ["status", "-c", str(bad)])
    assert_one_line_error(result, str(bad), "nodes[0].address", "host:port")

    dup = tmp_path / "dup.toml"
    dup.write_text(
        '[[nodes]]\nid = "a"\naddress = "127.0.0.1:1"\n'
        '[[nodes]]\nid = "a"\naddress = "127.0.0.1:2"\n'
    )
    result = CliRunner().invoke(app, ["node", "start", "-c", str(dup), "--id", "a"])
    assert_one_line_error(result, str(dup), "nodes[1].id", "duplicate")


def test_an_unlisted_node_without_data_or_join_is_told_both_ways_out(tmp_path: Path) -> None:
    cluster = tmp_path / "c.toml"
    cluster.write_text('[[nodes]]\nid = "a"\naddress = "127.0.0.1:1"\n')
    address = ["--address", "127.0.0.1:2"]
    result = CliRunner().invoke(app, ["node", "start", "-c", str(cluster), "--id", "b", *address])
    # Not only --join: a member that lost its data comes back once the file lists it.
    assert_one_line_error(result, "start a new node with --join", f"list it in {cluster}")
    assert not (tmp_path / "data").exists()


def test_node_start_with_an_unknown_id_fails_in_a_real_process(cli_cluster: LocalCluster) -> None:
    done = railyard("node", "start", "-c", str(cli_cluster.config_path), "--id", "n9")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"error: {cli_cluster.config_path}: nodes: no node with id 'n9'; this file has: n1, n2, n3"
    ]


def test_no_cluster_running_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    done = railyard("put", "s", "x", env={"RAILYARD_ENDPOINTS": "127.0.0.1:1"})
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "railyard node start" in done.stderr


def test_usage_errors_exit_2() -> None:
    result = CliRunner().invoke(app, ["get", "s", "--from", "1", "--after", "2"])
    assert result.exit_code == 2
    result = CliRunner().invoke(app, ["stream", "create", "s", "--max-age", "soon"])
    assert result.exit_code == 2
    assert "duration" in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["--help"],
        ["node", "start", "--help"],
        ["stream", "create", "--help"],
        ["put", "--help"],
        ["get", "--help"],
        ["status", "--help"],
        ["force-election", "--help"],
        ["top", "--help"],
        ["bench", "put", "--help"],
        ["bench", "get", "--help"],
    ],
)
def test_every_command_has_help_with_examples(command: list[str]) -> None:
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0
    assert "railyard" in result.stdout


def test_get_follow_prints_new_records_and_exits_0_on_ctrl_c(
    cli_cluster: LocalCluster, tmp_path: Path
) -> None:
    name = fresh("follow")
    first = int(ok(cli(cli_cluster, "put", name, "before")).strip())
    out_path = tmp_path / "follow.out"
    with out_path.open("w") as out:
        follower = subprocess.Popen(
            [*RAILYARD, "get", name, "--follow", "-c", str(cli_cluster.config_path)],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
        )
    try:
        wait_for_text(out_path, f"{first}\tbefore\n")
        ok(cli(cli_cluster, "put", name, "after"))
        wait_for_text(out_path, f"{first}\tbefore\n{first + 1}\tafter\n")
        follower.send_signal(signal.SIGINT)
        _, err = follower.communicate(timeout=SUBPROCESS_TIMEOUT_S)
        assert follower.returncode == 0, err
        assert "Traceback" not in err
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait(timeout=SUBPROCESS_TIMEOUT_S)


def wait_for_text(path: Path, expected: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.read_text() == expected:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path}: expected {expected!r}, have {path.read_text()!r}")


def test_put_from_stdin_survives_a_leader_crash(cli_cluster: LocalCluster, tmp_path: Path) -> None:
    """The leader is SIGKILLed while lines keep arriving and batches are in flight."""
    name = fresh("crash")
    lines = [f"record {i}" for i in range(2000)]
    out_path = tmp_path / "acks.out"
    leader = cli_cluster.wait_for_leader()
    with out_path.open("w") as out:
        producer = subprocess.Popen(
            [*RAILYARD, "put", name, "-", "-c", str(cli_cluster.config_path)],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
        )

    def feed() -> None:
        assert producer.stdin is not None
        for i in range(0, len(lines), FEED_BURST):
            producer.stdin.write("".join(f"{line}\n" for line in lines[i : i + FEED_BURST]))
            producer.stdin.flush()
            time.sleep(FEED_PAUSE_S)
        producer.stdin.close()

    feeder = threading.Thread(target=feed, daemon=True)
    try:
        feeder.start()
        wait_for_lines(out_path, 300)
        cli_cluster.kill(leader)  # SIGKILL, mid-stream
        feeder.join(timeout=SUBPROCESS_TIMEOUT_S)
        assert producer.wait(timeout=SUBPROCESS_TIMEOUT_S) == 0
        assert producer.stderr is not None
        errors = producer.stderr.read()  # small: the process has ended
        # A resent batch that later ones overtook still gets its own sequences.
        assert "sequences are unknown" not in errors
    finally:
        if producer.poll() is None:
            producer.kill()
            producer.wait(timeout=SUBPROCESS_TIMEOUT_S)
        cli_cluster.start_node(leader)
        cli_cluster.wait_ready(leader)
    sequences = [int(s) for s in out_path.read_text().split()]
    assert sequences == list(range(sequences[0], sequences[0] + len(lines)))
    got = ok(cli(cli_cluster, "get", name, "--from-start")).splitlines()
    assert got == [f"{seq}\t{line}" for seq, line in zip(sequences, lines, strict=True)]
    cli_cluster.wait_for_leader()


def wait_for_lines(path: Path, count: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.read_text().count("\n") >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path}: fewer than {count} lines after {timeout_s}s")
