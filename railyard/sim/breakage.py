"""Deliberately broken variants of the core, to prove the checker catches real bugs.

Test-only: `python -m railyard.sim --break RULE` patches one rule of the
core in this process, for the run, and restores it afterwards. Each break is
a classic Raft bug:

- vote-without-log-check: grant votes without the election restriction
  (Raft §5.4.1), so a candidate missing committed entries can win.
- commit-old-term: count replicas for entries of earlier terms (the Figure 8
  hazard, Raft §5.4.2), so an entry can be committed and then overwritten.
- ack-before-persist: send durability promises (vote grants, append
  acknowledgements) before the fsync, so a crash takes back what a peer
  already counted.
- read-without-quorum: answer ReadIndex at once from the leader's commit
  index, without the heartbeat round or the wait for a commit of its own
  term (Raft §6.4), so a deposed or brand-new leader serves stale reads.
- concurrent-changes: let a leader start a membership change while the
  previous one is uncommitted (dissertation §4.1 allows one at a time), so two
  single-server steps can be in flight and old and new majorities need not
  overlap. Caught only with `--membership`, which makes changes.

The patches reach into the core's internals by name; if those names change,
`broken` fails loudly rather than silently testing the unbroken core.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

from railyard.raft import (
    ChangeInProgress,
    Index,
    RaftCore,
    Ready,
    Term,
    membership,
    reads,
    replication,
)
from railyard.raft import log as raft_log
from railyard.raft.quorum import committed_index


def _always_up_to_date(self: Any, last_index: Index, last_term: Term) -> bool:
    return True


def _maybe_commit_any_term(core: Any) -> bool:
    progress = core.progress
    quorum_index = committed_index([progress[voter].match_index for voter in core.voters])
    if quorum_index <= core.log.committed:
        return False
    core.log.commit_to(quorum_index)  # no check that the entry is of the current term
    core.on_commit_advanced()
    return True


_ORIGINAL_READY = RaftCore.ready


def _ready_acks_at_once(self: RaftCore) -> Ready:
    ready = _ORIGINAL_READY(self)
    return dataclasses.replace(
        ready, messages=ready.messages + ready.persisted_messages, persisted_messages=()
    )


def _read_at_once(self: Any, core: Any, requester: Any, context: int) -> None:
    reads.deliver(core, requester, context, core.log.committed)


def _check_own_term_only(core: Any) -> None:
    log = core.log
    if log.term(log.committed) != core.current_term:
        raise ChangeInProgress("the leader has not yet committed an entry of its term")
    # no check that the previous change is committed


# Each break: (object to patch, attribute, replacement).
BREAKS: dict[str, tuple[object, str, Callable[..., Any]]] = {
    "vote-without-log-check": (raft_log.RaftLog, "is_up_to_date", _always_up_to_date),
    "commit-old-term": (replication, "maybe_commit", _maybe_commit_any_term),
    "ack-before-persist": (RaftCore, "ready", _ready_acks_at_once),
    "read-without-quorum": (reads.ReadTracker, "request", _read_at_once),
    "concurrent-changes": (membership, "check_can_change", _check_own_term_only),
}


def apply(name: str) -> Callable[[], None]:
    """Break rule `name` in this process; returns the function that mends it."""
    target, attribute, replacement = BREAKS[name]
    original = getattr(target, attribute)  # AttributeError: the core renamed it
    setattr(target, attribute, replacement)
    return lambda: setattr(target, attribute, original)


@contextlib.contextmanager
def broken(name: str | None) -> Iterator[None]:
    """Run the body with rule `name` broken (None: the real core)."""
    if name is None:
        yield
        return
    mend = apply(name)
    try:
        yield
    finally:
        mend()
