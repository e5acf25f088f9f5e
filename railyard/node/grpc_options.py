"""The gRPC options every channel and server of a node uses.

Peer links (`peers/links.py`), forwarded writes (`api/context.py`) and the
server (`process.py`) share them, so neither wing imports the other for them.
"""

from __future__ import annotations

# Raft messages and snapshot chunks can be large; the limit is generous.
MAX_MESSAGE_BYTES = 64 << 20

CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Keepalive pings find a dead connection within a couple of seconds.
    ("grpc.keepalive_time_ms", 1000),
    ("grpc.keepalive_timeout_ms", 2000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # A restarted peer is reconnected to within a second.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # A lost connection makes the channel resolve its host name again; gRPC
    # waits 30 s between resolutions by default, so a peer that came back
    # on a new IP under the same name would be missed that long.
    ("grpc.dns_min_time_between_resolutions_ms", 1000),
]

SERVER_OPTIONS: list[tuple[str, int]] = [
    # gRPC enables SO_REUSEPORT by default: a second process could then bind
    # the same address and receive half of the connections. A node's port is
    # its identity; binding must fail instead.
    ("grpc.so_reuseport", 0),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 500),
    ("grpc.http2.max_ping_strikes", 0),
]
