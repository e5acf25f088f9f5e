"""`railyard snapshot save` and `restore` against real clusters.

One source cluster is started once (module fixture): a producer writes while
a backup is saved through a follower. The backup must hold every record
acknowledged before the save started (a linearizable point), and clusters
restored from it on other ports, of another size, serve exactly those
records with the same sequence numbers. A restore refuses a non-empty data
directory and a damaged file, in one line, writing nothing.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from railyard.client import RailyardClient
from railyard.proto import commands_pb2 as cmd
from railyard.proto import railyard_pb2 as pb
from railyard.storage import BackupHeader, BackupWriter, read_backup
from tests.support.cluster import LocalCluster

STREAM = "orders"
# The producer is bounded in count and time.
MAX_RECORDS = 2000
PRODUCE_FOR_S = 20.0
# Records acknowledged before the save starts, at least, so it is not trivial.
RECORDS_BEFORE_SAVE = 50
CLI_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 30.0


def railyard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "railyard", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )


@dataclass
class Produced:
    """What the producer was acknowledged: (data, sequence, monotonic time of the ack)."""

    acked: list[tuple[str, int, float]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, endpoints: list[str]) -> None:
        async def go() -> None:
            deadline = time.monotonic() + PRODUCE_FOR_S
            async with RailyardClient(endpoints, coalesce=False) as client:
                for i in range(MAX_RECORDS):
                    if self.stop.is_set() or time.monotonic() > deadline:
                        return
                    data = f"order-{i}"
                    sequence = await client.put(STREAM, data.encode())
                    self.acked.append((data, sequence, time.monotonic()))

        asyncio.run(go())


@dataclass(frozen=True)
class Saved:
    path: Path
    summary: dict[str, object]
    produced: Produced
    started_at: float
    other_stream: list[tuple[str, int]]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Saved]:
    root = tmp_path_factory.mktemp("backup-source")
    produced = Produced()
    with LocalCluster(root, name="source") as cluster:
        leader = cluster.wait_for_leader()
        follower = next(n for n in cluster.node_ids if n != leader)
        other = [(f"item-{i}", i + 1) for i in range(3)]
        for data, _ in other:
            assert railyard("put", "-c", str(cluster.config_path), "other", data).returncode == 0
        producer = threading.Thread(target=produced.run, args=(cluster.endpoints,))
        producer.start()
        try:
            deadline = time.monotonic() + PRODUCE_FOR_S
            while len(produced.acked) < RECORDS_BEFORE_SAVE and time.monotonic() < deadline:
                time.sleep(0.05)
            path = root / "cluster.ryb"
            started_at = time.monotonic()
            # Through a follower, while the producer writes.
            result = railyard(
                "snapshot",
                "save",
                str(path),
                "--endpoints",
                cluster.addresses[follower],
                "-o",
                "json",
            )
            time.sleep(0.5)  # the producer goes on past the save
        finally:
            produced.stop.set()
            producer.join(PRODUCE_FOR_S + CLI_TIMEOUT_S)
        assert result.returncode == 0, result.stderr + cluster.logs()
    yield Saved(path, json.loads(result.stdout), produced, started_at, other)


def test_save_through_a_follower_holds_every_write_acknowledged_before_it(saved: Saved) -> None:
    summary = saved.summary
    assert set(summary) == {"index", "term", "streams", "records", "bytes", "sha256", "file"}
    header = read_backup(saved.path)
    assert summary["sha256"] == header.sha256
    assert summary["bytes"] == header.size == saved.path.stat().st_size - _header_length(saved.path)
    assert summary["file"] == str(saved.path)
    assert not saved.path.with_name(saved.path.name + ".tmp").exists()
    assert summary["streams"] == 2
    before = [a for a in saved.produced.acked if a[2] < saved.started_at]
    assert len(before) >= RECORDS_BEFORE_SAVE
    assert isinstance(summary["records"], int)
    assert summary["records"] >= len(before) + len(saved.other_stream)
    # The producer went on during and after the save: the backup is a point in time.
    assert len(saved.produced.acked) > summary["records"] - len(saved.other_stream)


def _header_length(path: Path) -> int:
    with path.open("rb") as f:
        return len(f.readline()) + len(f.readline())


def _records(config: Path, stream: str) -> list[tuple[str, int]]:
    result = railyard("get", "-c", str(config), stream, "--from-start", "-o", "json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return [(line["data"], line["sequence"]) for line in lines]


@pytest.mark.parametrize("nodes", [3, 1])
def test_a_restored_cluster_serves_exactly_the_backed_up_records(
    saved: Saved, tmp_path: Path, nodes: int
) -> None:
    target = LocalCluster(tmp_path, n=nodes, name=f"restored{nodes}")
    result = railyard(
        "snapshot", "restore", str(saved.path), "-c", str(target.config_path), "-o", "json"
    )
    assert result.returncode == 0, result.stderr
    restored = json.loads(result.stdout)
    assert restored["index"] == saved.summary["index"]
    assert sorted(restored["nodes"]) == target.node_ids
    with target:
        target.wait_for_leader()
        orders = _records(target.config_path, STREAM)
        assert _records(target.config_path, "other") == saved.other_stream
        acked = [(data, sequence) for data, sequence, _ in saved.produced.acked]
        before = [(d, s) for d, s, t in saved.produced.acked if t < saved.started_at]
        # Exactly a prefix of what was acknowledged, in order, with the same
        # sequence numbers, and at least what was acknowledged before the save.
        assert orders == acked[: len(orders)]
        assert len(orders) >= len(before)
        assert len(orders) + len(saved.other_stream) == saved.summary["records"]
        # A working cluster: writes go on after the backed-up sequence numbers.
        put = railyard("put", "-c", str(target.config_path), STREAM, "after-restore")
        assert put.returncode == 0, put.stderr
        assert int(put.stdout.split()[-1]) == len(orders) + 1


def test_restore_refuses_a_data_directory_that_is_not_empty(saved: Saved, tmp_path: Path) -> None:
    target = LocalCluster(tmp_path, n=3, name="busy")
    busy = target.data_dir("n2")
    busy.mkdir(parents=True)
    (busy / "raft.db").write_bytes(b"someone's data")
    result = railyard("snapshot", "restore", str(saved.path), "-c", str(target.config_path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "is not empty" in lines[0] and str(busy) in lines[0]
    assert result.stdout == ""
    # Nothing written: the other nodes' directories were not created, n2's is untouched.
    assert not target.data_dir("n1").exists()
    assert not target.data_dir("n3").exists()
    assert [p.name for p in busy.iterdir()] == ["raft.db"]
    assert (busy / "raft.db").read_bytes() == b"someone's data"


def test_restore_refuses_a_backup_with_one_byte_flipped(saved: Saved, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.ryb"
    data = bytearray(saved.path.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged.write_bytes(bytes(data))
    target = LocalCluster(tmp_path, n=3, name="flip")
    result = railyard("snapshot", "restore", str(damaged), "-c", str(target.config_path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "cannot restore" in lines[0] and "sha256" in lines[0] and str(damaged) in lines[0]
    assert not (tmp_path / "data").exists()


def test_restore_refuses_bytes_that_match_their_checksum_but_are_no_state(
    tmp_path: Path,
) -> None:
    """The checksum proves only that the bytes are those saved: the validators run too."""
    import hashlib

    garbage = b"not a database at all" * 100
    path = tmp_path / "forged.ryb"
    with BackupWriter(path) as writer:
        writer.start(BackupHeader(7, 2, 1, 1, len(garbage), hashlib.sha256(garbage).hexdigest()))
        writer.write(garbage)
        writer.finish()
    target = LocalCluster(tmp_path, n=1, name="forged")
    result = railyard("snapshot", "restore", str(path), "-c", str(target.config_path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "cannot restore" in lines[0] and "SQLite" in lines[0]
    assert not (tmp_path / "data").exists()


# A state larger than the CLI's progress threshold (8 MiB).
BIG_BATCHES = 10
BIG_RECORDS_PER_BATCH = 100
BIG_RECORD_BYTES = 10_000


def test_on_a_tls_cluster_an_admin_saves_through_a_follower_with_progress_and_a_reader_cannot(
    tmp_path: Path,
) -> None:
    cluster = LocalCluster(tmp_path, name="secure", tls=True)
    made = railyard("cert", "client", "alice", "--role", "reader", "-c", str(cluster.config_path))
    assert made.returncode == 0, made.stderr
    with cluster:
        leader = cluster.wait_for_leader()
        follower = next(n for n in cluster.node_ids if n != leader)
        stub = cluster.streams_stub(leader)
        for batch in range(BIG_BATCHES):
            stub.PutRecords(
                pb.PutRecordsRequest(
                    stream="big",
                    records=[
                        cmd.Record(data=bytes([batch]) * BIG_RECORD_BYTES)
                        for _ in range(BIG_RECORDS_PER_BATCH)
                    ],
                ),
                timeout=CLI_TIMEOUT_S,
            )
        path = tmp_path / "big.ryb"
        certs = cluster.certs_dir
        # `cert init` made the admin client; only a follower is named.
        saved = railyard(
            "snapshot",
            "save",
            str(path),
            "--endpoints",
            cluster.addresses[follower],
            "--cacert",
            str(certs / "ca.pem"),
            "--cert",
            str(certs / "client.pem"),
            "--key",
            str(certs / "client.key"),
            "-o",
            "json",
        )
        assert saved.returncode == 0, saved.stderr
        summary = json.loads(saved.stdout)
        assert summary["records"] == BIG_BATCHES * BIG_RECORDS_PER_BATCH
        assert summary["bytes"] > 8 << 20
        assert "snapshot save: " in saved.stderr and "MiB (100%)" in saved.stderr
        assert read_backup(path).sha256 == summary["sha256"]
        refused = railyard(
            "snapshot",
            "save",
            str(tmp_path / "reader.ryb"),
            "--endpoints",
            ",".join(cluster.endpoints),
            "--cacert",
            str(certs / "ca.pem"),
            "--cert",
            str(certs / "alice.pem"),
            "--key",
            str(certs / "alice.key"),
        )
        assert refused.returncode == 1
        assert "needs the admin role" in refused.stderr, refused.stderr
        assert not (tmp_path / "reader.ryb").exists()
        assert not (tmp_path / "reader.ryb.tmp").exists()
