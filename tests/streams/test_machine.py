"""The streams machine, command by command."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from railyard.proto import commands_pb2 as pb
from railyard.streams import (
    AGE_SWEEP_INTERVAL_MS,
    Appended,
    ApplyOrderError,
    ApplyResult,
    BatchTooLarge,
    InvalidArgument,
    Limits,
    ReadResult,
    RecordTooLarge,
    Retention,
    StaleProducerSequence,
    StoredRecord,
    StreamCreated,
    StreamDeleted,
    StreamExists,
    StreamInfo,
    StreamNotFound,
    StreamsMachine,
    StreamUpdated,
    validate,
)
from railyard.streams.machine import INSERT_ROWS
from tests.streams.helpers import append, create, delete, update


class Driver:
    """Applies commands one per entry with increasing indexes."""

    def __init__(self, sm: StreamsMachine) -> None:
        self.sm = sm

    def __call__(self, *datas: bytes | None) -> ApplyResult | None:
        start = self.sm.last_applied + 1
        results = self.sm.apply([(start + i, d) for i, d in enumerate(datas)])
        return results[-1]


@pytest.fixture
def sm(tmp_path: Path) -> Iterator[StreamsMachine]:
    machine = StreamsMachine.open(tmp_path / "streams.db")
    try:
        yield machine
    finally:
        machine.close()


@pytest.fixture
def run(sm: StreamsMachine) -> Driver:
    return Driver(sm)


def info(sm: StreamsMachine, name: str) -> StreamInfo:
    found = sm.describe(name)
    assert isinstance(found, StreamInfo)
    return found


def read_all(sm: StreamsMachine, name: str) -> ReadResult:
    result = sm.read(name, 0, 1_000_000, 0)
    assert isinstance(result, ReadResult)
    return result


# ------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "name",
    ["", "x" * 129, "has space", "slash/y", "ünïcode", "semi;colon"],
)
def test_bad_stream_names_are_invalid_arguments(run: Driver, name: str) -> None:
    result = run(create(name))
    assert isinstance(result, InvalidArgument) and result.field == "name"
    assert isinstance(run(append(name, [b"x"])), InvalidArgument)
    assert isinstance(run(delete(name)), InvalidArgument)


@pytest.mark.parametrize("name", [".", "..", "..."])
def test_a_new_stream_named_only_dots_is_refused(run: Driver, name: str) -> None:
    assert run(create(name)) == InvalidArgument("name", "must not consist of dots only")
    assert validate(pb.Command(create_stream=pb.CreateStreamCommand(name=name))) is not None
    assert run(append(name, [b"x"], create_if_missing=True)) == InvalidArgument(
        "stream", "must not consist of dots only"
    )


@pytest.mark.parametrize("name", ["a", "x" * 128, "Az09_.-", "orders.v2", ".hidden", "a.."])
def test_good_stream_names(run: Driver, name: str) -> None:
    assert isinstance(run(create(name)), StreamCreated)


def test_record_and_batch_limits(run: Driver) -> None:
    run(create("s"))
    big = b"x" * ((1 << 20) + 1)
    assert run(append("s", [b"ok", big])) == RecordTooLarge(1, len(big), 1 << 20)
    # the key counts towards the record's size
    assert isinstance(run(append("s", [(b"x" * (1 << 20), b"k")])), RecordTooLarge)
    assert isinstance(run(append("s", [b"x"] * 501)), BatchTooLarge)
    assert isinstance(run(append("s", [b"x" * (1 << 20)] * 6)), BatchTooLarge)
    assert isinstance(run(append("s", [])), InvalidArgument)
    assert isinstance(run(append("s", [b"x"] * 500)), Appended)
    assert info(run.sm, "s").record_count == 500


def test_limits_are_configurable(tmp_path: Path) -> None:
    limits = Limits(max_record_bytes=10, max_batch_records=3, max_batch_bytes=20)
    sm = StreamsMachine.open(tmp_path / "s.db", limits)
    try:
        run = Driver(sm)
        run(create("s"))
        assert isinstance(run(append("s", [b"x" * 11])), RecordTooLarge)
        assert isinstance(run(append("s", [b"x"] * 4)), BatchTooLarge)
        assert isinstance(run(append("s", [b"x" * 10] * 3)), BatchTooLarge)
        assert isinstance(run(append("s", [b"x" * 10] * 2)), Appended)
    finally:
        sm.close()


def test_negative_retention_is_invalid(run: Driver) -> None:
    result = run(create("s", max_records=-1))
    assert result == InvalidArgument("retention.max_records", "must be 0 (no limit) or positive")


def test_validate_agrees_with_apply(run: Driver) -> None:
    cases = [
        create("ok"),
        create("bad name"),
        append("ok", [b"x" * ((1 << 20) + 1)]),
        append("ok", [b"x"] * 501),
        append("ok", []),
        append("ok", [b"x"], producer="p" * 129),
        delete(""),
    ]
    for data in cases:
        command = pb.Command()
        command.ParseFromString(data)
        verdict = validate(command, Limits())
        result = run(data)
        if verdict is None:
            assert isinstance(result, StreamCreated)
        else:
            assert result == verdict


def test_undecodable_commands_are_values(run: Driver) -> None:
    assert isinstance(run(b"\xff\xff\xff"), InvalidArgument)
    # A Command with nothing set encodes to b"": the same as an entry without a command.
    assert run(pb.Command().SerializeToString()) is None
    assert validate(pb.Command()) == InvalidArgument("command", "no command set")


# ------------------------------------------------------------ streams


def test_create_is_idempotent_with_same_settings(run: Driver) -> None:
    first = run(create("s", max_records=10, ts=1_000))
    again = run(create("s", max_records=10, ts=5_000))
    assert isinstance(first, StreamCreated) and again == first
    assert first.info.created_ms == 1_000
    assert run(create("s", max_records=11)) == StreamExists("s")


def test_delete_then_recreate_restarts_sequences(run: Driver) -> None:
    run(create("s"))
    run(append("s", [b"a", b"b"]))
    assert run(delete("s")) == StreamDeleted("s")
    assert run(delete("s")) == StreamNotFound("s")
    assert run.sm.describe("s") == StreamNotFound("s")
    run(create("s"))
    result = run(append("s", [b"c"]))
    assert isinstance(result, Appended) and result.sequences == range(1, 2)
    assert [r.data for r in read_all(run.sm, "s").records] == [b"c"]


def test_sequences_are_dense_per_stream(run: Driver) -> None:
    run(create("a"), create("b"))
    a1 = run(append("a", [b"1", b"2", b"3"]))
    b1 = run(append("b", [b"x"]))
    a2 = run(append("a", [b"4"]))
    assert isinstance(a1, Appended) and a1.sequences == range(1, 4)
    assert isinstance(b1, Appended) and b1.sequences == range(1, 2)
    assert isinstance(a2, Appended) and a2.sequences == range(4, 5)
    a = info(run.sm, "a")
    assert (a.first_sequence, a.last_sequence, a.record_count, a.bytes) == (1, 4, 4, 4)


def test_append_to_missing_stream(run: Driver) -> None:
    assert run(append("nope", [b"x"])) == StreamNotFound("nope")
    created = run(append("nope", [b"x"], create_if_missing=True))
    assert isinstance(created, Appended) and created.sequences == range(1, 2)
    assert info(run.sm, "nope").retention == Retention()


def test_keys_round_trip_including_empty_key(run: Driver) -> None:
    run(create("s"))
    run(append("s", [(b"a", None), (b"b", b""), (b"c", b"k")], ts=42))
    records = read_all(run.sm, "s").records
    assert records == [
        StoredRecord(1, b"a", None, 42),
        StoredRecord(2, b"b", b"", 42),
        StoredRecord(3, b"c", b"k", 42),
    ]
    assert info(run.sm, "s").bytes == 4


def test_a_batch_spanning_several_insert_statements_reads_back_whole(run: Driver) -> None:
    """Records go in `INSERT_ROWS` a statement: a batch of two full statements and
    a remainder keeps every record, in order, with a checksum that passes."""
    count = 2 * INSERT_ROWS + 7
    batch = [(b"d%d" % i, b"k%d" % i if i % 3 else None) for i in range(count)]
    run(create("s"))
    run(append("s", [b"first"], ts=5))
    appended = run(append("s", batch, ts=7))
    assert isinstance(appended, Appended) and appended.sequences == range(2, count + 2)
    assert read_all(run.sm, "s").records[1:] == [
        StoredRecord(i + 2, data, key, 7) for i, (data, key) in enumerate(batch)
    ]
    assert info(run.sm, "s").bytes == 5 + sum(len(d) + len(k or b"") for d, k in batch)
    run.sm.verify()


def test_list_streams_is_sorted(run: Driver) -> None:
    for name in ["b", "a", "c"]:
        run(create(name))
    assert [s.name for s in run.sm.list_streams()] == ["a", "b", "c"]


# ------------------------------------------------------------ exactly-once


def test_repeated_producer_sequence_returns_the_original_result(run: Driver) -> None:
    run(create("s"))
    first = run(append("s", [b"a", b"b"], producer="p", seq=1, ts=10))
    repeat = run(append("s", [b"a", b"b"], producer="p", seq=1, ts=20))
    assert isinstance(first, Appended) and isinstance(repeat, Appended)
    assert repeat.sequences == first.sequences and repeat.timestamp_ms == 10
    assert repeat.duplicate and not first.duplicate
    assert info(run.sm, "s").record_count == 2


def test_a_producer_sequence_beyond_sqlite_integers_is_refused_not_fatal(run: Driver) -> None:
    """Found by the wire fuzzer: 2**63 and above crashed apply on every replica."""
    run(create("s"))
    for seq in [1 << 63, (1 << 64) - 1]:
        refused = run(append("s", [b"a"], producer="p", seq=seq))
        assert isinstance(refused, InvalidArgument) and refused.field == "producer_sequence"
    assert info(run.sm, "s").record_count == 0
    taken = run(append("s", [b"a"], producer="p", seq=(1 << 63) - 1))
    assert isinstance(taken, Appended) and taken.sequences == range(1, 2)


def test_a_repeat_overtaken_by_later_sequences_returns_its_original_result(
    run: Driver,
) -> None:
    """A pipelined producer's resend lands after later batches of its own."""
    run(create("s"))
    for n in range(1, 9):
        run(append("s", [b"x", b"y"], producer="p", seq=n))
    for n in [1, 4, 8]:
        repeat = run(append("s", [b"x", b"y"], producer="p", seq=n))
        assert isinstance(repeat, Appended) and repeat.duplicate
        assert repeat.sequences == range(2 * n - 1, 2 * n + 1)
    assert info(run.sm, "s").record_count == 16


