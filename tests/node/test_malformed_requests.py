"""Bytes that are not a method's request message: INVALID_ARGUMENT at once, on every method.

Before, a unary method answered ``UNKNOWN: Unexpected <class DecodeError>``
and PutRecordStream hung until the client's deadline. Against a real node,
over raw channels that send bytes as they are.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest

from railyard.proto import commands_pb2 as cmd
from railyard.proto import railyard_pb2 as pb
from tests.support.cluster import LocalCluster

pytestmark = pytest.mark.timeout(120)

# A node answers garbage in milliseconds; the deadline is far beyond, so an
# answer within PROMPT_S is not the deadline expiring.
DEADLINE_S = 20.0
PROMPT_S = 5.0
# Not a protobuf message: field 0 and wire type 7 do not exist.
GARBAGE = (b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x07", b"\x0a\x7fshort")
SERVICES = ("Streams", "Cluster")


def methods() -> list[tuple[str, bool, bool]]:
    """(full method name, request streams, response streams) of every client method."""
    found = []
    for service in SERVICES:
        descriptor = pb.DESCRIPTOR.services_by_name[service]
        for method in descriptor.methods:
            found.append(
                (
                    f"/{descriptor.full_name}/{method.name}",
                    method.client_streaming,
                    method.server_streaming,
                )
            )
    return found


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, grpc.Channel]]:
    cluster = LocalCluster(tmp_path_factory.mktemp("malformed"), 1, name="malformed")
    try:
        cluster.start()
        cluster.wait_for_leader(timeout_s=30)
        with grpc.insecure_channel(cluster.addresses["n1"]) as channel:
            yield cluster, channel
    finally:
        cluster.stop()


def call_raw(
    channel: grpc.Channel, method: str, streaming_in: bool, streaming_out: bool, sent: list[bytes]
) -> None:
    """Send `sent` (raw bytes) to `method`, reading every answer."""
    if streaming_in and streaming_out:
        for _ in channel.stream_stream(method)(iter(sent), timeout=DEADLINE_S):
            pass
    elif streaming_in:
        channel.stream_unary(method)(iter(sent), timeout=DEADLINE_S)
    elif streaming_out:
        for _ in channel.unary_stream(method)(sent[0], timeout=DEADLINE_S):
            pass
    else:
        channel.unary_unary(method)(sent[0], timeout=DEADLINE_S)


def assert_still_serving(cluster: LocalCluster, channel: grpc.Channel) -> None:
    assert cluster.pid("n1") is not None
    status = channel.unary_unary(
        "/railyard.v1.Cluster/Status",
        request_serializer=pb.StatusRequest.SerializeToString,
        response_deserializer=pb.NodeStatus.FromString,
    )(pb.StatusRequest(), timeout=DEADLINE_S)
    assert status.node_id == "n1"


@pytest.mark.parametrize("garbage", GARBAGE, ids=["bad-tag", "truncated"])
@pytest.mark.parametrize(("method", "streaming_in", "streaming_out"), methods())
def test_garbage_is_invalid_argument_promptly(
    node: tuple[LocalCluster, grpc.Channel],
    method: str,
    streaming_in: bool,
    streaming_out: bool,
    garbage: bytes,
) -> None:
    cluster, channel = node
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as refused:
        call_raw(channel, method, streaming_in, streaming_out, [garbage])
    took = time.monotonic() - started
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, refused.value
    name = method.rsplit("/", 1)[-1]
    assert (refused.value.details() or "").startswith(f"{name}: the request is not a valid ")
    assert took < PROMPT_S
    assert_still_serving(cluster, channel)


def test_garbage_after_good_batches_ends_a_put_stream_promptly(
    node: tuple[LocalCluster, grpc.Channel],
) -> None:
    cluster, channel = node
    good = [
        pb.PutRecordsRequest(
            stream="s", records=[cmd.Record(data=b"ok")], producer_id="p", producer_sequence=i
        ).SerializeToString()
        for i in (1, 2)
    ]
    started = time.monotonic()
    answers = []
    with pytest.raises(grpc.RpcError) as refused:
        for answer in channel.stream_stream(
            "/railyard.v1.Streams/PutRecordStream",
            response_deserializer=pb.PutRecordsResponse.FromString,
        )(iter([*good, GARBAGE[0]]), timeout=DEADLINE_S):
            answers.append(answer)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, refused.value
    assert "PutRecordsRequest" in (refused.value.details() or "")
    assert time.monotonic() - started < PROMPT_S
    assert_still_serving(cluster, channel)
    # The node goes on serving puts, the good batches' among them.
    response = channel.unary_unary(
        "/railyard.v1.Streams/PutRecords",
        request_serializer=pb.PutRecordsRequest.SerializeToString,
        response_deserializer=pb.PutRecordsResponse.FromString,
    )(pb.PutRecordsRequest(stream="s", records=[cmd.Record(data=b"after")]), timeout=DEADLINE_S)
    assert response.sequences[0] >= 1


def test_an_untouched_node_refuses_nothing_well_formed(
    node: tuple[LocalCluster, grpc.Channel],
) -> None:
    """The tolerant decoding changes nothing for a good request (empty bytes decode too)."""
    cluster, channel = node
    listed = channel.unary_unary(
        "/railyard.v1.Streams/ListStreams", response_deserializer=pb.ListStreamsResponse.FromString
    )(b"", timeout=DEADLINE_S)
    assert isinstance(listed, pb.ListStreamsResponse)
    assert_still_serving(cluster, channel)


@pytest.fixture(scope="module")
def grpc_peer_node(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalCluster, grpc.Channel]]:
    """A node without a peer_address: it serves the Raft service on its client address."""
    cluster = LocalCluster(
        tmp_path_factory.mktemp("malformed-raft"), 1, name="malformed", peer_tcp=False
    )
    try:
        cluster.start()
        cluster.wait_for_leader(timeout_s=30)
        with grpc.insecure_channel(cluster.addresses["n1"]) as channel:
            yield cluster, channel
    finally:
        cluster.stop()


RAFT = pb.DESCRIPTOR.services_by_name["Raft"]


@pytest.mark.parametrize("method", [m for m in RAFT.methods], ids=[m.name for m in RAFT.methods])
def test_garbage_to_the_raft_service_is_invalid_argument_promptly(
    grpc_peer_node: tuple[LocalCluster, grpc.Channel], method: object
) -> None:
    cluster, channel = grpc_peer_node
    descriptor = RAFT.methods_by_name[method.name]  # type: ignore[attr-defined]
    full = f"/{RAFT.full_name}/{descriptor.name}"
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as refused:
        call_raw(
            channel, full, descriptor.client_streaming, descriptor.server_streaming, [GARBAGE[0]]
        )
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, refused.value
    assert time.monotonic() - started < PROMPT_S
    assert_still_serving(cluster, channel)
