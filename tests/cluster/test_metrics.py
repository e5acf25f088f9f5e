"""A real cluster's /metrics, /health, /ready, JSON log lines and Status figures."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from railyard.client import InvalidArgument, RailyardClient
from railyard.proto import railyard_pb2 as pb
from tests.support.cluster import LocalCluster
from tests.support.http import Family, health, scrape

PUTS = 20
NATIVE_PUTS = 5
# Small enough that the puts of a test take a snapshot on every node.
SNAPSHOT_EVERY = 10
WAIT_S = 15.0
POLL_S = 0.1

# Every metric the issue lists, by the name the text parser gives its family
# (counters lose `_total`), with its type and labels (`le` aside).
EXPECTED: dict[str, tuple[str, set[str]]] = {
    "railyard_server_has_leader": ("gauge", set()),
    "railyard_server_is_leader": ("gauge", set()),
    "railyard_server_leader_changes_seen": ("counter", set()),
    "railyard_server_term": ("gauge", set()),
    "railyard_server_proposals_committed": ("counter", set()),
    "railyard_server_proposals_applied": ("counter", set()),
    "railyard_server_proposals_pending": ("gauge", set()),
    "railyard_server_proposals_failed": ("counter", set()),
    "railyard_server_commit_index": ("gauge", set()),
    "railyard_server_applied_index": ("gauge", set()),
    "railyard_server_snapshot_index": ("gauge", set()),
    "railyard_server_catching_up": ("gauge", set()),
    "railyard_disk_log_fsync_duration_seconds": ("histogram", set()),
    "railyard_disk_apply_duration_seconds": ("histogram", set()),
    "railyard_disk_snapshot_duration_seconds": ("histogram", set()),
    "railyard_disk_log_bytes": ("gauge", set()),
    "railyard_disk_state_bytes": ("gauge", set()),
    "railyard_disk_free_bytes": ("gauge", set()),
    "railyard_disk_state_scrubbed_rows": ("counter", set()),
    "railyard_disk_state_scrubs": ("counter", set()),
    "railyard_network_peer_round_trip_time_seconds": ("histogram", {"peer"}),
    "railyard_network_peer_sent_bytes": ("counter", {"peer"}),
    "railyard_network_peer_received_bytes": ("counter", {"peer"}),
    "railyard_network_peer_send_failures": ("counter", {"peer"}),
    "railyard_network_active_peers": ("gauge", set()),
    "railyard_grpc_requests": ("counter", {"method", "code"}),
    "railyard_grpc_request_duration_seconds": ("histogram", {"method"}),
    "railyard_records_appended": ("counter", set()),
    "railyard_records_read": ("counter", set()),
    "railyard_stream_records": ("gauge", {"stream"}),
    "railyard_stream_bytes": ("gauge", {"stream"}),
    "process_cpu_seconds": ("counter", set()),
    "process_resident_memory_bytes": ("gauge", set()),
    "python_gc_collections": ("counter", {"generation"}),
    "python_info": ("gauge", {"implementation", "major", "minor", "patchlevel", "version"}),
}


def put(cluster: LocalCluster, node_id: str, n: int, stream: str = "s") -> None:
    stub = cluster.streams_stub(node_id)
    for i in range(n):
        stub.PutRecord(pb.PutRecordRequest(stream=stream, data=b"%d" % i), timeout=5)


async def native_puts(cluster: LocalCluster) -> None:
    """NATIVE_PUTS puts over the native port, and one it refuses (no stream named)."""
    async with RailyardClient(cluster.endpoints, coalesce=False, transport="native") as client:
        for i in range(NATIVE_PUTS):
            await client.put("n", b"%d" % i)
        with pytest.raises(InvalidArgument):
            await client.put("", b"nowhere")
        assert client.puts_by_transport["native"] == NATIVE_PUTS


def value(family: Family, sample: str, **labels: str) -> float:
    for name, have, v in family.samples:
        if name == sample and all(have.get(k) == w for k, w in labels.items()):
            return v
    raise AssertionError(f"no sample {sample} {labels} in {family.samples[:5]}")


def cumulative(families: dict[str, Family]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every counter and histogram sample: what may only rise."""
    return {
        (name, tuple(sorted(labels.items()))): v
        for family in families.values()
        if family.type in ("counter", "histogram")
        for name, labels, v in family.samples
    }


