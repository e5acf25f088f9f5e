"""Building command bytes for streams tests, and damaging a state database."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from railyard.proto import commands_pb2 as pb
from railyard.streams import POSITIONS, ScrubPosition, StreamsMachine


def create(
    name: str, *, max_age_ms: int = 0, max_records: int = 0, max_bytes: int = 0, ts: int = 0
) -> bytes:
    retention = pb.Retention(max_age_ms=max_age_ms, max_records=max_records, max_bytes=max_bytes)
    cmd = pb.CreateStreamCommand(name=name, retention=retention, timestamp_ms=ts)
    return pb.Command(create_stream=cmd).SerializeToString()


def update(
    name: str, *, max_age_ms: int = 0, max_records: int = 0, max_bytes: int = 0, ts: int = 0
) -> bytes:
    retention = pb.Retention(max_age_ms=max_age_ms, max_records=max_records, max_bytes=max_bytes)
    cmd = pb.UpdateStreamCommand(name=name, retention=retention, timestamp_ms=ts)
    return pb.Command(update_stream=cmd).SerializeToString()


def delete(name: str) -> bytes:
    return pb.Command(delete_stream=pb.DeleteStreamCommand(name=name)).SerializeToString()


def append(
    stream: str,
    records: Sequence[bytes | tuple[bytes, bytes | None]],
    *,
    producer: str = "",
    seq: int = 0,
    ts: int = 0,
    create_if_missing: bool = False,
) -> bytes:
    return pb.Command(
        append_records=append_command(
            stream, records, producer=producer, seq=seq, ts=ts, create_if_missing=create_if_missing
        )
    ).SerializeToString()


def append_command(
    stream: str,
    records: Sequence[bytes | tuple[bytes, bytes | None]],
    *,
    producer: str = "",
    seq: int = 0,
    ts: int = 0,
    create_if_missing: bool = False,
) -> pb.AppendRecordsCommand:
    out = []
    for r in records:
        data, key = r if isinstance(r, tuple) else (r, None)
        out.append(pb.Record(data=data, key=key or b"", has_key=key is not None))
    return pb.AppendRecordsCommand(
        stream=stream,
        records=out,
        producer_id=producer,
        producer_sequence=seq,
        timestamp_ms=ts,
        create_if_missing=create_if_missing,
    )


# Each test stream exercises one retention limit (or none).
RETENTIONS = {
    "orders": {"max_records": 200},
    "clicks": {"max_age_ms": 20_000},
    "audit.log": {"max_bytes": 4_000},
    "tmp-1": {},
}
STREAM_NAMES = tuple(RETENTIONS)


def workload(seed: int, count: int) -> list[bytes]:
    """A reproducible mix of every command: retention, retries, deletes, bad input."""
    rng = random.Random(seed)
    ts = 1_700_000_000_000
    producer_seqs: dict[str, int] = {}
    out = [create(name, ts=ts, **RETENTIONS[name]) for name in STREAM_NAMES]
    while len(out) < count:
        ts += rng.choice([0, 1, 7, 250, 1_000, 3_000, -40])
        name = rng.choice(STREAM_NAMES)
        roll = rng.random()
        if roll < 0.05:
            out.append(create(name, ts=ts, **RETENTIONS[name]))
        elif roll < 0.06:
            out.append(create(name, ts=ts, max_records=1))  # other settings: StreamExists
        elif roll < 0.08:
            out.append(delete(name))  # and recreate it, with its retention
            out.append(create(name, ts=ts, **RETENTIONS[name]))
        elif roll < 0.09:
            out.append(b"\x08\x96\x01garbage")
        else:
            producer = rng.choice(["", "p1", "p2", "p3", "p4"])
            seq = producer_seqs.get(producer, 0) + (rng.random() < 0.8)
            producer_seqs[producer] = seq
            records = [
                (rng.randbytes(rng.randint(0, 64)), rng.choice([None, b"", b"k1", b"key-2"]))
                for _ in range(rng.randint(1, 20))
            ]
            cim = rng.random() < 0.05
            out.append(
                append(name, records, producer=producer, seq=seq, ts=ts, create_if_missing=cim)
            )
    return out


def query_dump(sm: StreamsMachine) -> bytes:
    """Everything a client can ask of the machine, as bytes."""
    parts: list[object] = [sm.last_applied, sm.list_streams()]
    for name in STREAM_NAMES:
        parts.append(sm.describe(name))
        parts.append(sm.read(name, 0, 1_000_000, 0))
        for position in POSITIONS:
            parts.append(sm.resolve_position(name, position, 3, 1_700_000_010_000))
    return repr(parts).encode()


def sql_dump(sm: StreamsMachine) -> list[str]:
    """The whole database as SQL text."""
    return sm.dump_sql()


def scrub_pass(sm: StreamsMachine, step_rows: int, position: ScrubPosition | None = None) -> int:
    """Run a pass to its end (from `position`); the rows it checked."""
    position = position or ScrubPosition(sm.generation)
    rows = 0
    for _ in range(100_000):
        step = sm.scrub(position, step_rows)
        rows += step.checked
        if step.next is None:
            return rows
        position = step.next
    raise AssertionError("the scrub pass did not end")


def tamper(path: Path, sql: str) -> None:
    """Change a state database behind the machine's back, as damage would."""
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(sql)
    conn.close()
