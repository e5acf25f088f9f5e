"""Forged peer frames on a plaintext loopback cluster (issue 14's attack list).

Without TLS anyone who reaches a peer port can claim to be a member, so
these replay what a forger (or a buggy peer) sent and check what the
robustness rules still guarantee: an absurd term is refused and never
persisted (the node keeps running and restarts), and TIMEOUT_NOW frames
from anyone but the leader move no leadership. A forged append at the
current term claiming to be the real leader cannot be told from the leader
without TLS; the rules only keep its numbers sane (`raft/bounds.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from railyard.node.peers import tcp
from railyard.proto import railyard_pb2 as pb
from tests.support.cluster import LocalCluster

CLUSTER = "forged"
SOCKET_TIMEOUT_S = 0.5
STATUS_DEADLINE_S = 10.0
REFUSAL_TIMEOUT_S = 10.0


# One cluster for the module: every test leaves it with a leader and all three
# nodes running (a node a test restarts is waited for), and each test checks
# only what changed during it, so starting a cluster per test bought nothing.
@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    running = LocalCluster(tmp_path_factory.mktemp("forged"), name=CLUSTER)
    try:
        running.start()
        running.wait_for_leader(timeout_s=30)
        yield running
    finally:
        running.stop()


def send_frames(cluster: LocalCluster, target: str, sender: str, *messages: pb.RaftMessage) -> None:
    """Frames as a member would send them on the peer port, then half-close."""
    envelope = pb.RaftEnvelope(
        messages=list(messages), **{"from": pb.Peer(cluster=CLUSTER, node_id=sender)}
    )
    host, port = cluster.peer_addresses[target].rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=SOCKET_TIMEOUT_S) as s,
        contextlib.suppress(OSError),
    ):
        s.sendall(tcp.PREAMBLE + tcp.frame(envelope.SerializeToString()))
        s.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + SOCKET_TIMEOUT_S
        while time.monotonic() < deadline and s.recv(4096):
            pass


def status(cluster: LocalCluster, node: str) -> pb.NodeStatus:
    deadline = time.monotonic() + STATUS_DEADLINE_S
    while time.monotonic() < deadline:
        assert cluster.pid(node) is not None, f"{node} died:\n{cluster.log(node)[-3000:]}"
        found = cluster.status(node)
        if found is not None:
            return found
    raise AssertionError(f"{node} stopped answering Status")


@pytest.mark.parametrize("term", [(1 << 63) - 1, (1 << 64) - 1])
def test_a_vote_request_at_an_absurd_term_is_refused_and_never_persisted(
    cluster: LocalCluster, term: int
) -> None:
    leader = cluster.wait_for_leader(timeout_s=30)
    before = {node: status(cluster, node).term for node in cluster.node_ids}
    logged = {node: len(cluster.log(node)) for node in cluster.node_ids}
    for target in cluster.node_ids:
        forger = next(n for n in cluster.node_ids if n != target)
        vote = pb.RaftMessage(
            type=pb.MESSAGE_TYPE_VOTE, to=target, sender=forger, term=term, context=1
        )
        send_frames(cluster, target, forger, vote)
    # Each node has handled its forged request once it logs the refusal.
    deadline = time.monotonic() + REFUSAL_TIMEOUT_S
    while time.monotonic() < deadline and not all(
        "refused vote from" in cluster.log(node)[logged[node] :] for node in cluster.node_ids
    ):
        time.sleep(0.05)
    for node in cluster.node_ids:
        assert "refused vote from" in cluster.log(node)[logged[node] :]
        assert status(cluster, node).term == before[node]
    target = next(n for n in cluster.node_ids if n != leader)
    cluster.stop_node(target)
    cluster.start_node(target)
    cluster.wait_ready(target)
    assert status(cluster, target).term < 1 << 53


def test_forged_timeout_now_frames_move_no_leadership(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader(timeout_s=30)
    term = status(cluster, leader).term
    followers = [n for n in cluster.node_ids if n != leader]
    deadline = time.monotonic() + 5.0
    sent = 0
    while time.monotonic() < deadline and sent < 40:
        target = followers[sent % 2]
        other = followers[(sent + 1) % 2]
        # From the other follower at the current term, and "from the leader" a term ahead.
        send_frames(
            cluster,
            target,
            other,
            pb.RaftMessage(type=pb.MESSAGE_TYPE_TIMEOUT_NOW, to=target, sender=other, term=term),
        )
        send_frames(
            cluster,
            target,
            leader,
            pb.RaftMessage(
                type=pb.MESSAGE_TYPE_TIMEOUT_NOW, to=target, sender=leader, term=term + 1
            ),
        )
        sent += 1
    time.sleep(1.0)
    assert cluster.wait_for_leader(timeout_s=10) == leader
    assert status(cluster, leader).term == term


def test_a_garbage_snapshot_with_its_right_checksum_is_not_installed(
    cluster: LocalCluster,
) -> None:
    """From the real leader's id at the current term, ahead of the follower's log:
    before validation it was installed and the node could not restart."""
    leader = cluster.wait_for_leader(timeout_s=30)
    target = next(n for n in cluster.node_ids if n != leader)
    before = status(cluster, target)
    data = os.urandom(256 << 10)
    message = pb.RaftMessage(
        type=pb.MESSAGE_TYPE_SNAPSHOT,
        to=target,
        sender=leader,
        term=before.term,
        snapshot=pb.SnapshotMeta(
            index=before.commit_index + 1000, term=before.term, voters=list(cluster.node_ids)
        ),
    )
    chunk = pb.SnapshotChunk(
        message=message,
        data=data,
        checksum=hashlib.sha256(data).hexdigest(),
        last=True,
        **{"from": pb.Peer(cluster=CLUSTER, node_id=leader)},
    )

    async def one_chunk() -> AsyncIterator[bytes]:
        yield chunk.SerializeToString()

    async def install() -> None:
        async with asyncio.timeout(10):
            await tcp.send_snapshot(cluster.peer_addresses[target], one_chunk(), proxy=None)

    # On the peer port: the client address serves no Raft with a peer_address.
    with pytest.raises(tcp.PeerRefused) as refused:
        asyncio.run(install())
    assert "SQLite" in str(refused.value)
    after = status(cluster, target)
    assert after.snapshot_index == before.snapshot_index
    assert after.snapshots_installed == before.snapshots_installed
    cluster.stop_node(target)
    cluster.start_node(target)
    cluster.wait_ready(target)
    assert status(cluster, target).commit_index >= before.commit_index