def wait_for(check: Any, what: str, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(POLL_S)
    raise AssertionError(f"{what} not seen within {timeout_s}s (last: {last})")


def test_every_metric_after_a_put_counters_rise_fsyncs_observed(tmp_path: Path) -> None:
    with LocalCluster(
        tmp_path, metrics=True, snapshot_every=SNAPSHOT_EVERY, native=True
    ) as cluster:
        leader = cluster.wait_for_leader()
        put(cluster, leader, 1)
        cluster.wait_converged(min_applied=2)
        before = {nid: scrape(cluster.metrics_addresses[nid]) for nid in cluster.node_ids}
        for nid, families in before.items():
            for name, (kind, labels) in EXPECTED.items():
                assert name in families, f"{nid}: {name} missing"
                family = families[name]
                assert family.type == kind, f"{nid}: {name} is a {family.type}, not a {kind}"
                assert family.samples, f"{nid}: {name} has no sample"
                for sample, have, _ in family.samples:
                    assert set(have) - {"le"} == labels, f"{nid}: {sample} labels {have}"
            assert {s[1]["peer"] for s in families["railyard_network_peer_sent_bytes"].samples} == (
                set(cluster.node_ids) - {nid}
            )
            assert value(families["railyard_server_has_leader"], "railyard_server_has_leader") == 1
        assert (
            sum(
                value(before[n]["railyard_server_is_leader"], "railyard_server_is_leader")
                for n in cluster.node_ids
            )
            == 1
        )

        put(cluster, leader, PUTS)
        cluster.streams_stub(leader).GetRecords(
            pb.GetRecordsRequest(stream="s", from_sequence=1), timeout=5
        )
        with pytest.raises(grpc.RpcError) as missing:
            cluster.streams_stub(leader).DescribeStream(
                pb.DescribeStreamRequest(name="missing"), timeout=5
            )
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND
        asyncio.run(native_puts(cluster))
        cluster.wait_converged(min_applied=PUTS + NATIVE_PUTS + 2)
        after = {nid: scrape(cluster.metrics_addresses[nid]) for nid in cluster.node_ids}
        for nid in cluster.node_ids:
            old, new = cumulative(before[nid]), cumulative(after[nid])
            fell = {key: (v, new.get(key)) for key, v in old.items() if new.get(key, -1) < v}
            assert not fell, f"{nid}: counters fell or vanished: {fell}"
            fsync = "railyard_disk_log_fsync_duration_seconds"
            count_before = value(before[nid][fsync], fsync + "_count")
            count_after = value(after[nid][fsync], fsync + "_count")
            # One put at a time: the leader saves each before it is acknowledged.
            minimum = PUTS if nid == leader else 1
            assert count_after - count_before >= minimum, (nid, count_before, count_after)
            assert value(after[nid][fsync], fsync + "_sum") > value(
                before[nid][fsync], fsync + "_sum"
            )
            snapshot = "railyard_disk_snapshot_duration_seconds"
            assert value(after[nid][snapshot], snapshot + "_count") >= 1, nid
            index = "railyard_server_snapshot_index"
            assert value(after[nid][index], index) >= SNAPSHOT_EVERY, nid
            appended = "railyard_records_appended"
            assert value(after[nid][appended], appended + "_total") == PUTS + NATIVE_PUTS + 1
        grpc_requests = after[leader]["railyard_grpc_requests"]
        total = "railyard_grpc_requests_total"
        assert value(grpc_requests, total, method="Streams/PutRecord", code="OK") >= PUTS + 1
        # An aborted call is counted under the code it ended with.
        assert value(grpc_requests, total, method="Streams/DescribeStream", code="NOT_FOUND") == 1
        native = after[leader]["railyard_native_requests"]
        native_total = "railyard_native_requests_total"
        assert value(native, native_total, method="PutRecord", code="OK") == NATIVE_PUTS
        assert value(native, native_total, method="PutRecord", code="INVALID_ARGUMENT") == 1
        duration = "railyard_native_request_duration_seconds"
        timed = after[leader][duration]
        assert value(timed, duration + "_count", method="PutRecord") == NATIVE_PUTS + 1
        read = after[leader]["railyard_records_read"]
        assert value(read, "railyard_records_read_total") == PUTS + 1
        records = after[leader]["railyard_stream_records"]
        assert value(records, "railyard_stream_records", stream="s") == PUTS + 1

        status = cluster.status(leader)
        assert status is not None
        assert status.fsync_p99_ms > 0
        assert status.disk_free_bytes > 0
        assert status.apply_lag == 0
        assert {p.node_id for p in status.peers if p.round_trip_ms > 0} == (
            set(cluster.node_ids) - {leader}
        )
        for nid in cluster.node_ids:
            assert health(cluster.metrics_addresses[nid]) == (200, {"health": True})
            assert health(cluster.metrics_addresses[nid], "/ready") == (200, {"ready": True})


def test_health_is_503_on_a_node_cut_off_from_the_majority_and_200_after_healing(
    tmp_path: Path,
) -> None:
    with LocalCluster(tmp_path, metrics=True, proxy=True) as cluster:
        assert cluster.proxy is not None
        leader = cluster.wait_for_leader()
        follower = next(n for n in cluster.node_ids if n != leader)
        address = cluster.metrics_addresses[follower]
        wait_for(lambda: health(address)[0] == 200, f"{follower} healthy")
        cluster.proxy.isolate(follower)
        wait_for(
            lambda: health(address) == (503, {"health": False, "reason": "no leader"}),
            f"{follower} unhealthy while cut off",
        )
        # The majority still has a leader: its nodes stay healthy.
        for nid in set(cluster.node_ids) - {follower}:
            wait_for(lambda nid=nid: health(cluster.metrics_addresses[nid])[0] == 200, nid)
        cluster.proxy.heal()
        wait_for(lambda: health(address) == (200, {"health": True}), f"{follower} healthy again")


def test_json_log_lines_for_role_term_membership_snapshots_and_refused_connections(
    tmp_path: Path,
) -> None:
    with LocalCluster(tmp_path, log_format="json", snapshot_every=SNAPSHOT_EVERY) as cluster:
        leader = cluster.wait_for_leader()
        put(cluster, leader, SNAPSHOT_EVERY)
        cluster.wait_converged(min_applied=SNAPSHOT_EVERY + 1)
        cluster.kill(leader)
        survivors = [n for n in cluster.node_ids if n != leader]
        new_leader = cluster.wait_for_leader(among=survivors)

        def events(nid: str) -> list[dict[str, Any]]:
            return [json.loads(line) for line in cluster.log(nid).splitlines() if line]

        def refused(nid: str) -> bool:
            return any(x["event"] == "connection_refused" for x in events(nid))

        # A follower of the dead leader finds its connections refused.
        witness = wait_for(
            lambda: next((n for n in survivors if refused(n)), None),
            "a connection_refused line",
        )
        lines = events(witness)
        for nid in survivors:
            for line in events(nid):
                assert set(line) == {"time", "level", "node", "event", "message", "fields"}
                assert line["node"] == nid
        by_event = {x["event"]: x for x in lines}
        assert by_event["membership"]["fields"] == {"voters": cluster.node_ids}
        assert by_event["connection_refused"]["fields"]["peer"] == leader
        assert by_event["term_change"]["fields"]["term"] >= 1
        assert by_event["snapshot_taken"]["fields"]["index"] >= SNAPSHOT_EVERY
        # The new leader logged becoming it, with the term.
        became = [
            x["fields"]
            for x in events(new_leader)
            if x["event"] == "role_change" and x["fields"]["role"] == "leader"
        ]
        assert became and all(f["term"] >= 1 for f in became)
