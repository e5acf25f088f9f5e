"""`railyard member ...` and `node start --join` against a real cluster: the
answers to bad input (one line, exit 1, nothing changed) and idempotence."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from railyard.proto import railyard_pb2 as pb
from tests.support.cluster import HOST, LocalCluster, free_ports

CLI_TIMEOUT_S = 60.0


def cli(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "railyard", *args, "-c", str(cluster.config_path)],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )


def listing(cluster: LocalCluster) -> dict[str, object]:
    result = cli(cluster, "member", "list", "-o", "json")
    assert result.returncode == 0, result.stderr
    doc: dict[str, object] = json.loads(result.stdout)
    return doc


def refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 1 with one line on stderr that says `words`."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("member-cli"), name="members")
    try:
        c.start()
        c.wait_for_leader()
        yield c
    finally:
        c.stop()


def test_list_shows_the_file_configuration(cluster: LocalCluster) -> None:
    doc = listing(cluster)
    assert doc["config_index"] == 0
    members = doc["members"]
    assert isinstance(members, list)
    assert [(m["id"], m["role"], m["address"]) for m in members] == [
        (n, "voter", cluster.addresses[n]) for n in cluster.node_ids
    ]
    assert all(m["reachable"] and m["match_index"] > 0 for m in members)


def test_bad_input_is_refused_and_changes_nothing(cluster: LocalCluster) -> None:
    before = listing(cluster)
    port = free_ports(1)[0]
    refused(cli(cluster, "member", "promote", "n9"), "'n9' is not a member")
    refused(cli(cluster, "member", "promote", "n2"), "not a learner")
    refused(cli(cluster, "member", "add", "n9", "--address", "nohost"), "--address")
    refused(cli(cluster, "member", "add", "n9", "--address", "h:99999"), "--address")
    refused(
        cli(cluster, "member", "add", "n9", "--address", cluster.addresses["n2"]),
        "already used by 'n2'",
    )
    refused(
        cli(cluster, "member", "add", "n2", "--address", f"{HOST}:{port}"),
        "n2 is already a member",
    )
    refused(cli(cluster, "member", "add", "n9"), "--address", "not in the cluster file")
    assert listing(cluster) == before


def test_idempotent_requests_change_nothing(cluster: LocalCluster) -> None:
    before = listing(cluster)
    same = cli(cluster, "member", "add", "n2")  # its addresses from the file
    assert same.returncode == 0, same.stderr
    assert "nothing changed" in same.stdout
    gone = cli(cluster, "member", "remove", "n9", "-o", "json")
    assert gone.returncode == 0, gone.stderr
    assert json.loads(gone.stdout)["changed"] is False
    assert listing(cluster)["config_index"] == before["config_index"]


def test_a_stopped_learner_is_never_promoted(cluster: LocalCluster) -> None:
    port, peer_port = free_ports(2)
    address, peer_address = f"{HOST}:{port}", f"{HOST}:{peer_port}"
    add = ["member", "add", "n7", "--address", address, "--peer-address", peer_address]
    learner = cli(cluster, *add, "--learner")
    assert learner.returncode == 0, learner.stderr
    # n7 never runs: it cannot catch up, so it is not promoted.
    waited = cli(cluster, *add, "--wait", "1s")
    refused(waited, "n7 did not catch up", "stays a learner", "railyard member promote n7")
    refused(cli(cluster, "member", "promote", "n7"), "has not caught up")
    roles = {m["id"]: m["role"] for m in listing(cluster)["members"]}  # type: ignore[union-attr]
    assert roles["n7"] == "learner"
    removed = cli(cluster, "member", "remove", "n7")
    assert removed.returncode == 0, removed.stderr
    assert "n7" not in {m["id"] for m in listing(cluster)["members"]}  # type: ignore[union-attr]


def test_join_of_a_voter_with_data_elsewhere_is_refused(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    victim = next(n for n in cluster.node_ids if n != leader)
    cluster.stop_node(victim)
    saved = cluster.data_dir(victim).with_name(f"{victim}.saved")
    shutil.move(cluster.data_dir(victim), saved)
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "railyard",
                "node",
                "start",
                "-c",
                str(cluster.config_path),
                "--id",
                victim,
                "--join",
            ],
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
        )
        refused(result, f"cannot join: {victim} is already a voter", "member remove")
        assert not cluster.data_dir(victim).exists()
    finally:
        shutil.move(saved, cluster.data_dir(victim))
        cluster.start_node(victim)
        cluster.wait_ready(victim)


def test_removal_that_would_lose_the_live_quorum_needs_force(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    down, other = [n for n in cluster.node_ids if n != leader]
    cluster.kill(down, signal.SIGKILL)
    try:
        time.sleep(1.5)  # past an election timeout: the leader no longer counts it live
        # Removing the live follower leaves {leader, down}: one live of two.
        refused(cli(cluster, "member", "remove", other), "--force")
        assert other in {m["id"] for m in listing(cluster)["members"]}  # type: ignore[union-attr]
    finally:
        cluster.start_node(down)
        cluster.wait_ready(down)
        cluster.wait_for_leader()


def test_a_second_change_while_one_is_in_flight_is_refused(tmp_path: Path) -> None:
    # A long election timeout keeps the leader in place while its followers are
    # stopped, so its change stays uncommitted for a while.
    with LocalCluster(tmp_path, election_timeout_ms=4000, heartbeat_interval_ms=100) as cluster:
        leader = cluster.wait_for_leader(timeout_s=30)
        for node_id in cluster.node_ids:
            if node_id != leader:
                cluster.kill(node_id, signal.SIGKILL)
        port = free_ports(1)[0]
        first: dict[str, object] = {}

        def add_first() -> None:
            try:
                cluster.cluster_stub(leader).AddMember(
                    pb.AddMemberRequest(id="n8", address=f"{HOST}:{port}"), timeout=2.0
                )
            except grpc.RpcError as exc:
                first["code"] = exc.code()

        thread = threading.Thread(target=add_first)
        thread.start()
        time.sleep(0.5)
        second = cli(cluster, "member", "remove", leader, "--force")
        thread.join(timeout=10)
        refused(second, "cannot start now", "is not yet committed")
        assert first["code"] is grpc.StatusCode.DEADLINE_EXCEEDED
