"""The fault-injecting proxies do what the nemesis relies on: forward, cut one way, heal, reset."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from tests.faults.netem import Network

# A blackholed read must stay silent at least this long to count as cut.
SILENCE_S = 0.3
IO_TIMEOUT_S = 5.0


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        with contextlib.suppress(OSError):
            while data := self.request.recv(4096):
                self.request.sendall(data)


@pytest.fixture
def echo() -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.socket.getsockname()[:2]
        yield f"{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def net() -> Iterator[Network]:
    n = Network(seed=1)
    try:
        yield n
    finally:
        n.close()


def _connect(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=IO_TIMEOUT_S)
    return s


def _roundtrip(s: socket.socket, data: bytes) -> bytes:
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    return got


def test_forwards_both_ways(net: Network, echo: str) -> None:
    with _connect(net.add_link("a", "b", echo)) as s:
        assert _roundtrip(s, b"hello") == b"hello"


def test_one_way_cut_blackholes_then_heal_resets(net: Network, echo: str) -> None:
    address = net.add_link("a", "b", echo)
    with _connect(address) as s:
        assert _roundtrip(s, b"x") == b"x"
        net.cut("b", "a")  # answers from b are lost; a's bytes still arrive
        s.sendall(b"lost")
        s.settimeout(SILENCE_S)
        with pytest.raises(TimeoutError):
            s.recv(16)
        assert net.bytes_dropped >= len(b"lost")
        net.heal()
        s.settimeout(IO_TIMEOUT_S)
        # The connection lost bytes, so healing resets it.
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            for _ in range(20):
                if not s.recv(16):
                    raise ConnectionResetError("closed")
    with _connect(address) as s:
        assert _roundtrip(s, b"again") == b"again"


def test_partition_cuts_between_groups_only(net: Network) -> None:
    net.partition([["a"], ["b", "c"]])
    assert net.cuts == {("a", "b"), ("b", "a"), ("a", "c"), ("c", "a")}
    net.heal()
    assert net.cuts == frozenset()


def test_delay_holds_bytes(net: Network, echo: str) -> None:
    net.shape("a", "b", delay_ms=200)
    with _connect(net.add_link("a", "b", echo)) as s:
        start = time.monotonic()
        assert _roundtrip(s, b"slow") == b"slow"
        assert time.monotonic() - start >= 0.2


def test_reset_closes_open_connections(net: Network, echo: str) -> None:
    with _connect(net.add_link("a", "b", echo)) as s:
        assert _roundtrip(s, b"x") == b"x"
        net.reset("b", "a")
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            for _ in range(20):
                time.sleep(0.05)
                s.sendall(b"y")
                if not s.recv(16):
                    raise ConnectionResetError("closed")


def test_every_proxy_of_a_link_shares_its_faults(net: Network, echo: str) -> None:
    """A node's address and peer_address each get a proxy of (a, b); a cut covers both."""
    first, second = net.add_link("a", "b", echo), net.add_link("a", "b", echo)
    assert first != second
    with _connect(first) as s1, _connect(second) as s2:
        assert _roundtrip(s1, b"1") == b"1" and _roundtrip(s2, b"2") == b"2"
        net.cut("a", "b")
        for s in (s1, s2):
            s.sendall(b"lost")
            s.settimeout(SILENCE_S)
            with pytest.raises(TimeoutError):
                s.recv(16)
        net.heal()
        # Both connections lost bytes (raw framing is garbage now): both are reset.
        for s in (s1, s2):
            s.settimeout(IO_TIMEOUT_S)
            with pytest.raises((ConnectionResetError, BrokenPipeError)):
                for _ in range(20):
                    if not s.recv(16):
                        raise ConnectionResetError("closed")
    with _connect(second) as s:
        assert _roundtrip(s, b"again") == b"again"
