"""Replicas agree: the same entries give byte-identical state, however they are batched."""

from __future__ import annotations

import random
from pathlib import Path

from railyard.streams import Limits, StreamsMachine
from tests.streams.helpers import query_dump, sql_dump, workload

ENTRIES = 600


def apply_in_batches(sm: StreamsMachine, datas: list[bytes], rng: random.Random) -> None:
    index = 1
    while index <= len(datas):
        size = rng.randint(1, 40)
        sm.apply([(i, datas[i - 1]) for i in range(index, min(index + size, len(datas) + 1))])
        index += size


def test_same_entries_give_identical_state(tmp_path: Path) -> None:
    datas = workload(seed=7, count=ENTRIES)
    limits = Limits(max_producers=3)  # small, so eviction is part of the run
    one = StreamsMachine.open(tmp_path / "one.db", limits)
    two = StreamsMachine.open(tmp_path / "two.db", limits)
    try:
        apply_in_batches(one, datas, random.Random(1))
        for i, data in enumerate(datas, start=1):  # one entry per transaction
            two.apply([(i, data)])
        dump = query_dump(one)
        assert dump == query_dump(two)
        assert sql_dump(one) == sql_dump(two)
        one.verify()
        assert len(one.list_streams()) >= 2 and b"records=[StoredRecord(" in dump
    finally:
        one.close()
        two.close()


def test_replay_after_reopen_changes_nothing(tmp_path: Path) -> None:
    """Re-applying already applied entries (a restart replaying its log) is a no-op."""
    datas = workload(seed=11, count=200)
    path = tmp_path / "s.db"
    sm = StreamsMachine.open(path)
    sm.apply(list(enumerate(datas, start=1)))
    before = sql_dump(sm)
    sm.close()
    sm = StreamsMachine.open(path)
    try:
        assert sm.apply(list(enumerate(datas, start=1))) == [None] * len(datas)
        assert sql_dump(sm) == before
    finally:
        sm.close()