def test_a_sequence_older_than_the_window_is_stale(tmp_path: Path) -> None:
    sm = StreamsMachine.open(tmp_path / "s.db", Limits(producer_window=3))
    try:
        run = Driver(sm)
        run(create("s"))
        for n in range(1, 6):
            run(append("s", [b"a"], producer="p", seq=n))
        assert run(append("s", [b"a"], producer="p", seq=2)) == StaleProducerSequence("p", 2, 5)
        kept = run(append("s", [b"a"], producer="p", seq=3))  # 5 - 3 < 3: in the window
        assert isinstance(kept, Appended) and kept.duplicate and kept.sequences == range(3, 4)
        assert sm.producer_result_count() == 3  # bounded by the window
        nxt = run(append("s", [b"b"], producer="p", seq=6))
        assert isinstance(nxt, Appended) and nxt.sequences == range(6, 7)
    finally:
        sm.close()


def test_a_gap_in_the_window_is_applied_late(run: Driver) -> None:
    """A sequence in the window that was never applied is not lost."""
    run(create("s"))
    run(append("s", [b"a"], producer="p", seq=1))
    run(append("s", [b"c"], producer="p", seq=3))
    late = run(append("s", [b"b"], producer="p", seq=2))
    assert isinstance(late, Appended) and not late.duplicate and late.sequences == range(3, 4)
    again = run(append("s", [b"b"], producer="p", seq=2))
    assert isinstance(again, Appended) and again.duplicate and again.sequences == range(3, 4)


