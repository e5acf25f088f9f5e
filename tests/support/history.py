"""Recording client operations and checking them against an append-only stream.

Role: the evidence behind "no acknowledged record is lost". A test records
every operation its clients perform (`HistoryRecorder`, safe to call from
threads and from asyncio tasks); after the cluster has healed it reads the
whole stream once more and hands both to `check_history`, which returns a
`CheckResult` listing every violation in plain words.

The model is one append-only stream per name (Herlihy & Wing
linearizability, specialised so that checking is exact and cheap instead of
a search over orderings):

- the final stream holds dense sequence numbers starting at
  `first_sequence`, one record each;
- every acknowledged append appears exactly once, at the sequence it was
  acknowledged with;
- no record appears that no client ever tried to append, and none twice;
- an append that failed or whose outcome is unknown appears at most once
  (with `strict_failures`, a failed one must not appear at all);
- real-time order: an append acknowledged before another was invoked holds
  the smaller sequence;
- every successful read returns a contiguous piece of the final stream
  starting at its `from_sequence`; a linearizable read sees at least every
  append acknowledged before it was invoked, at least as much as any
  linearizable read that completed before it was invoked, and nothing whose
  append was invoked after the read completed. Stale reads
  (served from a node's applied state) are checked for consistency only.

Because every appended value is unique, the final stream fixes each append's
linearization order, and each rule above is a sweep over sorted times:
O(n log n) for n operations, fine for the hundreds of thousands of
operations of a soak run.

Times are whatever monotonic integers the recorder's clock returns
(nanoseconds by default); only their order matters.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

# Sequences in railyard streams start at 1 (railyard.streams contract).
DEFAULT_FIRST_SEQUENCE = 1
# An operation never completed sorts after every real completion time.
NEVER = float("inf")
# Violations listed per kind before the rest are summarised, so a broken run
# produces a readable report rather than a wall of text.
MAX_REPORTED_PER_KIND = 20


class Outcome(enum.Enum):
    """What the client learned about an operation."""

    OK = "ok"  # acknowledged: the effect happened, exactly once
    FAILED = "failed"  # the server said it did not happen
    UNKNOWN = "unknown"  # timeout, lost connection, crash: may or may not have happened


@dataclass(frozen=True)
class AppendOp:
    """One append of one unique value to a stream."""

    op_id: int
    process: str
    stream: str
    value: bytes
    invoke: float
    complete: float
    outcome: Outcome
    sequence: int | None  # the acknowledged sequence (OK only)


@dataclass(frozen=True)
class ReadOp:
    """One read of a stream from `from_sequence`.

    `last_sequence` is the last sequence of the stream as the server saw it
    when it answered (e.g. next_sequence - 1 + behind_latest), when known; it
    lets a read limited to a few records still prove it was recent enough.
    When None, recency is checked only for a read that returned nothing.
    """

    op_id: int
    process: str
    stream: str
    from_sequence: int
    invoke: float
    complete: float
    outcome: Outcome
    records: tuple[tuple[int, bytes], ...]
    last_sequence: int | None
    linearizable: bool

    @property
    def seen_up_to(self) -> int:
        """A lower bound on the stream's length this read proves (0: none)."""
        last_record = self.records[-1][0] if self.records else 0
        return max(last_record, self.last_sequence or 0)

    @property
    def claimed_end(self) -> int | None:
        """The stream's last sequence as this read claims it, when it claims one.

        With `last_sequence` given, that; with no records returned, the
        server claimed nothing exists at `from_sequence` (it always returns
        at least one record when any exists); otherwise unknown.
        """
        if self.last_sequence is not None:
            return self.last_sequence
        if not self.records:
            return self.from_sequence - 1
        return None


Operation = AppendOp | ReadOp


@dataclass
class _Pending:
    kind: str
    process: str
    stream: str
    invoke: float
    value: bytes = b""
    from_sequence: int = 0
    linearizable: bool = True


