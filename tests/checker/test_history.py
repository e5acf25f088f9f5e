"""The stream history checker: accepts linearizable histories, rejects each kind of bad one.

Hand-written histories pin each rule to the violation it reports; a
Hypothesis test simulates a linearizable stream under concurrent clients
(operations take effect at a point between invocation and completion;
unknown outcomes may take effect later or never) and checks that every such
history passes and that each mutation that breaks the model is caught.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace

from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from tests.support.history import (
    NEVER,
    AppendOp,
    CheckResult,
    HistoryRecorder,
    Kind,
    Operation,
    Outcome,
    ReadOp,
    check_history,
)

S = "s"  # the stream every hand-written history uses


class _Builder:
    """Hand-written histories with explicit times."""

    def __init__(self) -> None:
        self.ops: list[Operation] = []

    def append(
        self,
        value: bytes,
        invoke: float,
        complete: float,
        sequence: int | None = None,
        outcome: Outcome = Outcome.OK,
        process: str = "p0",
    ) -> _Builder:
        end = complete if outcome is Outcome.OK else NEVER
        self.ops.append(AppendOp(len(self.ops), process, S, value, invoke, end, outcome, sequence))
        return self

    def read(
        self,
        from_sequence: int,
        invoke: float,
        complete: float,
        records: Sequence[tuple[int, bytes]],
        last_sequence: int | None = None,
        linearizable: bool = True,
        process: str = "r0",
    ) -> _Builder:
        self.ops.append(
            ReadOp(
                len(self.ops),
                process,
                S,
                from_sequence,
                invoke,
                complete,
                Outcome.OK,
                tuple(records),
                last_sequence,
                linearizable,
            )
        )
        return self

    def check(
        self,
        final: Sequence[tuple[int, bytes]],
        *,
        first_sequence: int = 1,
        strict_failures: bool = False,
    ) -> CheckResult:
        return check_history(
            self.ops, {S: final}, first_sequence=first_sequence, strict_failures=strict_failures
        )


def _three_sequential() -> _Builder:
    return _Builder().append(b"a", 0, 10, 1).append(b"b", 20, 30, 2).append(b"c", 40, 50, 3)


FINAL_ABC = [(1, b"a"), (2, b"b"), (3, b"c")]


def test_valid_sequential_history_passes() -> None:
    result = _three_sequential().read(1, 60, 70, FINAL_ABC, last_sequence=3).check(FINAL_ABC)
    assert result.ok, result.summary()
    assert result.appends_ok == 3 and result.reads_ok == 1


def test_concurrent_appends_may_take_either_order() -> None:
    b = _Builder().append(b"x", 0, 100, 2, process="p0").append(b"y", 10, 90, 1, process="p1")
    assert b.check([(1, b"y"), (2, b"x")]).ok


def test_unknown_append_may_or_may_not_appear() -> None:
    b = _three_sequential().append(b"u", 55, 60, outcome=Outcome.UNKNOWN)
    assert b.check(FINAL_ABC).ok
    result = b.check([*FINAL_ABC, (4, b"u")])
    assert result.ok and result.uncertain_appeared == 1


def test_unknown_append_may_land_after_later_appends() -> None:
    # Its response never came: it may take effect after anything invoked later.
    b = _Builder().append(b"u", 0, 5, outcome=Outcome.UNKNOWN).append(b"a", 10, 20, 1)
    assert b.check([(1, b"a"), (2, b"u")]).ok


def test_failed_append_appearing_is_flagged_only_when_strict() -> None:
    b = _three_sequential().append(b"f", 55, 60, outcome=Outcome.FAILED)
    final = [*FINAL_ABC, (4, b"f")]
    assert b.check(final).ok
    assert b.check(final, strict_failures=True).kinds() == {Kind.FAILED_APPEARED}


def test_lost_acknowledged_write_is_rejected() -> None:
    result = _three_sequential().check([(1, b"a"), (2, b"b")])
    assert result.kinds() == {Kind.LOST}
    assert "b'c'" in result.summary() and "not in the final stream" in result.summary()


def test_duplicate_is_rejected() -> None:
    result = _three_sequential().check([*FINAL_ABC, (4, b"b")])
    assert result.kinds() == {Kind.DUPLICATE}


def test_uncertain_append_appearing_twice_is_rejected() -> None:
    b = _three_sequential().append(b"u", 55, 60, outcome=Outcome.UNKNOWN)
    assert b.check([*FINAL_ABC, (4, b"u"), (5, b"u")]).kinds() == {Kind.DUPLICATE}


def test_phantom_record_is_rejected() -> None:
    result = _three_sequential().check([*FINAL_ABC, (4, b"ghost")])
    assert result.kinds() == {Kind.PHANTOM}


def test_two_records_at_one_sequence_in_final_is_rejected() -> None:
    b = _three_sequential().append(b"u", 55, 60, outcome=Outcome.UNKNOWN)
    result = b.check([*FINAL_ABC, (3, b"u")])
    assert Kind.CONFLICT in result.kinds()


def test_two_records_at_one_sequence_seen_by_a_read_is_rejected() -> None:
    b = _three_sequential().append(b"u", 55, 60, outcome=Outcome.UNKNOWN)
    b.read(3, 70, 80, [(3, b"u")])
    result = b.check(FINAL_ABC)
    assert result.kinds() == {Kind.CONFLICT}


def test_sequence_gap_is_rejected() -> None:
    b = _Builder().append(b"a", 0, 10, 1).append(b"b", 20, 30, 3)
    assert b.check([(1, b"a"), (3, b"b")]).kinds() == {Kind.GAP}


def test_stream_not_starting_at_first_sequence_is_a_gap() -> None:
    assert _Builder().append(b"a", 0, 10, 2).check([(2, b"a")]).kinds() == {Kind.GAP}
    assert _Builder().append(b"a", 0, 10, 0).check([(0, b"a")], first_sequence=0).ok


def test_acknowledged_at_another_sequence_is_rejected() -> None:
    b = _Builder().append(b"a", 0, 10, 1).append(b"b", 0, 10, 1)
    assert b.check([(1, b"a"), (2, b"b")]).kinds() == {Kind.WRONG_SEQUENCE}


def test_real_time_order_violation_is_rejected() -> None:
    # a acknowledged at 10, b invoked at 20, yet a holds the larger sequence.
    b = _Builder().append(b"a", 0, 10, 2).append(b"b", 20, 30, 1)
    result = b.check([(1, b"b"), (2, b"a")])
    assert result.kinds() == {Kind.ORDER}
    assert "b'a' (sequence 2) was acknowledged before b'b'" in result.summary()


def test_unknown_append_invoked_after_an_ack_must_follow_it() -> None:
    b = _Builder().append(b"a", 0, 10, 2).append(b"u", 20, 25, outcome=Outcome.UNKNOWN)
    assert b.check([(1, b"u"), (2, b"a")]).kinds() == {Kind.ORDER}


def test_stale_read_is_rejected() -> None:
    # c was acknowledged at 50; a read invoked at 60 must see sequence 3.
    b = _three_sequential().read(1, 60, 70, FINAL_ABC[:2], last_sequence=2)
    result = b.check(FINAL_ABC)
    assert result.kinds() == {Kind.STALE_READ}
    assert "acknowledged at sequence 3 before the read was invoked" in result.summary()


def test_empty_read_after_ack_is_stale() -> None:
    b = _three_sequential().read(3, 60, 70, [])
    assert b.check(FINAL_ABC).kinds() == {Kind.STALE_READ}


def test_read_concurrent_with_append_may_miss_it() -> None:
    b = _three_sequential().read(1, 45, 70, FINAL_ABC[:2], last_sequence=2)
    assert b.check(FINAL_ABC).ok


def test_stale_flagged_read_is_checked_for_consistency_only() -> None:
    b = _three_sequential().read(1, 60, 70, FINAL_ABC[:1], last_sequence=1, linearizable=False)
    assert b.check(FINAL_ABC).ok
    b.read(1, 80, 90, [(1, b"zz")], linearizable=False)
    assert b.check(FINAL_ABC).kinds() == {Kind.CONFLICT}


def test_non_monotonic_reads_are_rejected() -> None:
    # Both reads are concurrent with the append of c, but the second began
    # after the first had already returned c.
    b = _Builder().append(b"a", 0, 10, 1).append(b"c", 20, 100, 2)
    b.read(1, 30, 40, [(1, b"a"), (2, b"c")], last_sequence=2)
    b.read(1, 50, 60, [(1, b"a")], last_sequence=1)
    result = b.check([(1, b"a"), (2, b"c")])
    assert result.kinds() == {Kind.STALE_READ}
    assert "that completed before it began saw 2" in result.summary()


def test_read_that_is_not_a_contiguous_prefix_is_rejected() -> None:
    b = _three_sequential().read(1, 60, 70, [(1, b"a"), (3, b"c")], last_sequence=3)
    assert b.check(FINAL_ABC).kinds() == {Kind.NOT_PREFIX}


def test_read_seeing_more_than_the_final_stream_is_lost_data() -> None:
    b = _three_sequential().append(b"u", 55, 60, outcome=Outcome.UNKNOWN)
    b.read(4, 70, 80, [(4, b"u")], last_sequence=4)
    assert b.check(FINAL_ABC).kinds() == {Kind.LOST}


def test_read_seeing_the_future_is_rejected() -> None:
    # The read completed at 15, before c was even invoked at 40, yet saw it.
    b = _three_sequential().read(1, 5, 15, FINAL_ABC, last_sequence=3)
    assert Kind.FUTURE_READ in b.check(FINAL_ABC).kinds()


def test_malformed_history_with_repeated_value_is_reported() -> None:
    b = _Builder().append(b"a", 0, 10, 1).append(b"a", 20, 30, 2)
    assert b.check([(1, b"a")]).kinds() == {Kind.BAD_HISTORY}


def test_streams_are_checked_separately() -> None:
    ops: list[Operation] = [
        AppendOp(0, "p", "one", b"a", 0, 10, Outcome.OK, 1),
        AppendOp(1, "p", "two", b"a", 0, 10, Outcome.OK, 1),
    ]
    assert check_history(ops, {"one": [(1, b"a")], "two": [(1, b"a")]}).ok
    result = check_history(ops, {"one": [(1, b"a")]})
    assert [v.stream for v in result.violations] == ["two"]


def test_summary_caps_repeated_violations() -> None:
    b = _Builder()
    for i in range(30):
        b.append(str(i).encode(), i * 10, i * 10 + 5, i + 1)
    text = b.check([]).summary()
    assert "30 violations" in text and "... and 10 more [lost acknowledged append]" in text


# ------------------------------------------------------------------ recorder


def test_recorder_from_threads_keeps_every_operation() -> None:
    rec = HistoryRecorder()
    threads_n, per_thread = 4, 50

    def worker(t: int) -> None:
        for i in range(per_thread):
            op = rec.invoke_append(f"p{t}", S, f"{t}-{i}".encode())
            rec.ok_append(op, t * per_thread + i + 1)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    history = rec.history()
    assert len(history) == threads_n * per_thread
    assert len({op.op_id for op in history}) == len(history)
    assert all(op.outcome is Outcome.OK and op.complete >= op.invoke for op in history)


async def test_recorder_from_tasks_and_pending_ops_are_unknown() -> None:
    rec = HistoryRecorder()

    async def client(name: str) -> None:
        op = rec.invoke_append(name, S, name.encode())
        await asyncio.sleep(0)
        rec.ok_append(op, 1 if name == "a" else 2)

    await asyncio.gather(client("a"), client("b"))
    pending = rec.invoke_append("c", S, b"c")
    read = rec.invoke_read("c", S, 1)
    rec.ok_read(read, [(1, b"a")], last_sequence=2)
    failed = rec.invoke_read("c", S, 1)
    rec.fail(failed)
    history = rec.history()
    by_id = {op.op_id: op for op in history}
    assert by_id[pending].outcome is Outcome.UNKNOWN and by_id[pending].complete == NEVER
    assert by_id[failed].outcome is Outcome.FAILED
    assert check_history(history, {S: [(1, b"a"), (2, b"b"), (3, b"c")]}).ok


def test_recorder_refuses_a_repeated_value() -> None:
    rec = HistoryRecorder()
    rec.invoke_append("p", S, b"v")
    try:
        rec.invoke_append("q", S, b"v")
    except ValueError as e:
        assert "unique" in str(e)
    else:
        raise AssertionError("a repeated value was accepted")


# ------------------------------------------------------------------ simulated stream


@dataclass(frozen=True)
class OpSpec:
    """One client operation of the simulation, drawn by Hypothesis."""

    process: int
    kind: str  # "append" | "read" | "stale_read"
    gap: int  # idle time of the process before invoking
    duration: int
    effect_at: int  # offset of the linearization point after invocation
    outcome: Outcome
    takes_effect: bool  # for uncertain appends: whether the effect happened
    from_offset: int
    limit: int
    reports_last: bool
    staleness: int


op_specs = st.builds(
    OpSpec,
    process=st.integers(0, 3),
    kind=st.sampled_from(["append", "append", "read", "stale_read"]),
    gap=st.integers(0, 5),
    duration=st.integers(0, 20),
    effect_at=st.integers(0, 40),
    outcome=st.sampled_from([Outcome.OK, Outcome.OK, Outcome.OK, Outcome.UNKNOWN, Outcome.FAILED]),
    takes_effect=st.booleans(),
    from_offset=st.integers(0, 30),
    limit=st.integers(1, 40),
    reports_last=st.booleans(),
    staleness=st.integers(0, 5),
)


def simulate(specs: Sequence[OpSpec]) -> tuple[list[Operation], list[tuple[int, bytes]]]:
    """Run the specs against an ideal linearizable stream; return history and final stream."""
    clock = [0] * 4
    effects: list[tuple[int, int, OpSpec, int, int]] = []
    ops: dict[int, Operation] = {}
    for n, spec in enumerate(specs):
        invoke = clock[spec.process] + spec.gap
        complete = invoke + spec.duration
        clock[spec.process] = complete
        ok = spec.outcome is Outcome.OK
        # An OK operation takes effect within its interval; an uncertain append
        # at any point after its invocation, or never.
        at = invoke + (min(spec.effect_at, spec.duration) if ok else spec.effect_at)
        uncertain_effect = spec.kind == "append" and not ok and spec.takes_effect
        if ok or uncertain_effect:
            effects.append((at, n, spec, invoke, complete))
        elif spec.kind == "append":
            ops[n] = AppendOp(
                n, f"p{spec.process}", S, b"v%d" % n, invoke, NEVER, spec.outcome, None
            )
        else:
            ops[n] = _read_op(n, spec, invoke, NEVER, spec.outcome, 1, (), None)
    stream: list[bytes] = []
    for _at, n, spec, invoke, complete in sorted(effects, key=lambda e: (e[0], e[1])):
        proc = f"p{spec.process}"
        if spec.kind == "append":
            stream.append(b"v%d" % n)
            ok = spec.outcome is Outcome.OK
            ops[n] = AppendOp(
                n,
                proc,
                S,
                b"v%d" % n,
                invoke,
                complete if ok else NEVER,
                spec.outcome,
                len(stream) if ok else None,
            )
            continue
        length = len(stream)
        if spec.kind == "stale_read":
            length = max(0, length - spec.staleness)
        from_seq = 1 + spec.from_offset % (length + 1)
        records = tuple(
            (s, stream[s - 1]) for s in range(from_seq, min(length, from_seq + spec.limit - 1) + 1)
        )
        last = length if spec.reports_last else None
        ops[n] = _read_op(n, spec, invoke, complete, Outcome.OK, from_seq, records, last)
    final = [(i + 1, v) for i, v in enumerate(stream)]
    return [ops[n] for n in sorted(ops)], final


def _read_op(
    n: int,
    spec: OpSpec,
    invoke: int,
    complete: float,
    outcome: Outcome,
    from_seq: int,
    records: tuple[tuple[int, bytes], ...],
    last: int | None,
) -> ReadOp:
    return ReadOp(
        n,
        f"p{spec.process}",
        S,
        from_seq,
        invoke,
        complete,
        outcome,
        records,
        last,
        spec.kind == "read",
    )


SIM_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@SIM_SETTINGS
@given(st.lists(op_specs, max_size=40))
def test_simulated_linearizable_histories_pass(specs: list[OpSpec]) -> None:
    history, final = simulate(specs)
    result = check_history(history, {S: final})
    assert result.ok, result.summary()


def _ok_appends(history: Sequence[Operation]) -> list[AppendOp]:
    return [op for op in history if isinstance(op, AppendOp) and op.outcome is Outcome.OK]


def _stale_candidates(history: Sequence[Operation]) -> list[tuple[ReadOp, int]]:
    """Linearizable OK reads that must include an append acknowledged before them."""
    acked = _ok_appends(history)
    out = []
    for op in history:
        if isinstance(op, ReadOp) and op.outcome is Outcome.OK and op.linearizable:
            required = max((a.sequence or 0 for a in acked if a.complete < op.invoke), default=0)
            if required >= op.from_sequence:
                out.append((op, required))
    return out


def _order_candidates(history: Sequence[Operation]) -> list[tuple[AppendOp, AppendOp]]:
    acked = _ok_appends(history)
    return [(a, b) for a in acked for b in acked if a.complete < b.invoke]


MUTATIONS = ["lose", "duplicate", "phantom", "conflict", "gap", "wrong_sequence", "stale", "order"]


@SIM_SETTINGS
@given(st.sampled_from(MUTATIONS), st.lists(op_specs, min_size=8, max_size=40), st.data())
def test_mutated_histories_fail(mutation: str, specs: list[OpSpec], data: st.DataObject) -> None:
    history, final = simulate(specs)
    acked = _ok_appends(history)
    applicable = ["phantom"]
    if final:
        applicable += ["duplicate", "conflict"]
    if len(final) >= 2:
        applicable.append("gap")
    if acked:
        applicable += ["lose", "wrong_sequence"]
    stale = _stale_candidates(history)
    if stale:
        applicable.append("stale")
    order = _order_candidates(history)
    if order:
        applicable.append("order")
    assume(mutation in applicable)
    event(mutation)
    expected: Kind
    if mutation == "phantom":
        final = [*final, (len(final) + 1, b"ghost")]
        expected = Kind.PHANTOM
    elif mutation == "duplicate":
        _, value = data.draw(st.sampled_from(final))
        final = [*final, (len(final) + 1, value)]
        expected = Kind.DUPLICATE
    elif mutation == "conflict":
        seq, _ = data.draw(st.sampled_from(final))
        final = [*final, (seq, b"other")]
        expected = Kind.CONFLICT
    elif mutation == "gap":
        i = data.draw(st.integers(0, len(final) - 2))
        final = final[:i] + final[i + 1 :]
        expected = Kind.GAP
    elif mutation == "lose":
        victim = data.draw(st.sampled_from(acked))
        kept = [v for _, v in final if v != victim.value]
        final = [(i + 1, v) for i, v in enumerate(kept)]
        expected = Kind.LOST
    elif mutation == "wrong_sequence":
        victim = data.draw(st.sampled_from(acked))
        history = [
            replace(op, sequence=(op.sequence or 0) + len(final) + 1) if op is victim else op
            for op in history
        ]
        expected = Kind.WRONG_SEQUENCE
    elif mutation == "stale":
        read, required = data.draw(st.sampled_from(stale))
        shorter = tuple(r for r in read.records if r[0] < required)
        history = [
            replace(op, records=shorter, last_sequence=required - 1) if op is read else op
            for op in history
        ]
        expected = Kind.STALE_READ
    else:
        a, b = data.draw(st.sampled_from(order))
        assert a.sequence is not None and b.sequence is not None
        swap = {a.value: b.value, b.value: a.value}
        final = [(s, swap.get(v, v)) for s, v in final]
        history = [
            replace(op, sequence=b.sequence)
            if op is a
            else replace(op, sequence=a.sequence)
            if op is b
            else op
            for op in history
        ]
        expected = Kind.ORDER
    result = check_history(history, {S: final})
    assert not result.ok, f"{mutation} not detected"
    assert expected in result.kinds(), result.summary()
