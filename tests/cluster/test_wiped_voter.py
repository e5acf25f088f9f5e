"""A wiped follower does not elect, with a lagging node, a leader that lacks acknowledged records.

Real node processes: records are acknowledged by the leader and one follower
while the third node is stopped; the follower's data directory is then
deleted and the leader stopped. The wiped node and the lagging node are a
majority; without the core's catch-up rule (`railyard.raft.election`) the
wiped node would vote for the lagging one, which would lead without the
acknowledged records. With it, no leader is elected until the old leader
returns, and then every node holds every acknowledged record.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from railyard.node.driver.catch_up import marker_path
from railyard.proto import railyard_pb2 as pb
from tests.support.cluster import LocalCluster

STREAM = "s"
RPC_TIMEOUT_S = 5.0
CONVERGE_TIMEOUT_S = 20.0
# Records everyone holds, then records the lagging node never got.
SHARED_RECORDS = 5
ACKED_WHILE_LAGGING = 5
# How long the wiped and the lagging node are watched for an election:
# six election timeouts (500 ms) and more, enough for several campaigns.
WATCH_S = 4.0
POLL_S = 0.1
EMPTY_STORE_LOG = "empty store: no vote for a candidate with a log"


def _put(cluster: LocalCluster, leader: str, label: str, count: int) -> list[bytes]:
    stub = cluster.streams_stub(leader)
    datas = [f"{label}-{number}".encode() for number in range(count)]
    for data in datas:
        stub.PutRecord(pb.PutRecordRequest(stream=STREAM, data=data), timeout=RPC_TIMEOUT_S)
    return datas


def _records(cluster: LocalCluster, node: str) -> list[bytes]:
    response = cluster.streams_stub(node).GetRecords(
        pb.GetRecordsRequest(stream=STREAM, from_sequence=1, stale=True), timeout=RPC_TIMEOUT_S
    )
    return [record.data for record in response.records]


def _wait_caught_up_durably(cluster: LocalCluster) -> None:
    """Until no node still counts as catching up across a restart (bounded).

    Every node started empty; one stopped before its catch-up marker went
    would, rightly, still refuse votes after a restart, and this test is
    about the one node whose disk is wiped.
    """
    deadline = time.monotonic() + CONVERGE_TIMEOUT_S
    while any(marker_path(cluster.data_dir(n)).exists() for n in cluster.node_ids):
        assert time.monotonic() < deadline, "a node is still catching up"
        time.sleep(POLL_S)


def _leaders_seen(cluster: LocalCluster, nodes: list[str], seconds: float) -> list[str]:
    """Every (node, term) that reported being leader during `seconds` (bounded poll)."""
    seen: set[str] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for node in nodes:
            status = cluster.status(node)
            if status is not None and status.role == pb.ROLE_LEADER:
                seen.add(f"{node}@{status.term} (last index {status.last_log_index})")
        time.sleep(POLL_S)
    return sorted(seen)


def test_wiped_follower_and_lagging_node_elect_no_leader_without_acked_records(
    tmp_path: Path,
) -> None:
    cluster = LocalCluster(tmp_path)
    try:
        cluster.start()
        leader = cluster.wait_for_leader()
        cluster.streams_stub(leader).CreateStream(
            pb.CreateStreamRequest(name=STREAM), timeout=RPC_TIMEOUT_S
        )
        acked = _put(cluster, leader, "shared", SHARED_RECORDS)
        cluster.wait_converged(timeout_s=CONVERGE_TIMEOUT_S)
        _wait_caught_up_durably(cluster)
        wiped, lagging = (n for n in cluster.node_ids if n != leader)
        cluster.stop_node(lagging)
        acked += _put(cluster, leader, "acked", ACKED_WHILE_LAGGING)
        cluster.stop_node(wiped)
        shutil.rmtree(cluster.data_dir(wiped))
        cluster.stop_node(leader)

        cluster.start_node(wiped)
        cluster.start_node(lagging)
        cluster.wait_ready(wiped)
        cluster.wait_ready(lagging)
        assert EMPTY_STORE_LOG in cluster.log(wiped)
        seen = _leaders_seen(cluster, [wiped, lagging], WATCH_S)
        assert not seen, f"elected while the only full copy was down: {seen}"

        cluster.start_node(leader)
        cluster.wait_ready(leader)
        new_leader = cluster.wait_for_leader(timeout_s=CONVERGE_TIMEOUT_S)
        acked += _put(cluster, new_leader, "after", 1)
        cluster.wait_converged(timeout_s=CONVERGE_TIMEOUT_S)
        for node in cluster.node_ids:
            assert _records(cluster, node) == acked, node
    finally:
        cluster.stop()
