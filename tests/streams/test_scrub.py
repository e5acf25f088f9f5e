"""The whole-state check a step at a time (`StreamsMachine.scrub`), and what a start checks.

A start checks the ends of each stream only (`verify_ends`); every record,
stray and producer row is the scrub's, which must find what `verify` finds
without taking an intact state that changes between its steps for a
damaged one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from railyard.streams import CorruptState, ScrubPosition, StreamsMachine
from tests.streams.helpers import append, create, delete, scrub_pass, tamper, update


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Streams 'a' (100 records), 'b' (empty), 'c' (5 records), and a producer."""
    path = tmp_path / "streams.db"
    sm = StreamsMachine.open(path)
    sm.apply(
        [
            (1, create("a")),
            (2, create("b")),
            (3, create("c")),
            (4, append("a", [b"a%03d" % i for i in range(100)], producer="p", seq=1, ts=5)),
            (5, append("c", [(b"c%d" % i, b"k") for i in range(5)])),
        ]
    )
    sm.close()
    return path


def test_a_pass_checks_every_record_and_producer_row(db: Path) -> None:
    sm = StreamsMachine.open(db)
    try:
        # 105 records, 1 producer, 1 producer result.
        assert scrub_pass(sm, 7) == 107
        assert scrub_pass(sm, 1000) == 107
    finally:
        sm.close()


def test_a_changed_record_in_the_middle_passes_the_start_but_not_the_scrub(db: Path) -> None:
    tamper(db, "UPDATE records SET data = x'7a' WHERE data = CAST('a050' AS BLOB)")
    sm = StreamsMachine.open(db, quick_check=False)
    try:
        sm.verify_ends()  # the start does not read it
        with pytest.raises(CorruptState, match="record 51 of 'a'") as info:
            scrub_pass(sm, 10)
        assert str(db) in str(info.value)
    finally:
        sm.close()


@pytest.mark.parametrize(
    ("change", "found"),
    [
        ("UPDATE records SET ts = 9 WHERE data = CAST('a000' AS BLOB)", "record 1 of 'a'"),
        ("DELETE FROM records WHERE data = CAST('c4' AS BLOB)", "record 5 of 'c'"),
        ("UPDATE streams SET last_seq = 101 WHERE name = 'a'", "'a'"),
    ],
)
def test_the_start_refuses_a_damaged_end_of_a_stream(db: Path, change: str, found: str) -> None:
    tamper(db, change)
    sm = StreamsMachine.open(db, quick_check=False)
    try:
        with pytest.raises(CorruptState, match=found) as info:
            sm.verify_ends()
        assert str(db) in str(info.value)
    finally:
        sm.close()


STRAY = "is stored but no stream holds it"  # how `verify` names a stray


@pytest.mark.parametrize(
    ("change", "verify_finds", "scrub_finds"),
    [
        ("DELETE FROM records WHERE data = CAST('a050' AS BLOB)", "record 51 of 'a'", None),
        # Stream ids: a = 1, b = 2, c = 3 (ids << 40 | sequence).
        (
            f"INSERT INTO records VALUES ({(1 << 40) + 101}, 0, NULL, x'00', 0)",
            STRAY,
            "record 101 of",
        ),
        (f"INSERT INTO records VALUES ({(2 << 40) + 1}, 0, NULL, x'00', 0)", STRAY, "stream id 2"),
        (f"INSERT INTO records VALUES ({4 << 40}, 0, NULL, x'00', 0)", STRAY, "stream id 4"),
        (f"INSERT INTO records VALUES ({(9 << 40) + 3}, 0, NULL, x'00', 0)", STRAY, "stream id 9"),
        ("UPDATE producers SET last_used_index = 9", "producer 'p'", None),
        ("UPDATE producer_results SET count = 1", "producer 'p'", None),
    ],
)
def test_the_scrub_finds_what_verify_finds(
    db: Path, change: str, verify_finds: str, scrub_finds: str | None
) -> None:
    tamper(db, change)
    sm = StreamsMachine.open(db, quick_check=False)
    try:
        sm.verify_ends()  # none of these is at a stream's end
        with pytest.raises(CorruptState, match=verify_finds):
            sm.verify()
        with pytest.raises(CorruptState, match=scrub_finds or verify_finds) as info:
            scrub_pass(sm, 3)
        assert str(db) in str(info.value)
    finally:
        sm.close()


def test_a_stray_below_a_trimmed_stream_is_found(db: Path) -> None:
    sm = StreamsMachine.open(db)
    sm.apply([(6, update("a", max_records=10, ts=6))])  # a holds 91..100
    sm.close()
    tamper(db, f"INSERT INTO records VALUES ({(1 << 40) + 90}, 0, NULL, x'00', 0)")
    sm = StreamsMachine.open(db, quick_check=False)
    try:
        with pytest.raises(CorruptState, match="record 90 of stream id 1"):
            scrub_pass(sm, 3)
    finally:
        sm.close()


def test_applies_between_steps_are_not_taken_for_damage(db: Path) -> None:
    """Appends, trims and deletes between two steps: each step sees one state."""
    sm = StreamsMachine.open(db)
    try:
        position = ScrubPosition(sm.generation)
        changes = [
            append("a", [b"x"] * 20),
            update("a", max_records=30, ts=7),  # trims below where the pass is
            delete("b"),
            create("d"),
            append("d", [b"d"] * 5, producer="q", seq=1),
            delete("c"),
            append("a", [b"y"] * 3),
        ]
        index = 6
        for change in changes:
            step = sm.scrub(position, 4)
            assert step.next is not None
            position = step.next
            sm.apply([(index, change)])
            index += 1
        scrub_pass(sm, 4, position)
        sm.verify()
    finally:
        sm.close()


def test_a_restored_state_is_scrubbed_from_its_start(db: Path, tmp_path: Path) -> None:
    sm = StreamsMachine.open(db)
    try:
        snapshot = tmp_path / "snapshot.db"
        sm.snapshot_to(snapshot)
        step = sm.scrub(ScrubPosition(sm.generation), 50)
        assert step.next is not None and step.next.stream_id == 1
        sm.restore_from(snapshot)
        assert sm.generation == step.next.generation + 1
        # The old file's position starts over on the new file: every row again.
        assert scrub_pass(sm, 1000, step.next) == 107
    finally:
        sm.close()
