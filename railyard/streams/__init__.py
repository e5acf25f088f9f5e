"""The replicated state machine: streams, records, exactly-once appends, retention.

Deterministic and independent of the network: commands are protobuf bytes
(`railyard.proto.commands_pb2.Command`), state is one SQLite database, and
outcomes are values. It imports only `railyard.proto`.
"""

from railyard.streams.errors import ApplyOrderError, CorruptState, StateIOError, StreamsError
from railyard.streams.limits import Limits, record_size, validate, validate_append
from railyard.streams.machine import (
    AGE_SWEEP_INTERVAL_MS,
    FrozenState,
    StreamsMachine,
    snapshot_problem,
    state_summary,
)
from railyard.streams.queries import (
    AFTER_SEQUENCE,
    AT_SEQUENCE,
    AT_TIMESTAMP,
    LATEST,
    POSITIONS,
    TRIM_HORIZON,
)
from railyard.streams.results import (
    Appended,
    ApplyResult,
    BatchTooLarge,
    InvalidArgument,
    ReadResult,
    RecordTooLarge,
    Retention,
    StaleProducerSequence,
    StoredRecord,
    StreamCreated,
    StreamDeleted,
    StreamExists,
    StreamInfo,
    StreamNotFound,
    StreamUpdated,
    TooManyStreams,
)
from railyard.streams.scrub import ScrubPosition, ScrubStep

__all__ = [
    "AFTER_SEQUENCE",
    "AGE_SWEEP_INTERVAL_MS",
    "AT_SEQUENCE",
    "AT_TIMESTAMP",
    "LATEST",
    "POSITIONS",
    "TRIM_HORIZON",
    "Appended",
    "ApplyOrderError",
    "ApplyResult",
    "BatchTooLarge",
    "CorruptState",
    "FrozenState",
    "InvalidArgument",
    "Limits",
    "ReadResult",
    "RecordTooLarge",
    "Retention",
    "ScrubPosition",
    "ScrubStep",
    "StaleProducerSequence",
    "StateIOError",
    "StoredRecord",
    "StreamCreated",
    "StreamDeleted",
    "StreamExists",
    "StreamInfo",
    "StreamNotFound",
    "StreamUpdated",
    "StreamsError",
    "StreamsMachine",
    "TooManyStreams",
    "record_size",
    "snapshot_problem",
    "state_summary",
    "validate",
    "validate_append",
]
