"""Small synchronous helpers over the raw gRPC stubs, for the cluster tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import grpc

from railyard.proto import commands_pb2 as cmd
from railyard.proto import railyard_pb2 as pb
from tests.support.cluster import LocalCluster

T = TypeVar("T")

CALL_TIMEOUT_S = 2.0
RETRY_PAUSE_S = 0.05


# A node the test kills has its channel closed by `LocalCluster.kill`, from
# another thread too: a call in flight on it then ends CANCELLED with this
# text. To the caller that is the node going away, as UNAVAILABLE is.
CHANNEL_CLOSED = "Channel closed!"


def _node_went_away(exc: grpc.RpcError) -> bool:
    code = exc.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return True
    return code is grpc.StatusCode.CANCELLED and exc.details() == CHANNEL_CLOSED


def with_retries(
    cluster: LocalCluster,
    call: Callable[[str], T],
    *,
    among: list[str] | None = None,
    timeout_s: float = 20.0,
) -> T:
    """`call(node_id)` until it succeeds, moving to the leader named by UNAVAILABLE
    (or the next node) after UNAVAILABLE / DEADLINE_EXCEEDED, like a client does
    (and after a call cut by the test closing a killed node's channel)."""
    ids = among if among is not None else cluster.node_ids
    deadline = time.monotonic() + timeout_s
    target = ids[0]
    attempt = 0
    last_error: grpc.RpcError | None = None
    while time.monotonic() < deadline:
        try:
            return call(target)
        except grpc.RpcError as exc:
            last_error = exc
            if not _node_went_away(exc):
                raise
            metadata = {m.key: m.value for m in exc.trailing_metadata() or ()}
            hint = metadata.get("railyard-leader")
            attempt += 1
            target = hint if isinstance(hint, str) and hint in ids else ids[attempt % len(ids)]
            time.sleep(RETRY_PAUSE_S)
    raise TimeoutError(f"no success within {timeout_s}s: {last_error}\n{cluster.logs()[-8000:]}")


def put_exactly_once(
    cluster: LocalCluster,
    stream: str,
    data: bytes,
    producer_id: str,
    producer_sequence: int,
    *,
    among: list[str] | None = None,
    timeout_s: float = 20.0,
) -> int:
    """Put one record, retrying with the same producer identity until acknowledged."""
    request = pb.PutRecordRequest(
        stream=stream, data=data, producer_id=producer_id, producer_sequence=producer_sequence
    )

    def put(node: str) -> int:
        response = cluster.streams_stub(node).PutRecord(request, timeout=CALL_TIMEOUT_S)
        return int(response.sequence)

    return with_retries(cluster, put, among=among, timeout_s=timeout_s)


def read_all(
    cluster: LocalCluster, node_id: str, stream: str, *, stale: bool = True
) -> list[bytes]:
    """Every record of `stream` as `node_id` holds it, in sequence order."""
    out: list[bytes] = []
    sequences: list[int] = []
    next_sequence = 1
    for _ in range(10_000):
        response = cluster.streams_stub(node_id).GetRecords(
            pb.GetRecordsRequest(stream=stream, from_sequence=next_sequence, stale=stale),
            timeout=CALL_TIMEOUT_S,
        )
        out += [r.data for r in response.records]
        sequences += [r.sequence for r in response.records]
        if not response.records:
            break
        next_sequence = response.next_sequence
    assert sequences == list(range(1, len(sequences) + 1)), "sequences are not dense from 1"
    return out


def create_stream(cluster: LocalCluster, node_id: str, name: str) -> pb.StreamInfo:
    """Create `name` (asking `node_id` first); creating it again is harmless."""
    request = pb.CreateStreamRequest(name=name, retention=cmd.Retention())

    def create(node: str) -> pb.StreamInfo:
        return cluster.streams_stub(node).CreateStream(request, timeout=CALL_TIMEOUT_S).stream

    return with_retries(cluster, create, among=[node_id, *cluster.node_ids])
