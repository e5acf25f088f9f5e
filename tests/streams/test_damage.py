"""A damaged state database is refused naming the file, never served as if intact."""

from __future__ import annotations

from pathlib import Path

import pytest

from railyard.streams import CorruptState, StreamsMachine
from tests.streams.helpers import append, create, tamper


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "streams.db"
    sm = StreamsMachine.open(path)
    sm.apply(
        [
            (1, create("s")),
            (2, append("s", [b"a", b"b", b"c"], producer="p", seq=1, ts=5)),
        ]
    )
    sm.close()
    return path


def test_a_changed_record_is_refused_on_read(db: Path) -> None:
    tamper(db, "UPDATE records SET data = x'7a' WHERE data = x'62'")
    sm = StreamsMachine.open(db)
    try:
        with pytest.raises(CorruptState, match="record 2") as info:
            sm.read("s", 1, 10, 0)
        assert str(db) in str(info.value)
    finally:
        sm.close()


def test_a_missing_record_is_refused_on_read(db: Path) -> None:
    tamper(db, "DELETE FROM records WHERE data = x'62'")
    sm = StreamsMachine.open(db)
    try:
        with pytest.raises(CorruptState, match="record 2"):
            sm.read("s", 1, 10, 0)
    finally:
        sm.close()


def test_a_changed_stream_row_is_refused(db: Path) -> None:
    tamper(db, "UPDATE streams SET last_seq = 2")
    sm = StreamsMachine.open(db)
    try:
        with pytest.raises(CorruptState, match="'s'"):
            sm.describe("s")
    finally:
        sm.close()


def test_a_changed_state_row_is_refused_at_open(db: Path) -> None:
    tamper(db, "UPDATE state SET last_applied = 1")
    with pytest.raises(CorruptState, match="state row") as info:
        StreamsMachine.open(db)
    assert str(db) in str(info.value)


def test_a_changed_producer_result_stops_apply(db: Path) -> None:
    tamper(db, "UPDATE producer_results SET first_seq = 7")
    sm = StreamsMachine.open(db)
    try:
        with pytest.raises(CorruptState, match="producer 'p'"):
            sm.apply([(3, append("s", [b"a", b"b", b"c"], producer="p", seq=1))])
        assert sm.last_applied == 2  # rolled back
    finally:
        sm.close()


@pytest.mark.parametrize("size", [0, 1, 100])
def test_a_cut_short_file_is_not_taken_for_a_new_state(db: Path, size: int) -> None:
    with db.open("r+b") as f:
        f.truncate(size)
    with pytest.raises(CorruptState) as info:
        StreamsMachine.open(db)
    assert str(db) in str(info.value)


def test_verify_checks_the_whole_state(db: Path) -> None:
    sm = StreamsMachine.open(db)
    sm.verify()  # intact
    sm.close()
    tamper(db, "UPDATE records SET ts = 6 WHERE data = x'63'")
    sm = StreamsMachine.open(db)
    try:
        with pytest.raises(CorruptState, match="record 3"):
            sm.verify()
    finally:
        sm.close()


def test_verify_finds_stray_records(db: Path) -> None:
    tamper(db, "INSERT INTO records VALUES (999, 0, NULL, x'00', 0)")
    sm = StreamsMachine.open(db)
    try:
        with pytest.raises(CorruptState, match="is stored but no stream holds it"):
            sm.verify()
    finally:
        sm.close()


def test_a_changed_producer_row_stops_apply(db: Path) -> None:
    tamper(db, "UPDATE producers SET last_sequence = 0")
    sm = StreamsMachine.open(db)
    try:
        with pytest.raises(CorruptState, match="producer 'p'"):
            sm.apply([(3, append("s", [b"a"], producer="p", seq=2))])
        assert sm.last_applied == 2  # rolled back
    finally:
        sm.close()


@pytest.mark.parametrize(
    "change",
    ["UPDATE producer_results SET count = 1", "UPDATE producers SET last_used_index = 9"],
)
def test_verify_checks_producers(db: Path, change: str) -> None:
    tamper(db, change)
    sm = StreamsMachine.open(db)
    try:
        with pytest.raises(CorruptState, match="producer"):
            sm.verify()
    finally:
        sm.close()


def test_a_database_of_an_older_format_is_refused(db: Path) -> None:
    tamper(db, "DROP TABLE producer_results")
    tamper(db, "UPDATE state SET format = 2")  # as an older build wrote it
    with pytest.raises(CorruptState, match="format version 2") as info:
        StreamsMachine.open(db)
    assert str(db) in str(info.value)
