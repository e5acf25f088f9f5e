"""Failover time and a quick put throughput figure, with the default timings.

Marked `bench`: never part of `make test`. Run with
`.venv/bin/pytest tests/cluster/test_failover_bench.py -m bench -s`.
It prints figures and asserts only that each run recovered at all.
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

import grpc
import pytest

from railyard.proto import commands_pb2 as cmd
from railyard.proto import railyard_pb2 as pb
from tests.support.cluster import LocalCluster

pytestmark = [pytest.mark.bench, pytest.mark.timeout(600)]

# The defaults of configs/local.toml.
HEARTBEAT_INTERVAL_MS = 100
ELECTION_TIMEOUT_MS = 1000
RUNS = 10
PUT_TIMEOUT_S = 0.5
RETRY_PAUSE_S = 0.005


def _failover_once(tmp_path: Path) -> float:
    c = LocalCluster(
        tmp_path,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        election_timeout_ms=ELECTION_TIMEOUT_MS,
    )
    try:
        c.start()
        leader = c.wait_for_leader()
        survivors = [n for n in c.node_ids if n != leader]
        c.streams_stub(leader).PutRecord(pb.PutRecordRequest(stream="f", data=b"x"), timeout=5)
        stop = threading.Event()
        acks: list[float] = []

        def produce() -> None:
            seq = 0
            target = 0
            while not stop.is_set():
                seq += 1
                while not stop.is_set():
                    node = survivors[target % 2] if c.pid(leader) is None else leader
                    try:
                        c.streams_stub(node).PutRecord(
                            pb.PutRecordRequest(
                                stream="f", data=b"x", producer_id="p", producer_sequence=seq
                            ),
                            timeout=PUT_TIMEOUT_S,
                        )
                        acks.append(time.monotonic())
                        break
                    except grpc.RpcError:
                        target += 1
                        time.sleep(RETRY_PAUSE_S)

        producer = threading.Thread(target=produce)
        producer.start()
        time.sleep(0.5)
        c.kill(leader)  # returns once the process is gone
        killed_at = time.monotonic()
        deadline = killed_at + 15
        while time.monotonic() < deadline and not any(a > killed_at for a in acks):
            time.sleep(0.01)
        stop.set()
        producer.join(5)
        after = [a for a in acks if a > killed_at]
        assert after, f"no put acknowledged after the kill:\n{c.logs()[-4000:]}"
        return after[0] - killed_at
    finally:
        c.stop()


def test_failover_time(tmp_path: Path) -> None:
    times = [_failover_once(tmp_path / f"run{i}") for i in range(RUNS)]
    print(
        f"\nfailover (kill -9 leader -> first acknowledged put), {RUNS} runs, "
        f"heartbeat {HEARTBEAT_INTERVAL_MS} ms, election {ELECTION_TIMEOUT_MS} ms: "
        f"median {statistics.median(times):.3f}s min {min(times):.3f}s max {max(times):.3f}s "
        f"all {[round(t, 3) for t in times]}"
    )


def _load(stub: object, batch: int, in_flight: int, duration_s: float) -> float:
    """Records per second acknowledged by `in_flight` threads putting for `duration_s`."""
    end = time.monotonic() + duration_s
    records = [cmd.Record(data=b"r" * 100) for _ in range(batch)]
    counts = [0] * in_flight

    def worker(slot: int) -> None:
        while time.monotonic() < end:
            if batch == 1:
                stub.PutRecord(pb.PutRecordRequest(stream="t", data=b"r" * 100), timeout=5)  # type: ignore[attr-defined]
            else:
                stub.PutRecords(pb.PutRecordsRequest(stream="t", records=records), timeout=5)  # type: ignore[attr-defined]
            counts[slot] += batch

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(in_flight)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration_s + 10)
    return sum(counts) / duration_s


def test_put_throughput(tmp_path: Path) -> None:
    c = LocalCluster(
        tmp_path,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        election_timeout_ms=ELECTION_TIMEOUT_MS,
    )
    try:
        c.start()
        leader = c.wait_for_leader()
        stub = c.streams_stub(leader)
        stub.PutRecord(pb.PutRecordRequest(stream="t", data=b"x"), timeout=5)
        for batch, in_flight in ((1, 1), (1, 64), (100, 16)):
            rate = _load(stub, batch, in_flight, 3.0)
            print(f"\nbatch={batch} in_flight={in_flight}: {rate:,.0f} records/s")
    finally:
        c.stop()
