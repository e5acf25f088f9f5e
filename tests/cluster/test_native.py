"""The native put port on real nodes: puts, leader hints, hostile frames, limits, failover.

The client's per-call puts with `transport="native"` travel as frames on
each node's `native_address`; these tests drive it through `RailyardClient`
as a user would, and through raw sockets as a hostile or broken client would.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from railyard.client import RailyardClient
from railyard.client.errors import ResourceExhausted
from railyard.proto import railyard_pb2 as pb
from tests.cluster.helpers import create_stream, read_all
from tests.support.cluster import LocalCluster

pytestmark = pytest.mark.timeout(90)

PREAMBLE = b"RAILYARD-NATIVE/1\n"
HEADER = struct.Struct(">IQ")
SOCKET_TIMEOUT_S = 15.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    running = LocalCluster(tmp_path_factory.mktemp("native"), native=True)
    try:
        running.start()
        running.wait_for_leader()
        yield running
    finally:
        running.stop()


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def frame(request_id: int, message: pb.NativeRequest | bytes) -> bytes:
    body = message if isinstance(message, bytes) else message.SerializeToString()
    return HEADER.pack(len(body), request_id) + body


def read_answer(sock: socket.socket) -> tuple[int, pb.NativeResponse] | None:
    """The next (id, answer) on `sock`, or None when the node closed the connection."""
    header = _read_exactly(sock, HEADER.size)
    if header is None:
        return None
    size, answer_id = HEADER.unpack(header)
    body = _read_exactly(sock, size)
    assert body is not None, "the connection ended inside an answer"
    return answer_id, pb.NativeResponse.FromString(body)


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        try:
            chunk = sock.recv(n - len(data))
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        data += chunk
    return data


@contextlib.contextmanager
def raw(
    address: str, preamble: bytes = PREAMBLE, *, welcome: bool = True
) -> Iterator[socket.socket]:
    """A connection sending `preamble`; with `welcome`, the node's acceptance is read first."""
    sock = socket.create_connection(host_port(address), timeout=SOCKET_TIMEOUT_S)
    try:
        if preamble:
            sock.sendall(preamble)
        if welcome:
            accepted = read_answer(sock)
            assert accepted is not None and accepted[0] == 0
            assert accepted[1].WhichOneof("body") is None
        yield sock
    finally:
        sock.close()


def put_frame(request_id: int, stream: str, data: bytes, producer: str = "") -> bytes:
    request = pb.NativeRequest(
        timeout_ms=5000,
        put_record=pb.PutRecordRequest(
            stream=stream, data=data, producer_id=producer, producer_sequence=request_id
        ),
    )
    return frame(request_id, request)


def test_concurrent_native_puts_are_each_applied_once_in_each_callers_order(
    cluster: LocalCluster,
) -> None:
    callers, per_caller = 32, 20

    async def go() -> tuple[dict[str, int], list[list[int]]]:
        async with RailyardClient(cluster.endpoints, coalesce=False, transport="native") as client:

            async def caller(c: int) -> list[int]:
                return [await client.put("fast", b"%d-%d" % (c, i)) for i in range(per_caller)]

            sequences = await asyncio.gather(*(caller(c) for c in range(callers)))
            return dict(client.puts_by_transport), list(sequences)

    used, sequences = asyncio.run(go())
    assert used == {"grpc": 0, "native": callers * per_caller}
    flat = [s for caller in sequences for s in caller]
    assert len(set(flat)) == len(flat)
    for caller in sequences:
        assert caller == sorted(caller)
    records = read_all(cluster, cluster.wait_for_leader(), "fast")
    assert len(records) == callers * per_caller
    by_data = {data: i + 1 for i, data in enumerate(records)}
    for c, caller in enumerate(sequences):
        assert [by_data[b"%d-%d" % (c, i)] for i in range(per_caller)] == caller


def test_status_names_the_native_address(cluster: LocalCluster) -> None:
    for node_id in cluster.node_ids:
        status = cluster.status(node_id)
        assert status is not None
        assert status.native_address == cluster.native_addresses[node_id]