def test_failed_appends_are_not_remembered(run: Driver) -> None:
    assert run(append("s", [b"a"], producer="p", seq=1)) == StreamNotFound("s")
    run(create("s"))
    retry = run(append("s", [b"a"], producer="p", seq=1))
    assert isinstance(retry, Appended) and not retry.duplicate


def test_producer_table_is_bounded_evicting_least_recently_used(tmp_path: Path) -> None:
    sm = StreamsMachine.open(tmp_path / "s.db", Limits(max_producers=2))
    try:
        run = Driver(sm)
        run(create("s"))
        run(append("s", [b"1"], producer="p1", seq=1))
        run(append("s", [b"2"], producer="p2", seq=1))
        run(append("s", [b"1"], producer="p1", seq=1))  # a repeat uses p1 again
        run(append("s", [b"3"], producer="p3", seq=1))  # evicts p2, the least recent
        assert sm.producer_count() == 2
        again = run(append("s", [b"1"], producer="p1", seq=1))
        assert isinstance(again, Appended) and again.duplicate
        forgotten = run(append("s", [b"2"], producer="p2", seq=1))
        assert isinstance(forgotten, Appended) and not forgotten.duplicate
        assert sm.producer_result_count() == 2  # an evicted producer's results go with it
    finally:
        sm.close()


