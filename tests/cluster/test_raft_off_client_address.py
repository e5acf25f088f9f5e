"""The gRPC Raft service is not served on the client address of a node with a
peer_address (issue 14): a forged AppendEntries there once moved leadership.

Peers reach such a node on its peer port only (`peers/tcp.py`), snapshots
included; nodes without a peer_address still take Raft over gRPC Pipe
(`tests/cluster/test_basic.py` runs one).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from railyard.proto import railyard_pb2 as pb
from railyard.proto import railyard_pb2_grpc as pb_grpc
from tests.support.cluster import LocalCluster

CLUSTER = "portonly"
CALL_TIMEOUT_S = 5.0
FORGED_TERM_AHEAD = 5


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    running = LocalCluster(tmp_path, name=CLUSTER)
    try:
        running.start()
        running.wait_for_leader(timeout_s=30)
        yield running
    finally:
        running.stop()


def test_raft_calls_on_the_client_address_are_unimplemented_and_change_nothing(
    cluster: LocalCluster,
) -> None:
    leader = cluster.wait_for_leader(timeout_s=30)
    target = next(n for n in cluster.node_ids if n != leader)
    before = cluster.status(target)
    assert before is not None
    forged = pb.RaftMessage(
        type=pb.MESSAGE_TYPE_APPEND,
        to=target,
        sender=leader,
        term=before.term + FORGED_TERM_AHEAD,
        prev_log_index=before.last_log_index,
        leader_commit=before.commit_index,
        entries=[pb.Entry(term=before.term + FORGED_TERM_AHEAD, index=before.last_log_index + 1)],
    )
    request = pb.RaftEnvelope(
        messages=[forged], **{"from": pb.Peer(cluster=CLUSTER, node_id=leader)}
    )
    stub = pb_grpc.RaftStub(cluster.channel(target))
    for call in (stub.AppendEntries, stub.RequestVote, stub.TimeoutNow):
        with pytest.raises(grpc.RpcError) as refused:
            call(request, timeout=CALL_TIMEOUT_S)
        assert refused.value.code() is grpc.StatusCode.UNIMPLEMENTED
    chunk = pb.SnapshotChunk(last=True, **{"from": pb.Peer(cluster=CLUSTER, node_id=leader)})
    with pytest.raises(grpc.RpcError) as refused:
        stub.InstallSnapshot(iter([chunk]), timeout=CALL_TIMEOUT_S)
    assert refused.value.code() is grpc.StatusCode.UNIMPLEMENTED
    time.sleep(1.0)
    after = cluster.status(target)
    assert after is not None
    assert after.term < before.term + FORGED_TERM_AHEAD
    assert cluster.wait_for_leader(timeout_s=10) == leader
    # The peers themselves still replicate (over the peer port): a put commits everywhere.
    cluster.streams_stub(leader).PutRecord(
        pb.PutRecordRequest(stream="after", data=b"x"), timeout=CALL_TIMEOUT_S
    )
    cluster.wait_converged(min_applied=after.applied_index + 1)
