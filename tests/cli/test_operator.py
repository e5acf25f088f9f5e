"""The traps an operator fell into (issue 13): each test here failed before its fix.

Tests that need a cluster use the shared `cli_cluster`, or a cluster of
their own when they stop nodes.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from importlib.metadata import version
from pathlib import Path

from typer.testing import CliRunner, Result

from railyard.cli.app import app
from railyard.cli.cluster import status_json
from railyard.cli.common import Target
from railyard.config import default_config
from railyard.proto import railyard_pb2 as pb
from tests.support.cluster import LocalCluster

RAILYARD = [sys.executable, "-m", "railyard"]
SUBPROCESS_TIMEOUT_S = 60


def test_version_long_and_short() -> None:
    for flag in ("--version", "-V"):
        result = CliRunner().invoke(app, [flag])
        assert result.exit_code == 0, result.stderr
        assert result.stdout == f"railyard {version('railyard')}\n"


# ------------------------------------------------------------------ output that can't be misread


def cli(cluster: LocalCluster, *args: str) -> Result:
    return CliRunner().invoke(app, [*args, "-c", str(cluster.config_path)])


def ok(result: Result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.stderr}"
    return result.stdout


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_get_table_escapes_what_would_be_ambiguous(cli_cluster: LocalCluster) -> None:
    name = fresh("escapes")
    records = [b"two\nlines", b"a\tb", b"back\\slash", b"\\n", b"\xff\x00", "wörld".encode()]
    for data in records:
        done = subprocess.run(
            [*RAILYARD, "put", name, "-", "-c", str(cli_cluster.config_path)],
            input=data.replace(b"\n", b"") if data == b"two\nlines" else data,
            capture_output=True,
            timeout=SUBPROCESS_TIMEOUT_S,
            check=True,
        )
        assert done.stdout.strip().isdigit()
    # Stdin splits lines, so the record with a newline goes as a --file.
    path = cli_cluster.root / "two-lines.txt"
    path.write_bytes(b"two\nlines")
    ok(cli(cli_cluster, "put", name, "--file", str(path)))
    lines = ok(cli(cli_cluster, "get", name)).splitlines()
    assert [line.split("\t", 1)[1] for line in lines] == [
        "twolines",
        "a\\tb",
        "back\\\\slash",
        "\\\\n",
        "\\xff\\x00",
        "wörld",
        "two\\nlines",
    ]
    assert "\\xNN" in ok(CliRunner().invoke(app, ["get", "--help"]))


def test_put_file_and_get_raw_round_trip_binary_bytes(cli_cluster: LocalCluster) -> None:
    name = fresh("binary")
    blob = bytes(range(256)) * 40 + b"\n\r\n\\ end"
    path = cli_cluster.root / "blob.bin"
    path.write_bytes(blob)
    sequence = int(ok(cli(cli_cluster, "put", name, "--file", str(path))).strip())
    done = subprocess.run(
        [
            *RAILYARD,
            "get",
            name,
            "--from",
            str(sequence),
            "--output",
            "raw",
            "--limit",
            "1",
            "-c",
            str(cli_cluster.config_path),
        ],
        capture_output=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        check=True,
    )
    assert done.stdout == blob


def test_put_file_refuses_data_too_and_names_an_unreadable_file(
    cli_cluster: LocalCluster, tmp_path: Path
) -> None:
    result = cli(cli_cluster, "put", fresh("x"), "data", "--file", str(tmp_path / "a"))
    assert result.exit_code == 2
    result = cli(cli_cluster, "put", fresh("x"), "--file", str(tmp_path / "missing.bin"))
    assert result.exit_code == 1
    assert "missing.bin" in result.stderr and "Traceback" not in result.stderr


def test_get_latest_without_follow_says_why_it_printed_nothing(cli_cluster: LocalCluster) -> None:
    name = fresh("latest")
    ok(cli(cli_cluster, "put", name, "old"))
    result = cli(cli_cluster, "get", name, "--latest")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "--latest shows only records appended from now on" in result.stderr
    assert "--follow" in result.stderr


# ------------------------------------------------------------------ streams


def test_stream_update_changes_retention_and_trims(cli_cluster: LocalCluster) -> None:
    name = fresh("update")
    ok(cli(cli_cluster, "stream", "create", name, "--max-bytes", "1MiB"))
    for data in ("a", "b", "c"):
        ok(cli(cli_cluster, "put", name, data))
    updated = json.loads(
        ok(cli(cli_cluster, "stream", "update", name, "--max-records", "2", "-o", "json"))
    )
    assert updated["retention"] == {"max_age_ms": 0, "max_records": 2, "max_bytes": 1 << 20}
    assert updated["record_count"] == 2
    updated = json.loads(
        ok(
            cli(
                cli_cluster,
                "stream",
                "update",
                name,
                "--max-age",
                "7d",
                "--max-bytes",
                "none",
                "-o",
                "json",
            )
        )
    )
    assert updated["retention"] == {"max_age_ms": 7 * 86_400_000, "max_records": 2, "max_bytes": 0}
    assert [line.split("\t")[1] for line in ok(cli(cli_cluster, "get", name)).splitlines()] == [
        "b",
        "c",
    ]
    assert cli(cli_cluster, "stream", "update", name).exit_code == 2
    missing = cli(cli_cluster, "stream", "update", fresh("missing"), "--max-age", "1h")
    assert missing.exit_code == 1 and "does not exist" in missing.stderr


def test_stream_create_of_only_dots_is_refused(cli_cluster: LocalCluster) -> None:
    result = cli(cli_cluster, "stream", "create", "..")
    assert result.exit_code == 1
    assert "dots only" in result.stderr
    listed = json.loads(ok(cli(cli_cluster, "stream", "list", "-o", "json")))
    assert ".." not in [s["name"] for s in listed]


# ------------------------------------------------------------------ losing quorum


def railyard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RAILYARD, *args], capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S
    )


def test_no_quorum_is_said_status_exits_3_and_stale_reads_still_work(tmp_path: Path) -> None:
    with LocalCluster(tmp_path, n=5, name="quorum") as cluster:
        cluster.wait_for_leader()
        config = str(cluster.config_path)
        assert railyard("put", "s", "kept", "-c", config).returncode == 0
        cluster.wait_converged()
        for node_id in ("n3", "n4", "n5"):
            cluster.kill(node_id)

        put = railyard("put", "s", "lost", "-c", config)
        assert put.returncode == 1, put.stderr
        assert put.stderr.strip().splitlines() == [
            "error: no quorum: 2 of 5 nodes reachable (n1, n2); "
            "writes and linearizable reads need 3"
        ]

        status = railyard("status", "-c", config)
        assert status.returncode == 3, status.stderr
        assert "leader none" in status.stdout

        stale = railyard("get", "s", "--stale", "--endpoints", cluster.addresses["n1"])
        assert stale.returncode == 0, stale.stderr
        assert stale.stdout == "1\tkept\n"
        assert "may be behind" in stale.stderr


def test_status_of_one_follower_names_the_leader_in_the_header(cli_cluster: LocalCluster) -> None:
    leader = cli_cluster.wait_for_leader()
    follower = next(n for n in cli_cluster.node_ids if n != leader)
    result = CliRunner().invoke(app, ["status", "--endpoints", cli_cluster.addresses[follower]])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith(f"cluster cli: leader {leader},")


def test_status_says_since_when_the_leader_leads(cli_cluster: LocalCluster) -> None:
    leader = cli_cluster.wait_for_leader()
    statuses = cli_cluster.statuses()
    now_ms = time.time() * 1000
    leader_status = statuses[leader]
    assert leader_status is not None
    uptime_ms = leader_status.uptime_ms
    # It became leader after it started, and before now.
    assert now_ms - uptime_ms - 1000 <= leader_status.leader_since_ms <= now_ms
    for node_id, status in statuses.items():
        if node_id != leader:
            assert status is not None and status.leader_since_ms == 0


# ------------------------------------------------------------------ the supervisor


def test_supervisor_names_the_signal_and_the_restart_command(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, name="sup")  # writes the file; the supervisor starts nodes
    log_path = tmp_path / "supervisor.log"
    with log_path.open("wb") as log:
        supervisor = subprocess.Popen(
            [*RAILYARD, "node", "start", "-c", str(cluster.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            cwd=tmp_path,
        )
    try:
        cluster.wait_for_leader(timeout_s=30)
        pids = dict(re.findall(r"started (n\d) \(pid (\d+)\)", log_path.read_text()))
        os.kill(int(pids["n2"]), signal.SIGKILL)
        expected = (
            "n2 killed by SIGKILL; the other nodes keep running (Ctrl-C stops them); "
            f"to start it again: railyard node start -c {cluster.config_path.name} --id n2"
        )
        deadline = time.monotonic() + SUBPROCESS_TIMEOUT_S
        while expected not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert expected in log_path.read_text(), log_path.read_text()[-2000:]
        assert "code -9" not in log_path.read_text()
        supervisor.send_signal(signal.SIGINT)
        assert supervisor.wait(timeout=SUBPROCESS_TIMEOUT_S) == 0
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait(timeout=SUBPROCESS_TIMEOUT_S)


# ------------------------------------------------------------------ a node's start


def test_a_busy_port_is_one_line_and_creates_no_data_directory(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, name="busy")  # writes the file only
    host, port = cluster.addresses["n1"].rsplit(":", 1)
    with socket.socket() as squatter:
        squatter.bind((host, int(port)))
        squatter.listen()
        done = railyard("node", "start", "-c", str(cluster.config_path), "--id", "n1")
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert f"cannot listen on {cluster.addresses['n1']} (" in lines[0]
    assert "is the port in use?" in lines[0]
    assert not cluster.data_dir("n1").exists()


def test_a_node_started_on_an_empty_directory_says_so(tmp_path: Path) -> None:
    with LocalCluster(tmp_path, name="empty") as cluster:
        leader = cluster.wait_for_leader()
        # Over gRPC: the message under test is the node's, not the CLI's.
        for i in range(3):
            cluster.streams_stub(leader).PutRecord(
                pb.PutRecordRequest(stream="s", data=b"r%d" % i), timeout=SUBPROCESS_TIMEOUT_S
            )
        cluster.wait_converged()
        assert "empty data directory" not in cluster.logs()
        victim = next(n for n in cluster.node_ids if n != cluster.leader())
        cluster.stop_node(victim)
        shutil.rmtree(cluster.data_dir(victim))
        cluster.start_node(victim)
        cluster.wait_ready(victim)
        expected = (
            f"{victim}: empty data directory {cluster.data_dir(victim)}; "
            "catching up from the leader"
        )
        deadline = time.monotonic() + SUBPROCESS_TIMEOUT_S
        while expected not in cluster.log(victim) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cluster.log(victim).count(expected) == 1, cluster.log(victim)[-2000:]


# ------------------------------------------------------------------ bench


def test_bench_interrupted_with_ctrl_c_prints_partial_results(cli_cluster: LocalCluster) -> None:
    stream = fresh("bench")
    bench = subprocess.Popen(
        [
            *RAILYARD,
            "bench",
            "put",
            "--duration",
            "60s",
            "--stream",
            stream,
            "-c",
            str(cli_cluster.config_path),
            "-o",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + SUBPROCESS_TIMEOUT_S
        while time.monotonic() < deadline:  # until puts are under way
            described = cli(cli_cluster, "stream", "describe", stream, "-o", "json")
            if described.exit_code == 0 and json.loads(described.stdout)["record_count"] > 0:
                break
            time.sleep(0.1)
        bench.send_signal(signal.SIGINT)
        out, err = bench.communicate(timeout=SUBPROCESS_TIMEOUT_S)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait(timeout=SUBPROCESS_TIMEOUT_S)
    assert bench.returncode == 0, err
    result = json.loads(out)
    assert result["partial"] is True
    assert result["records"] > 0
    assert result["duration_s"] < 30
    assert "partial" in err and "Traceback" not in err


# ------------------------------------------------------------------ get --follow


def wait_for(path: Path, expected: str, timeout_s: float = SUBPROCESS_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while expected not in path.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert expected in path.read_text(), path.read_text()[-2000:]


def test_get_follow_outlives_a_cluster_restart(tmp_path: Path) -> None:
    with LocalCluster(tmp_path, name="restart") as cluster:
        cluster.wait_for_leader()
        config = str(cluster.config_path)
        assert railyard("put", "s", "before", "-c", config).returncode == 0
        out_path, err_path = tmp_path / "follow.out", tmp_path / "follow.err"
        with out_path.open("w") as out, err_path.open("w") as err:
            follower = subprocess.Popen(
                [*RAILYARD, "get", "s", "--follow", "-c", config], stdout=out, stderr=err
            )
        try:
            wait_for(out_path, "1\tbefore\n")
            cluster.stop()  # every node at once
            wait_for(err_path, "note: the cluster is unavailable")
            assert follower.poll() is None, err_path.read_text()
            cluster.start()
            cluster.wait_for_leader()
            assert railyard("put", "s", "after", "-c", config).returncode == 0
            wait_for(out_path, "1\tbefore\n2\tafter\n")
            assert out_path.read_text() == "1\tbefore\n2\tafter\n"
            notes = err_path.read_text().splitlines()
            # A cluster that flaps while it comes back (a node answers, then
            # an election) may be reported down and back more than once.
            assert len(notes) >= 2 and len(notes) % 2 == 0, notes
            assert all("unavailable" in n for n in notes[::2]), notes
            assert all("resuming at sequence" in n for n in notes[1::2]), notes
            assert any("resuming at sequence 2" in n for n in notes[1::2]), notes
        finally:
            follower.send_signal(signal.SIGINT)
            try:
                follower.wait(timeout=SUBPROCESS_TIMEOUT_S)
            finally:
                if follower.poll() is None:
                    follower.kill()
                    follower.wait(timeout=SUBPROCESS_TIMEOUT_S)


# ------------------------------------------------------------------ stream delete


def run_on_a_terminal(args: list[str], answer: bytes) -> tuple[int, str]:
    """Run `args` with stdin, stdout and stderr on a pseudo-terminal; type `answer`."""
    main, child = pty.openpty()
    proc = subprocess.Popen(args, stdin=child, stdout=child, stderr=child)
    os.close(child)
    seen = b""
    try:
        deadline = time.monotonic() + SUBPROCESS_TIMEOUT_S
        while b"?" not in seen and proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.1)
            if ready:
                with contextlib.suppress(OSError):  # EIO: the child closed its side
                    seen += os.read(main, 4096)
        if answer:
            os.write(main, answer)
        code = proc.wait(timeout=SUBPROCESS_TIMEOUT_S)
        with contextlib.suppress(OSError):
            while select.select([main], [], [], 0.1)[0]:
                chunk = os.read(main, 4096)
                if not chunk:
                    break
                seen += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=SUBPROCESS_TIMEOUT_S)
        os.close(main)
    return code, seen.decode(errors="replace")


def test_stream_delete_asks_on_a_terminal_unless_yes(cli_cluster: LocalCluster) -> None:
    name = fresh("delete")
    ok(cli(cli_cluster, "put", name, "x"))
    command = [*RAILYARD, "stream", "delete", name, "-c", str(cli_cluster.config_path)]
    code, text = run_on_a_terminal(command, b"n\n")
    assert code == 1, text
    assert f"Delete stream '{name}' and all its records?" in text
    ok(cli(cli_cluster, "stream", "describe", name))  # still there
    code, text = run_on_a_terminal(command, b"y\n")
    assert code == 0, text
    assert cli(cli_cluster, "stream", "describe", name).exit_code == 1
    ok(cli(cli_cluster, "put", name, "x"))
    code, text = run_on_a_terminal([*command, "--yes"], b"")
    assert code == 0 and "?" not in text, text


def test_status_header_does_not_name_a_leader_that_did_not_answer() -> None:
    config = default_config()
    target = Target(config.endpoints, config)
    follower = pb.NodeStatus(node_id="n1", role=pb.ROLE_FOLLOWER, term=4, leader_id="n3")
    statuses = [(config.endpoints[0], follower), (config.endpoints[1], None)]
    assert status_json(target, [*statuses, (config.endpoints[2], None)])["leader"] is None
    leader_up = pb.NodeStatus(node_id="n3", role=pb.ROLE_FOLLOWER, term=4, leader_id="n3")
    assert status_json(target, [*statuses, (config.endpoints[2], leader_up)])["leader"] == "n3"