# ------------------------------------------------------------ retention


def test_update_replaces_retention_and_trims_at_once(run: Driver, sm: StreamsMachine) -> None:
    run(create("s", ts=1_000))
    run(append("s", [b"old"], ts=1_000))
    run(append("s", [b"new1", b"new2"], ts=60_000))
    result = run(update("s", max_age_ms=30_000, ts=61_000))
    assert isinstance(result, StreamUpdated)
    assert result.info.retention == Retention(30_000, 0, 0)
    assert (result.info.first_sequence, result.info.record_count) == (2, 2)
    assert [r.data for r in read_all(sm, "s").records] == [b"new1", b"new2"]
    assert info(sm, "s").retention == Retention(30_000, 0, 0)


def test_update_survives_a_reopen_with_valid_checksums(tmp_path: Path) -> None:
    sm = StreamsMachine.open(tmp_path / "streams.db")
    try:
        run = Driver(sm)
        run(create("s"))
        run(append("s", [b"a", b"b", b"c"]))
        run(update("s", max_records=2))
        run(append("s", [b"d"]))
    finally:
        sm.close()
    sm = StreamsMachine.open(tmp_path / "streams.db")
    try:
        assert info(sm, "s").retention == Retention(0, 2, 0)
        assert [r.data for r in read_all(sm, "s").records] == [b"c", b"d"]
    finally:
        sm.close()


def test_update_of_a_missing_stream_or_with_bad_retention_changes_nothing(
    run: Driver, sm: StreamsMachine
) -> None:
    assert run(update("nope", max_records=1)) == StreamNotFound("nope")
    run(create("s", max_records=5))
    result = run(update("s", max_bytes=-1))
    assert result == InvalidArgument("retention.max_bytes", "must be 0 (no limit) or positive")
    assert info(sm, "s").retention == Retention(0, 5, 0)


def test_max_records_moves_the_trim_horizon(run: Driver) -> None:
    run(create("s", max_records=3))
    run(append("s", [b"1", b"2"]), append("s", [b"3", b"4", b"5"]))
    s = info(run.sm, "s")
    assert (s.first_sequence, s.last_sequence, s.record_count) == (3, 5, 3)
    assert [r.sequence for r in read_all(run.sm, "s").records] == [3, 4, 5]


