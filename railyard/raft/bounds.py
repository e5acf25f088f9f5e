"""Bounds on the terms and indexes a core accepts from its peers.

Terms and indexes are stored in SQLite's signed 64-bit INTEGER and grow by
one at a time (a term per election, an index per entry). A value near 2^63
therefore never comes from a working peer: taken in, it would be persisted
and crash the node on the next `+ 1` (`Python int too large to convert to
SQLite INTEGER`), at every restart. `refusal` names what is wrong with such
a message so the core drops it before it changes anything and the driver
logs why.

- Every term and index a message carries is at most `MAX_TERM` / `MAX_INDEX`,
  2^53: far below 2^63 (any sum the code makes of them still fits), exact in
  a JSON number, and out of reach in practice (a term per millisecond for
  285,000 years, an index per microsecond for 285 years).
- A message may raise the receiver's term by at most `MAX_TERM_JUMP`. With
  PreVote a partitioned node does not inflate its term, so the cluster's term
  moves by one per election; a jump of 2^32 is billions of elections the
  receiver would have missed. Refusing it keeps one absurd message from
  using up the term space.

Knows nothing of storage or the network; the core calls it from `step`.
"""

from __future__ import annotations

from railyard.raft.types import NO_TERM, Message, Term

MAX_TERM = Term(1 << 53)
MAX_INDEX = 1 << 53
MAX_TERM_JUMP = 1 << 32


def refusal(message: Message, current_term: Term) -> str | None:
    """Why `message` must be dropped as absurd, or None when its numbers are sane."""
    if message.term > MAX_TERM:
        return f"term {message.term} is above the bound {MAX_TERM}"
    if message.term > current_term + MAX_TERM_JUMP:
        return (
            f"term {message.term} jumps more than {MAX_TERM_JUMP} past the current term"
            f" {current_term}"
        )
    for name, value in _indexes_and_terms(message):
        if value > MAX_INDEX:
            return f"{name} {value} is above the bound {MAX_INDEX}"
    newest = max((entry.term for entry in message.entries), default=NO_TERM)
    if message.snapshot is not None:
        newest = max(newest, message.snapshot.term)
    if newest > message.term:
        return f"carries term {newest}, newer than the message's term {message.term}"
    previous = message.prev_log_index
    for position, entry in enumerate(message.entries):
        if entry.index != previous + 1 + position:
            return f"entry {position} has index {entry.index}, expected {previous + 1 + position}"
    return None


def _indexes_and_terms(message: Message) -> list[tuple[str, int]]:
    """Every other term and index field of `message` (terms share the index bound)."""
    fields = [
        ("prev_log_index", message.prev_log_index),
        ("prev_log_term", message.prev_log_term),
        ("leader_commit", message.leader_commit),
        ("last_log_index", message.last_log_index),
        ("last_log_term", message.last_log_term),
        ("match_index", message.match_index),
        ("conflict_index", message.conflict_index),
        ("conflict_term", message.conflict_term),
        ("read_index", message.read_index),
    ]
    if message.entries:
        fields.append(("last entry index", message.entries[-1].index))
    if message.snapshot is not None:
        fields.append(("snapshot index", message.snapshot.index))
        fields.append(("snapshot term", message.snapshot.term))
    return fields