class HistoryRecorder:
    """Collects operations from many concurrent clients.

    Usage: `op = rec.invoke_append(proc, stream, value)` before the call, then
    exactly one of `ok_append(op, seq)`, `fail(op)`, `unknown(op)`. Reads:
    `invoke_read(...)` then `ok_read(op, records, last_sequence)` or fail/unknown.
    Operations still pending when `history()` is taken count as UNKNOWN.
    """

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock: Callable[[], float] = clock or time.monotonic_ns
        self._lock = threading.Lock()
        self._next_id = 0
        self._pending: dict[int, _Pending] = {}
        self._done: list[Operation] = []
        self._values: set[tuple[str, bytes]] = set()

    def _start(self, pending: _Pending) -> int:
        with self._lock:
            op_id = self._next_id
            self._next_id += 1
            self._pending[op_id] = pending
            return op_id

    def invoke_append(self, process: str, stream: str, value: bytes) -> int:
        """Record the invocation of an append; values must be unique per stream."""
        with self._lock:
            if (stream, value) in self._values:
                raise ValueError(f"value {value!r} appended twice to {stream!r}: must be unique")
            self._values.add((stream, value))
        return self._start(_Pending("append", process, stream, self._clock(), value=value))

    def invoke_read(
        self, process: str, stream: str, from_sequence: int, *, linearizable: bool = True
    ) -> int:
        return self._start(
            _Pending(
                "read",
                process,
                stream,
                self._clock(),
                from_sequence=from_sequence,
                linearizable=linearizable,
            )
        )

    def ok_append(self, op_id: int, sequence: int) -> None:
        self._finish(op_id, Outcome.OK, sequence=sequence)

    def ok_read(
        self,
        op_id: int,
        records: Iterable[tuple[int, bytes]],
        last_sequence: int | None = None,
    ) -> None:
        self._finish(op_id, Outcome.OK, records=tuple(records), last_sequence=last_sequence)

    def fail(self, op_id: int) -> None:
        """The server definitely did not perform the operation."""
        self._finish(op_id, Outcome.FAILED)

    def unknown(self, op_id: int) -> None:
        """The operation may or may not have taken effect (timeout, crash)."""
        self._finish(op_id, Outcome.UNKNOWN)

    def _finish(
        self,
        op_id: int,
        outcome: Outcome,
        *,
        sequence: int | None = None,
        records: tuple[tuple[int, bytes], ...] = (),
        last_sequence: int | None = None,
    ) -> None:
        now = self._clock()
        with self._lock:
            pending = self._pending.pop(op_id)
            self._done.append(
                _materialise(op_id, pending, now, outcome, sequence, records, last_sequence)
            )

    def history(self) -> list[Operation]:
        """All operations so far; pending ones as UNKNOWN and never completed."""
        with self._lock:
            ops = list(self._done)
            for op_id, pending in self._pending.items():
                ops.append(_materialise(op_id, pending, NEVER, Outcome.UNKNOWN, None, (), None))
        ops.sort(key=lambda op: op.op_id)
        return ops


def _materialise(
    op_id: int,
    p: _Pending,
    complete: float,
    outcome: Outcome,
    sequence: int | None,
    records: tuple[tuple[int, bytes], ...],
    last_sequence: int | None,
) -> Operation:
    # An operation that did not complete cleanly has no meaningful completion
    # time for the model: its effect may land at any later moment.
    end = complete if outcome is Outcome.OK else NEVER
    if p.kind == "append":
        return AppendOp(
            op_id,
            p.process,
            p.stream,
            p.value,
            p.invoke,
            end,
            outcome,
            sequence if outcome is Outcome.OK else None,
        )
    return ReadOp(
        op_id,
        p.process,
        p.stream,
        p.from_sequence,
        p.invoke,
        end,
        outcome,
        records if outcome is Outcome.OK else (),
        last_sequence if outcome is Outcome.OK else None,
        p.linearizable,
    )