def test_max_bytes_trims_oldest(run: Driver) -> None:
    run(create("s", max_bytes=10))
    run(append("s", [b"aaaa", b"bbbb"]), append("s", [b"cccc"]))
    s = info(run.sm, "s")
    assert (s.first_sequence, s.bytes) == (2, 8)


def test_max_age_uses_entry_timestamps(run: Driver) -> None:
    run(create("s", max_age_ms=100, ts=1_000))
    run(append("s", [b"old"], ts=1_000), append("s", [b"mid"], ts=1_050))
    assert info(run.sm, "s").record_count == 2
    run(append("s", [b"new"], ts=1_120))
    # Retention's clock is corroborated: 1_120 counts once a later command confirms it.
    assert info(run.sm, "s").record_count == 3
    run(append("s", [b"next"], ts=1_121))  # cutoff 1_020: "old" expires
    assert [r.data for r in read_all(run.sm, "s").records] == [b"mid", b"new", b"next"]


def test_max_age_boundary(run: Driver) -> None:
    """A record exactly max_age old stays; one millisecond older goes."""
    run(create("s", max_age_ms=50), append("s", [b"x"], ts=100))
    run(append("s", [b"y"], ts=150), append("s", [b"y"], ts=150))
    assert info(run.sm, "s").first_sequence == 1
    run(append("s", [b"z"], ts=151), append("s", [b"z"], ts=151))
    assert info(run.sm, "s").first_sequence == 2


def test_sweep_runs_exactly_at_the_interval(run: Driver) -> None:
    run(create("idle", max_age_ms=10), append("idle", [b"x"], ts=AGE_SWEEP_INTERVAL_MS))
    run(create("busy"), append("busy", [b"y"], ts=2 * AGE_SWEEP_INTERVAL_MS - 1))
    assert info(run.sm, "idle").record_count == 1
    run(append("busy", [b"y"], ts=2 * AGE_SWEEP_INTERVAL_MS))
    run(append("busy", [b"y"], ts=2 * AGE_SWEEP_INTERVAL_MS))
    assert info(run.sm, "idle").record_count == 0


