"""Real processes under faults: a leader killed mid-stream, a follower far behind, a partition."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import pytest

from railyard.proto import commands_pb2 as cmd
from railyard.proto import railyard_pb2 as pb
from tests.cluster.helpers import CALL_TIMEOUT_S, create_stream, put_exactly_once, read_all
from tests.support.cluster import LocalCluster

pytestmark = pytest.mark.timeout(120)


def test_leader_killed_during_puts_loses_and_duplicates_nothing(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    create_stream(cluster, leader, "events")
    total = 120
    acknowledged: list[int] = []
    killed = threading.Event()

    def kill_leader_mid_stream() -> None:
        deadline = time.monotonic() + 30
        while len(acknowledged) < 40 and time.monotonic() < deadline:
            time.sleep(0.005)
        cluster.kill(leader)  # SIGKILL, while puts are in flight
        killed.set()

    killer = threading.Thread(target=kill_leader_mid_stream)
    killer.start()
    try:
        for seq in range(1, total + 1):
            acknowledged.append(
                put_exactly_once(cluster, "events", b"e%d" % seq, "producer-1", seq)
            )
    finally:
        killer.join(30)
    assert killed.is_set()
    survivors = [n for n in cluster.node_ids if n != leader]
    new_leader = cluster.wait_for_leader(among=survivors)
    assert new_leader != leader

    expected = [b"e%d" % seq for seq in range(1, total + 1)]
    assert acknowledged == list(range(1, total + 1))
    cluster.wait_converged(among=survivors)
    for node in survivors:
        assert read_all(cluster, node, "events") == expected

    cluster.start_node(leader)  # the old leader comes back and catches up
    cluster.wait_ready(leader)
    cluster.wait_converged()
    assert read_all(cluster, leader, "events") == expected


# Under [tls] the snapshot travels on its own peer TCP connection, over TLS,
# every chunk's sender checked against the certificate.
@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "tls"])
def test_follower_restarted_after_compaction_catches_up_by_snapshot(
    tmp_path: Path, tls: bool
) -> None:
    c = LocalCluster(tmp_path, snapshot_every=30, tls=tls)
    try:
        c.start()
        leader = c.wait_for_leader()
        follower = next(n for n in c.node_ids if n != leader)
        create_stream(c, leader, "bulk")
        assert c.stop_node(follower) == 0  # a clean stop exits 0
        # Until the leader notices, appends it pipelines to the stopped follower
        # wait in its send queue and would bring the follower up to date without
        # a snapshot; wait until it only probes.
        wait_until_probing(c, leader, follower)
        stub = c.streams_stub(leader)
        for batch in range(100):  # 100 entries, 2,000 records: several snapshots
            stub.PutRecords(
                pb.PutRecordsRequest(
                    stream="bulk",
                    records=[cmd.Record(data=b"%d-%d" % (batch, i)) for i in range(20)],
                ),
                timeout=CALL_TIMEOUT_S,
            )
        status = c.status(leader)
        assert status is not None and status.snapshot_index > 0 and status.snapshots_taken > 0

        c.start_node(follower)
        c.wait_ready(follower)
        c.wait_converged(min_applied=102)
        follower_status = c.status(follower)
        assert follower_status is not None and follower_status.snapshots_installed >= 1
        assert "installed snapshot" in c.log(follower)
        records = read_all(c, follower, "bulk")
        assert len(records) == 2000
        assert records == read_all(c, leader, "bulk")
    finally:
        c.stop()


def wait_until_probing(c: LocalCluster, leader: str, follower: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = c.status(leader)
        peers = {p.node_id: p.state for p in status.peers} if status is not None else {}
        if peers.get(follower) == "probe":
            return
        time.sleep(0.05)
    raise AssertionError(f"{leader} still replicates to the stopped {follower}")


def test_partitioned_leader_steps_down_and_its_uncommitted_entry_is_discarded(
    tmp_path: Path,
) -> None:
    c = LocalCluster(tmp_path, proxy=True)
    try:
        c.start()
        assert c.proxy is not None
        old = c.wait_for_leader()
        others = [n for n in c.node_ids if n != old]
        for i in range(5):
            put_exactly_once(c, "p", b"before-%d" % i, "producer-p", i + 1)

        c.proxy.isolate(old)
        # The old leader appends this to its log but can never commit it.
        with pytest.raises(grpc.RpcError) as lost:
            c.streams_stub(old).PutRecord(
                pb.PutRecordRequest(stream="p", data=b"lost"), timeout=1.5
            )
        assert lost.value.code() in (
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.UNAVAILABLE,
        )
        new = c.wait_for_leader(among=others, timeout_s=15)
        assert new != old
        for i in range(5):
            put_exactly_once(c, "p", b"after-%d" % i, "producer-q", i + 1, among=others)
        # CheckQuorum: the isolated leader notices it lost its majority.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status = c.status(old)
            if status is not None and status.role != pb.ROLE_LEADER:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"{old} still believes it leads:\n{c.log(old)[-3000:]}")

        c.proxy.heal()
        c.wait_converged(timeout_s=20)
        expected = [b"before-%d" % i for i in range(5)] + [b"after-%d" % i for i in range(5)]
        for node in c.node_ids:
            assert read_all(c, node, "p") == expected
    finally:
        c.stop()


def test_whole_cluster_restart_keeps_every_record(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, snapshot_every=15)
    try:
        c.start()
        leader = c.wait_for_leader()
        create_stream(c, leader, "kept")
        for seq in range(1, 41):
            put_exactly_once(c, "kept", b"k%d" % seq, "producer-k", seq)
        before = c.wait_converged(min_applied=42)
        for node in c.node_ids:
            assert c.stop_node(node) == 0
        c.start()  # from disk: snapshot, then the log after it
        c.wait_for_leader()
        after = c.wait_converged(min_applied=before[leader].commit_index)
        assert all(s.snapshot_index > 0 for s in after.values())
        expected = [b"k%d" % seq for seq in range(1, 41)]
        for node in c.node_ids:
            assert read_all(c, node, "kept", stale=False) == expected
        # A retry of an acknowledged put is still recognised after the restart.
        assert put_exactly_once(c, "kept", b"k40", "producer-k", 40) == 40
        assert len(read_all(c, leader, "kept")) == 40
    finally:
        c.stop()
