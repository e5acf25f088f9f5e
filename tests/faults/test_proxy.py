"""The fault proxy itself: pass, drop and blackhole (tests/support/proxy.py)."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from tests.support.proxy import TcpProxy

TIMEOUT_S = 2.0


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def echo_proxy() -> Iterator[TcpProxy]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    proxy = TcpProxy(f"127.0.0.1:{server.server_address[1]}")
    try:
        yield proxy
    finally:
        proxy.close()
        server.shutdown()
        server.server_close()


def _roundtrip(address: str, payload: bytes) -> bytes:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as s:
        s.sendall(payload)
        return s.recv(4096)


def test_pass_forwards_both_ways(echo_proxy: TcpProxy) -> None:
    assert _roundtrip(echo_proxy.address, b"hello") == b"hello"


def test_drop_cuts_connections(echo_proxy: TcpProxy) -> None:
    echo_proxy.set_mode("drop")
    try:
        answer = _roundtrip(echo_proxy.address, b"hello")
    except ConnectionError:
        answer = b""  # a reset is as good as an empty read
    assert answer == b""


def test_blackhole_swallows_and_heal_restores(echo_proxy: TcpProxy) -> None:
    echo_proxy.set_mode("blackhole")
    with pytest.raises(TimeoutError):
        _roundtrip(echo_proxy.address, b"hello")
    echo_proxy.set_mode("pass")
    assert _roundtrip(echo_proxy.address, b"again") == b"again"
