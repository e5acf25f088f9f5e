"""A healthy 3-node cluster of real processes: writes, reads, status, transfer, refusals."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from railyard.node.peers import tcp
from railyard.node.peers.codec import envelope
from railyard.proto import commands_pb2 as cmd
from railyard.proto import railyard_pb2 as pb
from tests.cluster.helpers import (
    CALL_TIMEOUT_S,
    create_stream,
    put_exactly_once,
    read_all,
    with_retries,
)
from tests.support.cluster import LocalCluster, node_command

pytestmark = pytest.mark.timeout(60)


# One cluster for the tests that take `cluster`: none stops a node or leaves
# it without a leader, each uses streams of its own and checks what changed
# during it, so a cluster per test only cost its start.
@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    running = LocalCluster(tmp_path_factory.mktemp("basic"))
    try:
        running.start()
        yield running
    finally:
        running.stop()


def test_writes_through_any_node_reach_every_node(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    start = cluster.status(leader)
    assert start is not None
    followers = [n for n in cluster.node_ids if n != leader]
    info = create_stream(cluster, followers[0], "orders")
    assert info.name == "orders"

    sequences = []
    for i in range(30):
        # Round-robin over the nodes: followers forward to the leader.
        nodes = cluster.node_ids[i % 3 :] + cluster.node_ids[: i % 3]
        sequences.append(
            put_exactly_once(cluster, "orders", b"order-%d" % i, "writer", i + 1, among=nodes)
        )
    batch_request = pb.PutRecordsRequest(
        stream="orders",
        records=[cmd.Record(data=b"batch-%d" % i) for i in range(5)],
        producer_id="writer",
        producer_sequence=31,
    )
    batch = with_retries(
        cluster,
        lambda node: cluster.streams_stub(node).PutRecords(batch_request, timeout=CALL_TIMEOUT_S),
        among=[followers[1], *cluster.node_ids],
    )
    assert sequences == list(range(1, 31))
    assert list(batch.sequences) == list(range(31, 36))

    expected = [b"order-%d" % i for i in range(30)] + [b"batch-%d" % i for i in range(5)]
    # Linearizable reads on every node, followers included (ReadIndex).
    for node in cluster.node_ids:
        assert read_all(cluster, node, "orders", stale=False) == expected
    # create + 30 puts + 1 batch = 32 entries
    statuses = cluster.wait_converged(min_applied=start.last_log_index + 32)
    assert {s.last_log_index for s in statuses.values()} == {statuses[leader].commit_index}
    described = cluster.streams_stub(followers[0]).DescribeStream(
        pb.DescribeStreamRequest(name="orders"), timeout=CALL_TIMEOUT_S
    )
    assert described.stream.record_count == 35


def test_a_cluster_without_peer_addresses_replicates_over_grpc(tmp_path: Path) -> None:
    """Cluster files without `peer_address` (written before it existed) keep working."""
    cluster = LocalCluster(tmp_path, peer_tcp=False)
    try:
        cluster.start()
        assert "peer_address" not in cluster.config_path.read_text()
        leader = cluster.wait_for_leader()
        create_stream(cluster, leader, "old")
        for i in range(5):
            put_exactly_once(cluster, "old", b"r%d" % i, "writer", i + 1)
        cluster.wait_converged(min_applied=7)  # noop + create + 5 puts
        for node in cluster.node_ids:
            assert read_all(cluster, node, "old", stale=True) == [b"r%d" % i for i in range(5)]
        assert "(tcp)" not in "".join(cluster.log(n) for n in cluster.node_ids)
    finally:
        cluster.stop()


def test_errors_map_to_status_codes(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    follower = next(n for n in cluster.node_ids if n != leader)
    stub = cluster.streams_stub(follower)
    before = stub.ListStreams(pb.ListStreamsRequest(), timeout=CALL_TIMEOUT_S)
    with pytest.raises(grpc.RpcError) as bad_name:
        stub.PutRecord(pb.PutRecordRequest(stream="no spaces!", data=b"x"), timeout=CALL_TIMEOUT_S)
    assert bad_name.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "stream" in (bad_name.value.details() or "")
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetRecords(
            pb.GetRecordsRequest(stream="nope", from_sequence=1), timeout=CALL_TIMEOUT_S
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as too_large:
        stub.PutRecord(
            pb.PutRecordRequest(stream="s", data=b"x" * ((1 << 20) + 1)), timeout=CALL_TIMEOUT_S
        )
    assert too_large.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Nothing was created by the refused requests.
    listed = stub.ListStreams(pb.ListStreamsRequest(), timeout=CALL_TIMEOUT_S)
    assert [s.name for s in listed.streams] == [s.name for s in before.streams]
    assert not {"nope", "s"} & {s.name for s in listed.streams}


def test_status_health_and_read_log(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    cluster.streams_stub(leader).PutRecord(
        pb.PutRecordRequest(stream="auto", data=b"hello"), timeout=CALL_TIMEOUT_S
    )
    status = cluster.status(leader)
    assert status is not None
    assert status.role == pb.ROLE_LEADER and status.cluster == "test"
    assert {p.node_id for p in status.peers} == set(cluster.node_ids) - {leader}
    listed = cluster.streams_stub(leader).ListStreams(
        pb.ListStreamsRequest(), timeout=CALL_TIMEOUT_S
    )
    assert "auto" in [s.name for s in status.streams]
    assert [s.name for s in status.streams] == [s.name for s in listed.streams]
    health = health_pb2_grpc.HealthStub(cluster.channel(leader))
    answer = health.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(cluster.channel(leader))
    replies = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=CALL_TIMEOUT_S
    )
    services = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {"railyard.v1.Streams", "railyard.v1.Cluster"} <= services
    assert "railyard.v1.Raft" not in services  # served on the peer port only
    # The whole log (the first leader's noop included; other tests wrote since).
    entries = (
        cluster.cluster_stub(leader)
        .ReadLog(pb.ReadLogRequest(count=status.last_log_index), timeout=2)
        .entries
    )
    kinds = [e.kind for e in entries]
    assert "noop" in kinds and kinds[-1] == "append"
    assert entries[-1].stream == "auto" and entries[-1].records == 1 and entries[-1].committed
    watched = cluster.cluster_stub(leader).WatchStatus(
        pb.WatchStatusRequest(interval_ms=50), timeout=2
    )
    statuses = cast(Iterator[pb.NodeStatus], watched)
    first_two = [next(statuses), next(statuses)]
    watched.cancel()  # type: ignore[no-untyped-call]
    assert all(s.node_id == leader for s in first_two)


def test_transfer_leadership_to_a_named_node(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    target = next(n for n in cluster.node_ids if n != leader)
    asked = next(n for n in cluster.node_ids if n not in (leader, target)) or leader
    response = cluster.cluster_stub(asked).TransferLeadership(
        pb.TransferLeadershipRequest(to=target), timeout=10
    )
    assert (response.previous_leader, response.leader) == (leader, target)
    assert cluster.wait_for_leader() == target
    # The cluster still commits under the new leader.
    put = cluster.streams_stub(leader).PutRecord(
        pb.PutRecordRequest(stream="after", data=b"x"), timeout=CALL_TIMEOUT_S
    )
    assert put.sequence == 1


def test_peer_from_another_cluster_is_refused(cluster: LocalCluster) -> None:
    # On the peer port: with a peer_address the client address serves no Raft.
    host, port = cluster.peer_addresses["n1"].rsplit(":", 1)
    heartbeat = pb.RaftMessage(type=pb.MESSAGE_TYPE_HEARTBEAT, to="n1", sender="n2", term=99)
    logged = len(cluster.log("n1"))
    for peer in (pb.Peer(cluster="other", node_id="n2"), pb.Peer(cluster="test", node_id="n9")):
        frame = tcp.frame(envelope(peer, [heartbeat]).SerializeToString())
        with socket.create_connection((host, int(port)), timeout=CALL_TIMEOUT_S) as s:
            s.sendall(tcp.PREAMBLE + frame)
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
        assert b"refuses" in answer, answer
    assert "refused peer 'n2' of cluster 'other'" in cluster.log("n1")[logged:]
    status = cluster.status("n1")
    assert status is not None and status.term < 99  # the message never reached the core


def test_node_of_another_cluster_cannot_disturb_it(cluster: LocalCluster, tmp_path: Path) -> None:
    leader = cluster.wait_for_leader()
    term = cluster.status(leader).term  # type: ignore[union-attr]
    logged = {peer: len(cluster.log(peer)) for peer in ("n2", "n3")}
    # A node "n1" of cluster "other" whose peers are our n2 and n3.
    foreign = LocalCluster(tmp_path / "other", name="other")
    for peer in ("n2", "n3"):
        foreign.addresses[peer] = cluster.addresses[peer]
        foreign.peer_addresses[peer] = cluster.peer_addresses[peer]
    foreign.write_config()
    try:
        foreign.start_node("n1")
        foreign.wait_ready("n1")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "refuses us" not in foreign.log("n1"):
            time.sleep(0.1)
        assert "refuses us" in foreign.log("n1")
        assert "of cluster 'other'" in "".join(cluster.log(p)[logged[p] :] for p in logged)
        assert cluster.wait_for_leader() == leader
        assert cluster.status(leader).term == term  # type: ignore[union-attr]
    finally:
        foreign.stop()


# A node that refuses to start exits within a second or two; generous bound.
EXIT_TIMEOUT_S = 30


def _run_to_exit(command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a node expected to refuse to start; its exit status and output."""
    return subprocess.run(
        command, capture_output=True, text=True, timeout=EXIT_TIMEOUT_S, stdin=subprocess.DEVNULL
    )


