"""A process for crash tests: appends batches to the log and applies them, until killed.

Usage: python tests/storage/crash_child.py DATA_DIR SEED
(the test forks and calls `main` instead, to skip the interpreter's start-up)

It does what a node's driver does, without the network: each batch of
entries is saved to the log store (one fsync), then applied to the streams
machine, and only then reported on stdout as

    committed <first_index> <last_index> <first_n> <last_n>

Entry n carries an append of RECORDS_PER_ENTRY records to stream "crash"
from producer "crash" with producer sequence n; its content is a function
of n (see `entry_data`), so the test can check every reported entry.

On start it recovers like a node: applies log entries the machine has not
applied yet, then re-proposes the last logged command as a new entry (a
client retrying a request whose answer it never saw), which exactly-once
must absorb. Every COMPACT_EVERY_ENTRIES entries it snapshots the machine and
compacts the log, so kills also land in the middle of those.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import TextIO

from railyard.proto import commands_pb2 as pb
from railyard.raft import Entry, EntryKind, HardState, Index, NodeId, SnapshotMeta, Term
from railyard.storage import DataDirLock, SnapshotStore, SqliteLogStore
from railyard.streams import StreamsMachine

CLUSTER = "crash-test"
NODE = "n1"
STREAM = "crash"
PRODUCER = "crash"
RECORDS_PER_ENTRY = 3
MAX_ENTRIES_PER_BATCH = 8
COMPACT_EVERY_ENTRIES = 40
TERM = Term(1)


def entry_data(n: int) -> bytes:
    records = [pb.Record(data=b"%d:%d" % (n, r)) for r in range(RECORDS_PER_ENTRY)]
    cmd = pb.AppendRecordsCommand(
        stream=STREAM,
        records=records,
        producer_id=PRODUCER,
        producer_sequence=n,
        timestamp_ms=n,
        create_if_missing=True,
    )
    return pb.Command(append_records=cmd).SerializeToString()


def producer_sequence(data: bytes) -> int:
    command = pb.Command()
    command.ParseFromString(data)
    return command.append_records.producer_sequence


def main(data_dir: Path, seed: int, out: TextIO = sys.stdout) -> None:
    rng = random.Random(seed)
    lock = DataDirLock(data_dir)
    lock.acquire()
    log = SqliteLogStore.open(data_dir / "log.db", cluster=CLUSTER, node_id=NODE)
    sm = StreamsMachine.open(data_dir / "state.db")
    snapshots = SnapshotStore(data_dir / "snapshots")

    last = log.last_index()
    if sm.last_applied < last:
        sm.apply(
            [(e.index, e.data) for e in log.entries(Index(sm.last_applied + 1), Index(last + 1))]
        )
    next_n = 1
    if last >= log.first_index():
        (tail,) = log.entries(last, Index(last + 1))
        next_n = producer_sequence(tail.data) + 1
        retry = Entry(TERM, Index(last + 1), EntryKind.NORMAL, tail.data)
        log.save(HardState(TERM, NodeId(NODE), retry.index), [retry])
        sm.apply([(retry.index, retry.data)])
        last = retry.index
    elif last > 0:  # everything compacted: the machine knows the last sequence
        found = sm.describe(STREAM)
        next_n = getattr(found, "last_sequence", 0) // RECORDS_PER_ENTRY + 1
    print(f"ready {last} {next_n}", file=out, flush=True)

    while True:
        count = rng.randint(1, MAX_ENTRIES_PER_BATCH)
        entries = [
            Entry(TERM, Index(last + 1 + i), EntryKind.NORMAL, entry_data(next_n + i))
            for i in range(count)
        ]
        log.save(HardState(TERM, NodeId(NODE), entries[-1].index), entries)
        sm.apply([(e.index, e.data) for e in entries])
        print(
            f"committed {entries[0].index} {entries[-1].index} {next_n} {next_n + count - 1}",
            file=out,
            flush=True,
        )
        crossed = last // COMPACT_EVERY_ENTRIES != entries[-1].index // COMPACT_EVERY_ENTRIES
        last = entries[-1].index
        next_n += count
        if crossed:
            meta = SnapshotMeta(Index(sm.last_applied), TERM, (NodeId(NODE),))
            snapshots.create(meta, sm.snapshot_to)
            log.compact(meta)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