def test_a_follower_names_the_leader_and_applies_nothing(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    follower = next(n for n in cluster.node_ids if n != leader)
    create_stream(cluster, leader, "hinted")
    with raw(cluster.native_addresses[follower]) as sock:
        sock.sendall(put_frame(7, "hinted", b"x", producer="p"))
        got = read_answer(sock)
    assert got is not None and got[0] == 7
    answer = got[1]
    assert answer.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert answer.error.metadata["railyard-leader"] == leader
    assert answer.error.metadata["railyard-leader-address"] == cluster.addresses[leader]
    assert read_all(cluster, leader, "hinted") == []


def test_a_wrong_preamble_is_refused_and_closed_and_the_node_serves_on(
    cluster: LocalCluster,
) -> None:
    leader = cluster.wait_for_leader()
    before = cluster.status(leader)
    with raw(cluster.native_addresses[leader], preamble=b"GET / HTTP/1.1\r\n\r\n") as sock:
        got = read_answer(sock)
        assert got is not None and got[0] == 0
        assert got[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert "expected b'RAILYARD-NATIVE/1\\n' first" in got[1].error.message
        assert read_answer(sock) is None  # closed
    with raw(cluster.native_addresses[leader]) as sock:
        sock.sendall(put_frame(1, "after-garbage", b"fine"))
        got = read_answer(sock)
    assert got is not None and got[1].HasField("put_record")
    after = cluster.status(leader)
    assert before is not None and after is not None
    assert after.term == before.term and after.role == pb.ROLE_LEADER


def test_bad_requests_are_refused_alone_and_the_connection_goes_on(
    cluster: LocalCluster,
) -> None:
    """Oversized (its bytes skipped unread), undecodable, empty, invalid: each by its id."""
    leader = cluster.wait_for_leader()
    oversized = 2 << 20
    with raw(cluster.native_addresses[leader]) as sock:
        sock.sendall(HEADER.pack(oversized, 2) + bytes(oversized))
        sock.sendall(frame(3, b"\xff\xff\xff\xff not protobuf"))
        sock.sendall(frame(4, b""))
        sock.sendall(put_frame(5, "", b"no stream"))
        sock.sendall(put_frame(6, "valid-after", b"ok"))
        answers = dict(a for a in (read_answer(sock) for _ in range(5)) if a is not None)
    assert sorted(answers) == [2, 3, 4, 5, 6]
    codes = {i: answers[i].error.code for i in (2, 3, 4, 5)}
    assert codes == {
        2: grpc.StatusCode.INVALID_ARGUMENT.value[0],
        3: grpc.StatusCode.INVALID_ARGUMENT.value[0],
        4: grpc.StatusCode.UNIMPLEMENTED.value[0],
        5: grpc.StatusCode.INVALID_ARGUMENT.value[0],
    }
    assert f"a request of {oversized} bytes is over the limit" in answers[2].error.message
    assert "stream" in answers[5].error.message
    assert answers[6].HasField("put_record")


def test_a_refusal_comes_after_the_answers_of_every_request_read(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    with raw(cluster.native_addresses[leader]) as sock:
        sock.sendall(put_frame(1, "refused-after", b"first") + frame(0, b""))
        first = read_answer(sock)
        refusal = read_answer(sock)
        closed = read_answer(sock)
    assert first is not None and first[0] == 1 and first[1].HasField("put_record")
    assert refusal is not None and refusal[0] == 0
    assert "id 0 is reserved" in refusal[1].error.message
    assert closed is None
    assert read_all(cluster, leader, "refused-after") == [b"first"]


def test_a_flood_of_tiny_requests_unread_does_not_stall_the_leader(cluster: LocalCluster) -> None:
    """Six connections each write 256 KiB of empty requests and never read the answers.

    Every answer is small but each request is smaller still: answered all at
    once they would queue megabytes per connection and hold the event loop
    for hundreds of milliseconds per read, past the heartbeats.
    """
    leader = cluster.wait_for_leader()
    before = cluster.status(leader)
    flood = b"".join(frame(i, b"") for i in range(1, (256 << 10) // HEADER.size))
    sockets = [
        socket.create_connection(host_port(cluster.native_addresses[leader]), timeout=2)
        for _ in range(6)
    ]
    try:
        for sock in sockets:
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.send(PREAMBLE + flood)
        time.sleep(3)
        after = cluster.status(leader)
    finally:
        for sock in sockets:
            sock.close()
    assert before is not None and after is not None
    assert after.term == before.term and after.role == pb.ROLE_LEADER


def test_silent_and_dripping_connections_are_closed(cluster: LocalCluster) -> None:
    """No preamble within 5 s, or a frame unfinished after 10 s: the node hangs up."""
    leader = cluster.wait_for_leader()
    address = cluster.native_addresses[leader]
    started = time.monotonic()
    with raw(address, preamble=b"") as silent, raw(address) as dripping:
        dripping.sendall(HEADER.pack(1000, 1) + b"only part of it")
        assert read_answer(silent) is None
        assert read_answer(dripping) is None
    # Both bounds hold: closed, and not before the first of them.
    assert 4.0 <= time.monotonic() - started < SOCKET_TIMEOUT_S


def test_puts_beyond_max_inflight_per_connection_and_connections_beyond_the_limit(
    tmp_path: Path,
) -> None:
    single = LocalCluster(tmp_path, 1, name="narrow", native=True)
    single.config_path.write_text(
        single.config_path.read_text()
        + "\n[limits]\nmax_inflight_per_connection = 4\nmax_native_connections = 2\n"
    )
    try:
        single.start()
        single.wait_for_leader(timeout_s=30)
        address = single.native_addresses["n1"]
        with raw(address) as sock:
            # Twenty requests in one write: they arrive together, four are taken.
            sock.sendall(b"".join(put_frame(i, "narrow", b"r", f"p{i}") for i in range(1, 21)))
            got = [read_answer(sock) for _ in range(20)]
        answers = [a[1] for a in got if a is not None]
        assert len(answers) == 20
        done = [a for a in answers if a.HasField("put_record")]
        refused = [a for a in answers if a.HasField("error")]
        assert len(done) == 4
        assert len(refused) == 16
        for answer in refused:
            assert answer.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            assert "[limits] max_inflight_per_connection" in answer.error.message

        async def through_client() -> None:
            async with RailyardClient(
                single.endpoints, coalesce=False, transport="native"
            ) as client:
                with pytest.raises(ResourceExhausted, match="max_inflight_per_connection"):
                    await asyncio.gather(*(client.put("narrow", b"c") for _ in range(40)))

        asyncio.run(through_client())

        # Two connections held open: a third is refused, and the client goes over gRPC.
        with raw(address) as first, raw(address) as second:
            for sock in (first, second):
                sock.sendall(put_frame(1, "narrow", b"held", f"held-{sock.fileno()}"))
                assert read_answer(sock) is not None
            with raw(address, welcome=False) as third:
                got = read_answer(third)
                assert got is not None and got[0] == 0
                assert got[1].error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
                assert "[limits] max_native_connections" in got[1].error.message
                assert read_answer(third) is None

            async def falls_back() -> dict[str, int]:
                async with RailyardClient(
                    single.endpoints, coalesce=False, transport="native"
                ) as client:
                    for i in range(3):
                        await client.put("narrow", b"fallback-%d" % i)
                    return dict(client.puts_by_transport)

            assert asyncio.run(falls_back()) == {"grpc": 3, "native": 0}
    finally:
        single.stop()


def test_native_puts_survive_a_leader_kill_exactly_once(tmp_path: Path) -> None:
    failing = LocalCluster(tmp_path, name="native-failover", native=True)
    callers, per_caller = 16, 40
    try:
        failing.start()
        first = failing.wait_for_leader()
        killed = asyncio.Event()

        async def go() -> list[list[int]]:
            async with RailyardClient(
                failing.endpoints, coalesce=False, transport="native", timeout_s=30
            ) as client:
                await client.put("survive", b"warm-up")

                async def caller(c: int) -> list[int]:
                    out = []
                    for i in range(per_caller):
                        out.append(await client.put("survive", b"%d-%d" % (c, i)))
                        if c == 0 and i == per_caller // 4:
                            failing.kill(first)
                            killed.set()
                    return out

                return list(await asyncio.gather(*(caller(c) for c in range(callers))))

        sequences = asyncio.run(go())
        assert killed.is_set()
        leader = failing.wait_for_leader()
        assert leader != first
        records = read_all(failing, leader, "survive", stale=False)
        assert len(records) == len(set(records)), "a put was applied twice"
        assert len(records) == callers * per_caller + 1
        by_data = {data: i + 1 for i, data in enumerate(records)}
        for c, caller in enumerate(sequences):
            assert [by_data[b"%d-%d" % (c, i)] for i in range(per_caller)] == caller
    finally:
        failing.stop()