def test_second_node_on_one_data_directory_exits(cluster: LocalCluster, tmp_path: Path) -> None:
    result = _run_to_exit(node_command(cluster.config_path, "n1"))
    assert result.returncode != 0
    assert "locked by process" in result.stderr
    assert "Traceback" not in result.stderr
    assert cluster.status("n1") is not None  # the first one is unharmed


@pytest.mark.parametrize("taken", ["address", "peer_address"])
def test_a_taken_port_is_named_and_the_node_exits(tmp_path: Path, taken: str) -> None:
    c = LocalCluster(tmp_path)  # never started: only its file is used
    address = c.addresses["n1"] if taken == "address" else c.peer_addresses["n1"]
    host, port = address.rsplit(":", 1)
    with socket.socket() as squatter:
        squatter.bind((host, int(port)))
        squatter.listen()
        result = _run_to_exit(node_command(c.config_path, "n1"))
    assert result.returncode != 0
    where = "peer_address " if taken == "peer_address" else ""
    assert f"cannot listen on {where}{address}" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_node_id_exits(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path)  # never started: only its file is used
    result = _run_to_exit(
        [sys.executable, "-m", "railyard.node", "-c", str(c.config_path), "--id", "n9"]
    )
    assert result.returncode != 0
    assert "n9" in result.stderr and "n1, n2, n3" in result.stderr
