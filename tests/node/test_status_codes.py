"""Outcomes -> gRPC status codes: the hints a client reads from trailing metadata."""

from __future__ import annotations

import grpc

from railyard.node.api.status_codes import (
    LAST_PRODUCER_SEQUENCE_KEY,
    LEADER_ID_KEY,
    MAYBE_APPLIED_KEY,
    AlreadyApplied,
    abort,
    exception_error,
    result_error,
)
from railyard.node.driver import LeadershipLost
from railyard.raft import NodeId, NotLeader
from railyard.streams import StaleProducerSequence


class Context:
    """What `abort` uses of a servicer context: records the abort."""

    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]] | None = None

    async def abort(
        self, code: grpc.StatusCode, message: str, trailing_metadata: tuple[tuple[str, str], ...]
    ) -> None:
        self.aborted = (code, message, trailing_metadata)


async def aborted_with(exc: Exception) -> tuple[grpc.StatusCode, dict[str, str]]:
    error = exception_error(exc)
    assert error is not None
    context = Context()
    await abort(context, error, {"n2": "127.0.0.1:7002"})  # type: ignore[arg-type]
    assert context.aborted is not None
    code, _, trailing = context.aborted
    return code, dict(trailing)


async def test_a_write_whose_leader_changed_is_maybe_applied_and_names_the_new_leader() -> None:
    code, trailing = await aborted_with(LeadershipLost(NodeId("n2")))
    assert code is grpc.StatusCode.UNAVAILABLE
    assert MAYBE_APPLIED_KEY in trailing
    assert trailing[LEADER_ID_KEY] == "n2"


async def test_a_write_refused_before_proposing_is_not_maybe_applied() -> None:
    code, trailing = await aborted_with(NotLeader(NodeId("n2")))
    assert code is grpc.StatusCode.UNAVAILABLE
    assert MAYBE_APPLIED_KEY not in trailing
    assert trailing[LEADER_ID_KEY] == "n2"


def test_a_stale_producer_sequence_is_already_applied_and_names_the_last() -> None:
    error = result_error(StaleProducerSequence("p", 3, 100))
    assert isinstance(error, AlreadyApplied)
    assert error.code is grpc.StatusCode.FAILED_PRECONDITION
    assert dict(error.trailing) == {LAST_PRODUCER_SEQUENCE_KEY: "100"}
