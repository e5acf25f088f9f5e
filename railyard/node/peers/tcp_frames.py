"""The peer TCP wire's format, shared by the listener (`tcp.py`) and the dialler
(`tcp_dial.py`): the preambles, length-prefixed frames, the refusal frame
(the socket options every peer connection gets are in `railyard/sockets.py`).

NB: liveness is TCP's (keepalive, a user timeout), not a ping of our own: a
path that keeps the connection up but silently drops bytes (a proxy that
stops forwarding) is noticed only when it resets the connection. Raft's own
timeouts carry the cluster through that meanwhile, as through any loss.
"""

from __future__ import annotations

import ssl
import struct

# Names the protocol and its version: anything else that connects (a gRPC
# client pointed at the wrong port, a port scanner) is refused at once.
PREAMBLE = b"RAILYARD-PEER/1\n"
# The same length: the listener reads either in one go.
SNAPSHOT_PREAMBLE = b"RAILYARD-SNAP/1\n"
FRAME_SIZE = struct.Struct(">I")
FRAME_HEADER_BYTES = FRAME_SIZE.size
# A refusal is a sentence.
MAX_REFUSAL_BYTES = 4096
# After a refusal, what the dialler still sends is read and dropped this long
# (it stops once it reads the refusal), then the connection is cut.
REFUSAL_LINGER_S = 1.0
# A TLS handshake on a LAN takes milliseconds; one that does not finish is
# a dialler that will not (or cannot) authenticate.
TLS_HANDSHAKE_TIMEOUT_S = 5.0


def frame(payload: bytes) -> bytes:
    return FRAME_SIZE.pack(len(payload)) + payload


def tls_failure(exc: BaseException) -> str:
    """Why a TLS handshake failed, in a few words."""
    if isinstance(exc, ssl.SSLError):
        return exc.reason or exc.strerror or str(exc)
    return str(exc) or type(exc).__name__
