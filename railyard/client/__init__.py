"""The railyard Python client: leader discovery, retries, exactly-once puts.

    async with RailyardClient(["127.0.0.1:50051", "127.0.0.1:50052"]) as c:
        seq = await c.put("events", b"hello")

Talks to nodes over gRPC only (imports nothing of railyard but the protocol).
"""

from railyard.client.client import (
    DEFAULT_TIMEOUT_S,
    START_POSITIONS,
    BackupSink,
    RailyardClient,
)
from railyard.client.errors import (
    AlreadyApplied,
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NoQuorum,
    NotFound,
    PermissionDenied,
    RailyardError,
    ResourceExhausted,
    StaleProducerSequence,
    Unavailable,
)
from railyard.client.tls import ClientTls, TlsFilesError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "START_POSITIONS",
    "AlreadyApplied",
    "AlreadyExists",
    "BackupSink",
    "ClientTls",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "NoQuorum",
    "NotFound",
    "PermissionDenied",
    "RailyardClient",
    "RailyardError",
    "ResourceExhausted",
    "StaleProducerSequence",
    "TlsFilesError",
    "Unavailable",
]
