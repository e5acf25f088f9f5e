"""Majority arithmetic, including a property test against a naive model."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from railyard.raft import Index, NodeId
from railyard.raft.quorum import (
    VoteResult,
    committed_index,
    has_quorum,
    quorum_size,
    vote_result,
)

VOTERS = tuple(NodeId(f"n{i}") for i in range(1, 6))


def naive_committed_index(matches: list[int]) -> int:
    """The largest index that at least a majority have: sort and pick."""
    if not matches:
        return 0
    ordered = sorted(matches)
    return ordered[(len(ordered) - 1) // 2]


@given(st.lists(st.integers(min_value=0, max_value=1_000), min_size=1, max_size=9))
def test_committed_index_matches_sorting_model(matches: list[int]) -> None:
    assert committed_index([Index(m) for m in matches]) == naive_committed_index(matches)


@given(st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=9))
def test_committed_index_is_held_by_a_majority(matches: list[int]) -> None:
    result = committed_index([Index(m) for m in matches])
    holders = sum(1 for m in matches if m >= result)
    assert holders >= quorum_size(len(matches))
    assert sum(1 for m in matches if m >= result + 1) < quorum_size(len(matches))


def test_quorum_sizes() -> None:
    assert [quorum_size(n) for n in range(1, 8)] == [1, 2, 2, 3, 3, 4, 4]


def test_committed_index_examples() -> None:
    assert committed_index([Index(5), Index(3), Index(1)]) == 3
    assert committed_index([Index(2), Index(2), Index(9), Index(9), Index(0)]) == 2
    assert committed_index([Index(7)]) == 7
    assert committed_index([]) == 0


def test_vote_result() -> None:
    three = VOTERS[:3]
    assert vote_result(three, {three[0]: True}) is VoteResult.PENDING
    assert vote_result(three, {three[0]: True, three[1]: True}) is VoteResult.WON
    assert vote_result(three, {three[0]: True, three[1]: False}) is VoteResult.PENDING
    assert vote_result(three, {three[0]: False, three[1]: False}) is VoteResult.LOST
    assert vote_result(VOTERS[:1], {VOTERS[0]: True}) is VoteResult.WON
    # Votes from non-voters do not count.
    assert vote_result(three, {three[0]: True, NodeId("x"): True}) is VoteResult.PENDING


def test_has_quorum() -> None:
    assert has_quorum(VOTERS, VOTERS[:3])
    assert not has_quorum(VOTERS, VOTERS[:2])
    assert not has_quorum(VOTERS, [NodeId("x"), NodeId("y"), NodeId("z")])
