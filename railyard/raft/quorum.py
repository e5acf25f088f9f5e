"""Majority arithmetic: the commit index a quorum has reached and election outcomes.

A quorum is a strict majority of the voters (Raft §5.2, §5.3). These are
pure functions over plain values so they can be property-tested against a
naive model.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence

from railyard.raft.types import NO_INDEX, Index, NodeId


class VoteResult(enum.Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def quorum_size(voter_count: int) -> int:
    """The smallest strict majority of `voter_count` voters."""
    return voter_count // 2 + 1


def committed_index(match_indexes: Sequence[Index]) -> Index:
    """The largest index stored on a quorum: the quorum-th highest match index.

    Insertion sort into a small list: clusters have a handful of voters, and
    this runs on every acknowledgement, so it avoids sorted()'s allocations.
    """
    count = len(match_indexes)
    if count == 0:
        return NO_INDEX
    ordered: list[Index] = []
    for value in match_indexes:
        position = len(ordered)
        ordered.append(value)
        while position > 0 and ordered[position - 1] < value:
            ordered[position] = ordered[position - 1]
            position -= 1
        ordered[position] = value
    return ordered[quorum_size(count) - 1]


def vote_result(voters: Iterable[NodeId], votes: Mapping[NodeId, bool]) -> VoteResult:
    """WON once a quorum granted, LOST once a quorum can no longer grant."""
    granted = rejected = missing = 0
    for voter in voters:
        vote = votes.get(voter)
        if vote is None:
            missing += 1
        elif vote:
            granted += 1
        else:
            rejected += 1
    needed = quorum_size(granted + rejected + missing)
    if granted >= needed:
        return VoteResult.WON
    if granted + missing >= needed:
        return VoteResult.PENDING
    return VoteResult.LOST


def has_quorum(voters: Sequence[NodeId], members: Iterable[NodeId]) -> bool:
    """True when `members` include a quorum of `voters`."""
    present = set(members)
    return sum(1 for voter in voters if voter in present) >= quorum_size(len(voters))