class Kind(enum.Enum):
    """Each rule of the model, named for the report."""

    LOST = "lost acknowledged append"
    WRONG_SEQUENCE = "acknowledged at another sequence"
    DUPLICATE = "duplicate record"
    PHANTOM = "record never appended"
    FAILED_APPEARED = "failed append appeared"
    GAP = "sequence gap"
    CONFLICT = "two records at one sequence"
    ORDER = "real-time order violated"
    NOT_PREFIX = "read not a prefix of the stream"
    STALE_READ = "stale read"
    FUTURE_READ = "read saw the future"
    BAD_HISTORY = "malformed history"


@dataclass(frozen=True)
class Violation:
    kind: Kind
    stream: str
    message: str

    def __str__(self) -> str:
        return f"[{self.kind.value}] stream {self.stream!r}: {self.message}"


@dataclass
class CheckResult:
    """The verdict on one history. `ok` is True when there is no violation."""

    violations: list[Violation] = field(default_factory=list)
    appends: int = 0
    appends_ok: int = 0
    appends_uncertain: int = 0  # failed or unknown
    uncertain_appeared: int = 0
    reads: int = 0
    reads_ok: int = 0
    records_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations

    def kinds(self) -> set[Kind]:
        return {v.kind for v in self.violations}

    def summary(self) -> str:
        head = (
            f"{self.appends} appends ({self.appends_ok} ok, {self.appends_uncertain} failed/unknown"
            f" of which {self.uncertain_appeared} appeared), {self.reads} reads"
            f" ({self.reads_ok} ok), {self.records_checked} records in final streams:"
            f" {len(self.violations)} violations"
        )
        lines = [head]
        shown: dict[Kind, int] = {}
        for v in self.violations:
            shown[v.kind] = shown.get(v.kind, 0) + 1
            if shown[v.kind] <= MAX_REPORTED_PER_KIND:
                lines.append(f"  {v}")
        for kind, count in shown.items():
            if count > MAX_REPORTED_PER_KIND:
                lines.append(f"  ... and {count - MAX_REPORTED_PER_KIND} more [{kind.value}]")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def check_history(
    history: Sequence[Operation],
    finals: Mapping[str, Sequence[tuple[int, bytes]]],
    *,
    first_sequence: int = DEFAULT_FIRST_SEQUENCE,
    strict_failures: bool = False,
) -> CheckResult:
    """Check `history` against the final content of every stream it touched.

    `finals[stream]` is the whole stream read after the cluster converged,
    as (sequence, value) pairs in the order the server returned them. A
    stream that the history touches but `finals` lacks is taken as empty.
    """
    result = CheckResult()
    streams = sorted({op.stream for op in history} | set(finals))
    for stream in streams:
        ops = [op for op in history if op.stream == stream]
        _StreamCheck(
            stream, ops, finals.get(stream, ()), first_sequence, strict_failures, result
        ).run()
    return result


