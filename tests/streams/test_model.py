"""Property tests: the streams machine against the dict-of-lists model.

Random sequences of commands (with invalid names, oversized batches,
producer sequences repeated within the window of remembered results, gaps
in it and stale ones below it, timestamps that step across retention ages and
the sweep interval and sometimes go back, all three retention limits) are
applied to both, in random batches for the machine; every result and every
query must agree.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from railyard.streams import POSITIONS, Limits, ScrubPosition, StreamsMachine
from tests.streams.helpers import append, create, delete, scrub_pass
from tests.streams.model import Model

# Small limits so random batches hit them; two producers so eviction happens;
# a window of three results per producer, so sequences 0..7 give repeats
# within the window, never-applied gaps in it, and stale ones below it.
LIMITS = Limits(
    max_record_bytes=8, max_batch_records=4, max_batch_bytes=20, max_producers=2, producer_window=3
)
NAMES = st.integers(min_value=0, max_value=9).map(lambda k: "bad name" if k == 9 else "abc"[k % 3])
# Each command's timestamp is the previous one plus a step; steps sit at and
# around the retention ages and the sweep interval so boundaries get hit, and
# some go back in time (a new leader with a slower clock).
STEPS = st.sampled_from([-60, 0, 1, 49, 50, 51, 999, 1_000, 1_001, 1_499, 1_500, 1_501])

Command = Callable[[int], bytes]  # from the command's timestamp to its bytes


def creates_of(names: st.SearchStrategy[str]) -> st.SearchStrategy[Command]:
    return st.builds(
        lambda name, age, count, size: (
            lambda ts: create(name, max_age_ms=age, max_records=count, max_bytes=size, ts=ts)
        ),
        names,
        st.sampled_from([0, 0, 50, 1_500]),
        st.sampled_from([0, 0, 3, 7]),
        st.sampled_from([0, 0, 12, 40]),
    )


creates = creates_of(NAMES)
deletes = st.builds(lambda name: lambda ts: delete(name), NAMES)
# Mostly records within LIMITS; sometimes one too large or a batch too long.
fitting = st.tuples(st.binary(max_size=6), st.one_of(st.none(), st.binary(max_size=2)))
oversized = st.tuples(st.binary(min_size=9, max_size=9), st.none())
records = st.integers(min_value=0, max_value=5).flatmap(
    lambda k: (
        st.lists(st.one_of(fitting, oversized), max_size=5)
        if k == 0
        else st.lists(fitting, min_size=1, max_size=3)
    )
)
appends = st.builds(
    lambda name, recs, producer, seq, cim: (
        lambda ts: append(name, recs, producer=producer, seq=seq, ts=ts, create_if_missing=cim)
    ),
    NAMES,
    records,
    st.sampled_from(["", "p1", "p2", "p3"]),
    st.integers(min_value=0, max_value=7),
    st.sampled_from([True, True, False]),
)
# Weighted: mostly appends, the command with the most rules.
command = st.integers(min_value=0, max_value=9).flatmap(
    lambda k: creates if k < 2 else deletes if k < 3 else appends
)
# Every example starts by creating the three streams, so retention settings
# are common (a stream created by an append has none).
initial = st.tuples(*(st.tuples(creates_of(st.just(n)), st.just(0)) for n in "abc"))


def stamp(steps: Sequence[tuple[Command, int]]) -> list[bytes]:
    """Command bytes with timestamps: the running sum of the steps."""
    stamps = itertools.accumulate(step for _, step in steps)
    return [make(ts) for (make, _), ts in zip(steps, stamps, strict=True)]


commands = st.builds(
    lambda first, rest: stamp([*first, *rest]),
    initial,
    st.lists(st.tuples(command, STEPS), max_size=50),
)


def batches(datas: Sequence[bytes], sizes: Sequence[int]) -> list[list[tuple[int, bytes]]]:
    """Entries (index from 1) cut into consecutive batches of the given sizes, cycling."""
    entries = [(i + 1, d) for i, d in enumerate(datas)]
    out, pos = [], 0
    for size in itertools.cycle(sizes or [1]):
        if pos >= len(entries):
            break
        out.append(entries[pos : pos + size])
        pos += size
    return out


def assert_same_queries(sm: StreamsMachine, model: Model, probes: Sequence[int]) -> None:
    assert sm.list_streams() == [model.streams[n].info() for n in sorted(model.streams)]
    for name in ["a", "b", "c"]:
        stream = model.streams.get(name)
        assert sm.describe(name) == (stream.info() if stream else model.read(name, 0, 0, 0))
        assert sm.read(name, 0, 1000, 0) == model.read(name, 0, 1000, 0)
        for p in probes:
            assert sm.read(name, p, p % 4, p % 23) == model.read(name, p, p % 4, p % 23)
            for position in POSITIONS:
                got = sm.resolve_position(name, position, p, p * 97)
                assert got == model.resolve(name, position, p, p * 97)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    datas=commands,
    sizes=st.lists(st.integers(min_value=1, max_value=6), max_size=5),
    probes=st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=4),
)
def test_machine_matches_model(datas: list[bytes], sizes: list[int], probes: list[int]) -> None:
    model = Model(LIMITS)
    expected = [model.apply(i + 1, d) for i, d in enumerate(datas)]
    with tempfile.TemporaryDirectory() as tmp:
        sm = StreamsMachine.open(Path(tmp) / "s.db", LIMITS)
        try:
            got = []
            # A scrub pass goes on between the batches: no state on the way looks damaged.
            position = ScrubPosition(sm.generation)
            for batch in batches(datas, sizes):
                got.extend(sm.apply(batch))
                step = sm.scrub(position, 2)
                position = step.next or ScrubPosition(sm.generation)
            assert got == expected
            assert sm.last_applied == len(datas)
            assert sm.clock_ms == model.clock_ms
            assert sm.producer_count() == len(model.producers)
            remembered = sum(len(p.results) for p in model.producers.values())
            assert sm.producer_result_count() == remembered
            assert remembered <= LIMITS.max_producers * LIMITS.producer_window
            assert_same_queries(sm, model, probes)
            sm.verify()  # every row written on the way carries a valid checksum
            scrub_pass(sm, 3, position)
        finally:
            sm.close()
