"""A Kinesis-compatible endpoint: the Kinesis JSON 1.1 protocol over railyard streams.

Independent of the node: the operations are written against the `Backend`
protocol (create, delete and list streams, append with a producer id and
sequence, read a range, describe), which the node implements; sharding,
sequence numbers, iterators, errors and SigV4 live here. It imports no
other railyard package, so it can be tested in-process against an
in-memory backend.
"""

from railyard.kinesis.backend import (
    AFTER_SEQUENCE,
    AT_SEQUENCE,
    AT_TIMESTAMP,
    LATEST,
    TRIM_HORIZON,
    AppendResult,
    Backend,
    BackendError,
    LimitExceeded,
    ReadBatch,
    Rejected,
    StoredRecord,
    StreamConflict,
    StreamMissing,
    StreamState,
    Unavailable,
)
from railyard.kinesis.errors import KinesisError
from railyard.kinesis.http import KinesisHttp, start_server
from railyard.kinesis.operations import ADMIN, READER, ROLES, WRITER, KinesisApi
from railyard.kinesis.positions import ITERATOR_LIFETIME_MS, ShardIterator, TokenCodec
from railyard.kinesis.sigv4 import Credential

__all__ = [
    "ADMIN",
    "AFTER_SEQUENCE",
    "AT_SEQUENCE",
    "AT_TIMESTAMP",
    "ITERATOR_LIFETIME_MS",
    "LATEST",
    "READER",
    "ROLES",
    "TRIM_HORIZON",
    "WRITER",
    "AppendResult",
    "Backend",
    "BackendError",
    "Credential",
    "KinesisApi",
    "KinesisError",
    "KinesisHttp",
    "LimitExceeded",
    "ReadBatch",
    "Rejected",
    "ShardIterator",
    "StoredRecord",
    "StreamConflict",
    "StreamMissing",
    "StreamState",
    "TokenCodec",
    "Unavailable",
    "start_server",
]