def test_idle_streams_expire_on_the_sweep(run: Driver) -> None:
    run(create("idle", max_age_ms=10, ts=1), append("idle", [b"x"], ts=1))
    run(create("busy", ts=2))
    run(append("busy", [b"y"], ts=2 + AGE_SWEEP_INTERVAL_MS // 2))
    assert info(run.sm, "idle").record_count == 1  # no sweep yet
    run(append("busy", [b"y"], ts=2 + AGE_SWEEP_INTERVAL_MS))
    run(append("busy", [b"y"], ts=2 + AGE_SWEEP_INTERVAL_MS))
    idle = info(run.sm, "idle")
    assert (idle.record_count, idle.first_sequence, idle.last_sequence) == (0, 0, 1)
    assert run.sm.resolve_position("idle", "TRIM_HORIZON") == 2


def test_one_far_future_timestamp_does_not_make_retention_trim(run: Driver) -> None:
    """Issue 14: an entry stamped 10 years ahead trimmed every record of a stream."""
    ten_years_ms = 10 * 365 * 24 * 3600 * 1000
    run(create("s", max_age_ms=60_000, ts=1_000))
    run(append("s", [b"a"], ts=1_000), append("s", [b"b"], ts=2_000))
    run(append("s", [b"forged"], ts=2_000 + ten_years_ms))
    run(append("s", [b"c"], ts=3_000), append("s", [b"d"], ts=4_000))
    assert [r.data for r in read_all(run.sm, "s").records] == [b"a", b"b", b"forged", b"c", b"d"]
    assert run.sm.retention_clock_ms == 4_000


def test_clock_never_goes_back(run: Driver) -> None:
    run(create("s"))
    run(append("s", [b"a"], ts=500), append("s", [b"b"], ts=400))
    assert [r.timestamp_ms for r in read_all(run.sm, "s").records] == [500, 500]


# ------------------------------------------------------------ reads and positions


def test_reads_respect_limits_and_return_at_least_one(run: Driver) -> None:
    run(create("s"))
    run(append("s", [b"x" * 10] * 10))
    r = run.sm.read("s", 1, 3, 0)
    assert isinstance(r, ReadResult)
    assert [x.sequence for x in r.records] == [1, 2, 3] and r.next_sequence == 4
    assert r.behind_latest == 7
    r = run.sm.read("s", 4, 100, 25)
    assert isinstance(r, ReadResult) and [x.sequence for x in r.records] == [4, 5]
    r = run.sm.read("s", 9, 100, 1)
    assert isinstance(r, ReadResult) and [x.sequence for x in r.records] == [9]
    r = run.sm.read("s", 11, 100, 0)
    assert isinstance(r, ReadResult) and r.records == [] and r.next_sequence == 11
    assert r.behind_latest == 0
    assert run.sm.read("none", 1, 1, 0) == StreamNotFound("none")


def test_read_from_trimmed_sequence_starts_at_the_horizon(run: Driver) -> None:
    run(create("s", max_records=2))
    run(append("s", [b"1", b"2", b"3", b"4"]))
    r = run.sm.read("s", 1, 10, 0)
    assert isinstance(r, ReadResult) and [x.sequence for x in r.records] == [3, 4]


def test_positions(run: Driver) -> None:
    run(create("s", max_records=5))
    for ts in (10, 20, 30, 40, 50, 60, 70):
        run(append("s", [b"r"], ts=ts))
    resolve = run.sm.resolve_position
    assert resolve("s", "TRIM_HORIZON") == 3
    assert resolve("s", "LATEST") == 8
    assert resolve("s", "AT_SEQUENCE", sequence=5) == 5
    assert resolve("s", "AT_SEQUENCE", sequence=1) == 3
    assert resolve("s", "AFTER_SEQUENCE", sequence=5) == 6
    assert resolve("s", "AT_TIMESTAMP", timestamp_ms=45) == 5
    assert resolve("s", "AT_TIMESTAMP", timestamp_ms=50) == 5
    assert resolve("s", "AT_TIMESTAMP", timestamp_ms=0) == 3
    assert resolve("s", "AT_TIMESTAMP", timestamp_ms=71) == 8
    assert isinstance(resolve("s", "SOMEWHERE"), InvalidArgument)
    assert resolve("x", "LATEST") == StreamNotFound("x")


def test_positions_of_an_empty_stream(run: Driver) -> None:
    run(create("s"))
    for position in ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"):
        assert run.sm.resolve_position("s", position) == 1


# ------------------------------------------------------------ apply contract


def test_entries_at_or_below_last_applied_are_skipped(run: Driver) -> None:
    sm = run.sm
    sm.apply([(1, create("s")), (2, append("s", [b"a"]))])
    results = sm.apply([(1, create("s")), (2, append("s", [b"a"])), (3, None), (4, b"")])
    assert results == [None, None, None, None]
    assert sm.last_applied == 4
    assert info(sm, "s").record_count == 1


def test_a_gap_in_indexes_is_a_broken_invariant(run: Driver) -> None:
    sm = run.sm
    sm.apply([(1, create("s"))])
    with pytest.raises(ApplyOrderError):
        sm.apply([(2, append("s", [b"a"])), (4, append("s", [b"b"]))])
    assert sm.last_applied == 1  # the whole batch was rolled back
    assert info(sm, "s").record_count == 0


def test_state_and_last_applied_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    sm = StreamsMachine.open(path)
    sm.apply([(1, create("s")), (2, append("s", [b"a"], producer="p", seq=1, ts=9))])
    sm.close()
    sm = StreamsMachine.open(path)
    try:
        assert sm.last_applied == 2 and sm.clock_ms == 9
        repeat = sm.apply([(3, append("s", [b"a"], producer="p", seq=1))])[0]
        assert isinstance(repeat, Appended) and repeat.duplicate
        assert info(sm, "s").record_count == 1
    finally:
        sm.close()
