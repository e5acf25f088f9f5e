"""The socket options of every TCP connection railyard makes or takes outside
gRPC: between peers, and on the native put port at both ends. Standard
library only, so the node and the client share it.

NB: liveness is TCP's (keepalive, a user timeout), not a ping of our own: a
path that keeps the connection up but silently drops bytes (a proxy that
stops forwarding) is noticed only when it resets the connection.
"""

from __future__ import annotations

import contextlib
import socket

# Dead-connection detection without traffic of our own: TCP keepalive
# probes after 1 s idle, every 1 s, 3 unanswered close the connection; and
# data unacknowledged for 5 s closes it too (a vanished host, a pulled cable).
KEEPALIVE_IDLE_S = 1
KEEPALIVE_INTERVAL_S = 1
KEEPALIVE_PROBES = 3
USER_TIMEOUT_MS = 5000


def tune_socket(sock: socket.socket | None) -> None:
    """No Nagle delay, and the keepalive and user timeout above (where the OS has them)."""
    if sock is None:
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
        ("TCP_KEEPCNT", KEEPALIVE_PROBES),
        ("TCP_USER_TIMEOUT", USER_TIMEOUT_MS),
    ):
        if hasattr(socket, option):  # Linux; elsewhere the defaults apply
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