class _StreamCheck:
    """The checks of one stream; appends findings to a shared CheckResult."""

    def __init__(
        self,
        stream: str,
        ops: Sequence[Operation],
        final: Sequence[tuple[int, bytes]],
        first_sequence: int,
        strict_failures: bool,
        result: CheckResult,
    ) -> None:
        self.stream = stream
        self.appends = [op for op in ops if isinstance(op, AppendOp)]
        self.reads = [op for op in ops if isinstance(op, ReadOp)]
        self.final = list(final)
        self.first = first_sequence
        self.strict_failures = strict_failures
        self.result = result
        self.by_value: dict[bytes, AppendOp] = {}
        # sequence -> value held by the final stream (first record wins on conflict)
        self.at: dict[int, bytes] = {}
        # sequence -> append that holds it in the final stream
        self.seq_of: dict[int, int] = {}

    def flag(self, kind: Kind, message: str) -> None:
        self.result.violations.append(Violation(kind, self.stream, message))

    def run(self) -> None:
        self.result.appends += len(self.appends)
        self.result.reads += len(self.reads)
        self.result.records_checked += len(self.final)
        if not self.index_appends():
            return
        self.check_final_shape()
        placed = self.check_appends()
        self.check_real_time_order(placed)
        self.check_reads()

    def index_appends(self) -> bool:
        for op in self.appends:
            if op.value in self.by_value:
                self.flag(
                    Kind.BAD_HISTORY, f"value {op.value!r} appended twice: values must be unique"
                )
                return False
            self.by_value[op.value] = op
            if op.outcome is Outcome.OK:
                self.result.appends_ok += 1
            else:
                self.result.appends_uncertain += 1
        return True

    def check_final_shape(self) -> None:
        """Dense sequences, one record each, each value appended once, nothing invented."""
        expected = self.first
        placed_at: dict[bytes, int] = {}
        for sequence, value in self.final:
            if sequence in self.at:
                self.flag(
                    Kind.CONFLICT,
                    f"sequence {sequence} holds both {self.at[sequence]!r} and {value!r}",
                )
                continue
            if sequence != expected:
                self.flag(Kind.GAP, f"expected sequence {expected}, found {sequence} ({value!r})")
            expected = sequence + 1
            self.at[sequence] = value
            if value not in self.by_value:
                self.flag(Kind.PHANTOM, f"sequence {sequence} holds {value!r}, never appended")
            elif value in placed_at:
                self.flag(
                    Kind.DUPLICATE,
                    f"{value!r} appears at sequences {placed_at[value]} and {sequence}",
                )
            else:
                placed_at[value] = sequence

    def check_appends(self) -> list[tuple[AppendOp, int]]:
        """Every acknowledged append present where acknowledged; returns placed appends."""
        first_place: dict[bytes, int] = {}
        for seq, value in sorted(self.at.items()):
            first_place.setdefault(value, seq)
        placed: list[tuple[AppendOp, int]] = []
        for op in self.appends:
            sequence = first_place.get(op.value)
            if op.outcome is Outcome.OK:
                if sequence is None:
                    self.flag(
                        Kind.LOST,
                        f"{op.value!r} by {op.process} acknowledged at sequence {op.sequence}"
                        " is not in the final stream",
                    )
                    continue
                if op.sequence != sequence:
                    self.flag(
                        Kind.WRONG_SEQUENCE,
                        f"{op.value!r} acknowledged at sequence {op.sequence}"
                        f" but the final stream holds it at {sequence}",
                    )
            elif sequence is not None:
                self.result.uncertain_appeared += 1
                if self.strict_failures and op.outcome is Outcome.FAILED:
                    self.flag(
                        Kind.FAILED_APPEARED,
                        f"{op.value!r} by {op.process} failed yet is at sequence {sequence}",
                    )
            if sequence is not None:
                placed.append((op, sequence))
                self.seq_of[sequence] = op.op_id
        return placed

    def check_real_time_order(self, placed: list[tuple[AppendOp, int]]) -> None:
        """If a completed before b was invoked, a's sequence is smaller.

        Sweep over time: completions sorted, invocations sorted; at each
        invocation of b, the largest sequence among appends already
        acknowledged must be below b's.
        """
        completions = sorted(
            ((op.complete, seq, op) for op, seq in placed if op.outcome is Outcome.OK),
            key=lambda t: t[0],
        )
        invocations = sorted(placed, key=lambda t: t[0].invoke)
        best: tuple[int, AppendOp] | None = None
        i = 0
        for op, seq in invocations:
            while i < len(completions) and completions[i][0] < op.invoke:
                if best is None or completions[i][1] > best[0]:
                    best = (completions[i][1], completions[i][2])
                i += 1
            if best is not None and best[0] > seq:
                earlier = best[1]
                self.flag(
                    Kind.ORDER,
                    f"{earlier.value!r} (sequence {best[0]}) was acknowledged before"
                    f" {op.value!r} (sequence {seq}) was invoked, yet holds the larger sequence",
                )

    def check_reads(self) -> None:
        ok_reads = [r for r in self.reads if r.outcome is Outcome.OK]
        self.result.reads_ok += len(ok_reads)
        for read in ok_reads:
            self.check_read_content(read)
        linearizable = [r for r in ok_reads if r.linearizable]
        self.check_reads_recent(linearizable)
        self.check_reads_not_future(linearizable)
        self.check_reads_monotonic(linearizable)

    def check_read_content(self, read: ReadOp) -> None:
        """A read returns final[from_sequence ..] contiguously, and no further than its view."""
        start = max(read.from_sequence, self.first)
        final_last = self.final_last()
        for i, (sequence, value) in enumerate(read.records):
            if sequence != start + i:
                self.flag(
                    Kind.NOT_PREFIX,
                    f"read by {read.process} from {read.from_sequence} returned sequence"
                    f" {sequence} at position {i} (expected {start + i})",
                )
                return
            held = self.at.get(sequence)
            if held is None:
                self.flag(
                    Kind.LOST,
                    f"read by {read.process} saw {value!r} at sequence {sequence},"
                    f" beyond the end of the final stream ({final_last})",
                )
                return
            if held != value:
                self.flag(
                    Kind.CONFLICT,
                    f"read by {read.process} saw {value!r} at sequence {sequence},"
                    f" the final stream holds {held!r} there",
                )
                return
        if read.seen_up_to > final_last:
            self.flag(
                Kind.LOST,
                f"read by {read.process} saw the stream reach {read.seen_up_to},"
                f" the final stream ends at {final_last}",
            )

    def final_last(self) -> int:
        return max(self.at) if self.at else self.first - 1

    def check_reads_recent(self, reads: list[ReadOp]) -> None:
        """A read sees every append acknowledged before it was invoked."""
        completions = sorted(
            (
                (op.complete, op.sequence, op)
                for op in self.appends
                if op.outcome is Outcome.OK and op.sequence is not None
            ),
            key=lambda t: t[0],
        )
        best: tuple[int, AppendOp] | None = None
        i = 0
        for read in sorted(reads, key=lambda r: r.invoke):
            while i < len(completions) and completions[i][0] < read.invoke:
                if best is None or completions[i][1] > best[0]:
                    best = (completions[i][1], completions[i][2])
                i += 1
            end = read.claimed_end
            if best is None or end is None:
                continue
            if best[0] >= read.from_sequence and end < best[0]:
                self.flag(
                    Kind.STALE_READ,
                    f"read by {read.process} from {read.from_sequence} ended at {end},"
                    f" but {best[1].value!r} was acknowledged at sequence {best[0]}"
                    " before the read was invoked",
                )

    def check_reads_not_future(self, reads: list[ReadOp]) -> None:
        """Every record up to what a read saw was invoked before the read completed."""
        final_last = self.final_last()
        # latest_invoke[k]: the latest invocation among the appends at first .. first + k
        latest_invoke: list[float] = []
        running = -NEVER
        for sequence in range(self.first, final_last + 1):
            value = self.at.get(sequence)
            op = self.by_value.get(value) if value is not None else None
            if op is not None:
                running = max(running, op.invoke)
            latest_invoke.append(running)
        for read in reads:
            k = min(read.seen_up_to, final_last) - self.first
            if k >= 0 and latest_invoke[k] > read.complete:
                self.flag(
                    Kind.FUTURE_READ,
                    f"read by {read.process} saw up to sequence {read.seen_up_to} and completed"
                    " before an append at or below that sequence was invoked",
                )

    def check_reads_monotonic(self, reads: list[ReadOp]) -> None:
        """A read sees at least as far as any read that completed before it began."""
        completions = sorted(reads, key=lambda r: r.complete)
        best: ReadOp | None = None
        i = 0
        for read in sorted(reads, key=lambda r: r.invoke):
            while i < len(completions) and completions[i].complete < read.invoke:
                if best is None or completions[i].seen_up_to > best.seen_up_to:
                    best = completions[i]
                i += 1
            end = read.claimed_end
            if best is None or end is None:
                continue
            if best.seen_up_to >= read.from_sequence and end < best.seen_up_to:
                self.flag(
                    Kind.STALE_READ,
                    f"read by {read.process} from {read.from_sequence} ended at {end}, but a read"
                    f" by {best.process} that completed before it began saw {best.seen_up_to}",
                )
