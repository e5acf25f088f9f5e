"""The TCP peer transport: frames in order, refusals named, nothing after a bad frame.

A real `PeerListener` on a free port feeds a recording sink; the dialling
side is either `tcp.connect` or a raw socket writing hand-made bytes.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator, Sequence

import pytest

from railyard.node.peers import tcp
from railyard.node.peers.codec import envelope, message_to_pb
from railyard.node.peers.links import PeerLink
from railyard.node.peers.proxy import Proxy, proxy_for
from railyard.proto import railyard_pb2 as pb
from railyard.raft import Message, MessageType, NodeId, Term
from tests.support.cluster import HOST, free_ports

LOG = logging.getLogger("test")
N1 = pb.Peer(cluster="c", node_id="n1")
N2 = pb.Peer(cluster="c", node_id="n2")
# Long enough for loopback on a loaded 2-core machine.
WAIT_S = 5.0


class Sink:
    """Accepts node n1 of cluster "c" (unless told to refuse) and records what arrives."""

    def __init__(self, refuse: str | None = None, problem: str | None = None) -> None:
        self.refuse = refuse
        self.problem = problem
        self.delivered: list[tuple[str, int]] = []  # (sender, term) per message
        self.ended: list[str] = []
        self.changed = asyncio.Event()

    def refusal(self, sender: pb.Peer) -> str | None:
        return self.refuse

    async def deliver(self, sender: pb.Peer, messages: Sequence[pb.RaftMessage]) -> str | None:
        self.delivered += [(sender.node_id, m.term) for m in messages]
        self.changed.set()
        return self.problem

    def pipe_ended(self, node_id: str) -> None:
        self.ended.append(node_id)
        self.changed.set()


def heartbeat(term: int, sender: str = "n1") -> pb.RaftMessage:
    return message_to_pb(
        Message(type=MessageType.HEARTBEAT, to=NodeId("n2"), sender=NodeId(sender), term=Term(term))
    )


def payload(term: int, peer: pb.Peer = N1) -> bytes:
    return envelope(peer, [heartbeat(term, peer.node_id)]).SerializeToString()


async def until(predicate: object) -> None:
    assert callable(predicate)
    async with asyncio.timeout(WAIT_S):
        while not predicate():
            await asyncio.sleep(0.005)


@pytest.fixture
async def listener() -> AsyncIterator[tcp.PeerListener]:
    listener = tcp.PeerListener(address=f"{HOST}:{free_ports(1)[0]}", sink=Sink(), log=LOG)
    await listener.start()
    try:
        yield listener
    finally:
        await listener.close()


@pytest.fixture
def listening(listener: tcp.PeerListener) -> tuple[Sink, str]:
    assert isinstance(listener.sink, Sink)
    return listener.sink, listener.address


async def test_frames_arrive_in_order_and_the_end_is_reported(
    listening: tuple[Sink, str],
) -> None:
    sink, address = listening
    conn = await tcp.connect(address, on_end=lambda: None, proxy=None)
    for term in (1, 2, 3):
        conn.send(payload(term))
    await until(lambda: len(sink.delivered) == 3)
    assert sink.delivered == [("n1", 1), ("n1", 2), ("n1", 3)]
    conn.abort()
    await until(lambda: sink.ended)
    assert sink.ended == ["n1"]


@pytest.mark.parametrize(
    ("refuse", "problem", "delivered"),
    [
        ("node n2 of cluster 'c' refuses node 'x'", None, []),
        (None, "messages: unknown message type 99", [("n1", 1)]),
    ],
    ids=["refused-sender", "malformed-message"],
)
async def test_the_dialler_learns_why_it_was_refused_and_nothing_more_arrives(
    listening: tuple[Sink, str],
    refuse: str | None,
    problem: str | None,
    delivered: list[tuple[str, int]],
) -> None:
    sink, address = listening
    sink.refuse, sink.problem = refuse, problem
    ended = asyncio.Event()
    conn = await tcp.connect(address, on_end=ended.set, proxy=None)
    conn.send(payload(1))
    async with asyncio.timeout(WAIT_S):
        await ended.wait()
    assert isinstance(conn.ended, tcp.PeerRefused)
    assert str(conn.ended) == (refuse or problem)
    with pytest.raises(tcp.PeerRefused):
        conn.send(payload(2))
    assert sink.delivered == delivered  # the sink saw the malformed message, and refused it
    # A sender never accepted is never probed either.
    await until(lambda: sink.ended == ([] if refuse else ["n1"]))
    conn.abort()


async def raw_exchange(address: str, data: bytes) -> bytes:
    """Write `data` on a fresh connection; everything the listener answers before closing."""
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    try:
        async with asyncio.timeout(WAIT_S):
            return await reader.read()
    finally:
        writer.transport.abort()


def refusal_text(answer: bytes) -> str:
    (size,) = struct.unpack(">I", answer[:4])
    return answer[4 : 4 + size].decode()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "expected the railyard peer protocol"),
        (tcp.PREAMBLE + struct.pack(">I", (64 << 20) + 1), "at most"),
        (tcp.PREAMBLE + tcp.frame(b"\xff\xff\xff"), "malformed envelope"),
        (
            tcp.PREAMBLE
            + tcp.frame(payload(1))
            + tcp.frame(payload(2, N2))
            + tcp.frame(payload(3)),
            "envelope from 'n2' on the connection of 'n1'",
        ),
    ],
    ids=["not-our-protocol", "oversized-frame", "garbage-frame", "sender-changes"],
)
async def test_bad_input_is_refused_by_name_and_nothing_after_it_is_delivered(
    listening: tuple[Sink, str], data: bytes, expected: str
) -> None:
    sink, address = listening
    answer = await raw_exchange(address, data)
    assert expected in refusal_text(answer)
    assert all(term == 1 for _, term in sink.delivered)  # at most the one good frame


# ---------------------------------------------------------------- proxies


P = Proxy


@pytest.mark.parametrize(
    ("env", "host", "expected"),
    [
        ({}, "10.0.0.2", None),
        ({"http_proxy": "http://proxy:3128"}, "10.0.0.2", P("proxy", 3128)),
        ({"grpc_proxy": "http://a:1", "http_proxy": "http://b:2"}, "x", P("a", 1)),
        ({"grpc_proxy": "", "http_proxy": "http://b:2"}, "x", None),  # set but empty: none
        ({"https_proxy": "http://c"}, "x", P("c", 443)),
        ({"http_proxy": "http://u%40x:pw@c:8080/"}, "x", P("c", 8080, "Basic dUB4OnB3")),
        ({"http_proxy": "http://[::1]:8080"}, "x", P("::1", 8080)),
        ({"grpc_proxy": "http://a:1", "no_proxy": "example.com"}, "db.example.com", None),
        ({"grpc_proxy": "http://a:1", "no_proxy": ".example.com"}, "example.com", None),
        ({"grpc_proxy": "http://a:1", "no_proxy": "example.com"}, "example.org", P("a", 1)),
        ({"grpc_proxy": "http://a:1", "no_proxy": "10.0.0.0/8"}, "10.1.2.3", None),
        ({"grpc_proxy": "http://a:1", "no_proxy": "*"}, "x", P("a", 1)),  # no wildcard
        ({"grpc_proxy": "http://a:1", "no_grpc_proxy": "", "no_proxy": "x"}, "x", P("a", 1)),
    ],
)
def test_proxy_choice_follows_grpc(env: dict[str, str], host: str, expected: Proxy | None) -> None:
    assert proxy_for(host, env) == expected


@pytest.mark.parametrize(
    "url", ["http://proxy:abc", "http://proxy:", "http://[::1", "proxy:3128", "https://p:1"]
)
def test_a_proxy_that_cannot_be_used_is_named(url: str) -> None:
    with pytest.raises(ValueError, match=r"http_proxy=.*expected http://"):
        proxy_for("x", {"http_proxy": url})


async def start_connect_proxy(answer: bytes | None) -> tuple[asyncio.Server, list[str]]:
    """A one-trick HTTP CONNECT proxy: `answer` None splices to the target, else says `answer`."""
    headers: list[str] = []

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 16):
            writer.write(data)
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        header = (await reader.readuntil(b"\r\n\r\n")).decode()
        headers.append(header)
        target = header.split()[1]
        if answer is not None:
            writer.write(answer)
            writer.close()
            return
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    server = await asyncio.start_server(handle, HOST, 0)
    return server, headers


async def test_frames_travel_through_an_http_connect_proxy(listening: tuple[Sink, str]) -> None:
    sink, address = listening
    server, headers = await start_connect_proxy(None)
    try:
        port = server.sockets[0].getsockname()[1]
        proxy = Proxy(HOST, port, "Basic dTpw")
        conn = await tcp.connect(address, on_end=lambda: None, proxy=proxy)
        conn.send(payload(7))
        await until(lambda: sink.delivered)
        assert sink.delivered == [("n1", 7)]
        assert len(headers) == 1
        assert headers[0].startswith(f"CONNECT {address} HTTP/1.1\r\n")
        assert "Proxy-Authorization: Basic dTpw\r\n" in headers[0]
        conn.abort()
    finally:
        server.close()


async def test_a_proxy_that_refuses_is_an_error_naming_the_target() -> None:
    server, _ = await start_connect_proxy(b"HTTP/1.1 403 Forbidden\r\n\r\n")
    try:
        port = server.sockets[0].getsockname()[1]
        proxy = Proxy(HOST, port)
        with pytest.raises(ConnectionError, match=r"127\.0\.0\.1:9: .*403 Forbidden"):
            await tcp.connect(f"{HOST}:9", on_end=lambda: None, proxy=proxy)
    finally:
        server.close()


# ---------------------------------------------------------------- PeerLink over TCP


def link_to(address: str, refused: list[NodeId]) -> PeerLink:
    return PeerLink(
        local=N1,
        peer_id=NodeId("n2"),
        address=f"{HOST}:1",  # gRPC side unused here
        snapshots=None,  # type: ignore[arg-type]  # no snapshot is sent
        on_unreachable=lambda _: None,
        on_snapshot_done=lambda _p, _ok: None,
        log=LOG,
        on_refused=refused.append,
        peer_address=address,
    )


def hb(term: int) -> Message:
    return Message(
        type=MessageType.HEARTBEAT, to=NodeId("n2"), sender=NodeId("n1"), term=Term(term)
    )


async def test_a_link_reconnects_after_its_connection_breaks(
    listening: tuple[Sink, str], listener: tcp.PeerListener
) -> None:
    sink, address = listening
    link = link_to(address, [])
    task = asyncio.create_task(link._run_pipe())
    try:
        link.send(hb(1))
        await until(lambda: sink.delivered)
        for writer in list(listener._connections):  # as a restarted peer would
            writer.transport.abort()
        await until(lambda: sink.ended)
        # What went out on the broken connection may be lost (Raft retransmits);
        # a later message arrives on a new connection.
        async with asyncio.timeout(WAIT_S):
            term = 2
            while not any(t >= 2 for _, t in sink.delivered):
                link.send(hb(term))
                term += 1
                await asyncio.sleep(0.02)
        assert link.connected
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await link.close()


async def test_a_refused_connection_is_reported_for_the_fast_failover() -> None:
    refused: list[NodeId] = []
    link = link_to(f"{HOST}:{free_ports(1)[0]}", refused)  # nobody listens there
    task = asyncio.create_task(link._run_pipe())
    try:
        link.send(hb(1))
        await until(lambda: refused)
        assert refused[0] == "n2"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await link.close()


async def test_closing_does_not_wait_on_a_driver_that_stopped(
    listener: tcp.PeerListener,
) -> None:
    """A connection stuck handing messages to a full inbox must not hold up the stop."""
    stuck = asyncio.Event()

    async def never_returns(sender: pb.Peer, messages: Sequence[pb.RaftMessage]) -> str | None:
        stuck.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    listener.sink.deliver = never_returns  # type: ignore[method-assign]
    conn = await tcp.connect(listener.address, on_end=lambda: None, proxy=None)
    conn.send(payload(1))
    async with asyncio.timeout(WAIT_S):
        await stuck.wait()
    async with asyncio.timeout(tcp.CLOSE_WAIT_S + WAIT_S):
        await listener.close()
    assert not listener._serving
    conn.abort()
