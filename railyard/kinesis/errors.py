"""Kinesis errors as the service answers them: a `__type`, a message and an HTTP status.

Every failure an operation can meet is a `KinesisError`; the HTTP layer
turns it into `{"__type": ..., "message": ...}` with its status, and nothing
else reaches a client (an unexpected exception is logged and answered as
`InternalFailureException`).

Status codes matter beyond their meaning: botocore retries a call on its
own after a 500/502/503/504 or a throttling code (`LimitExceededException`,
`ProvisionedThroughputExceededException`, ...). So a write whose outcome is
unknown gets a retryable status only when a retry cannot apply it twice
(`unavailable(retry_is_safe=...)`).
"""

from __future__ import annotations

BAD_REQUEST = 400
INTERNAL_ERROR = 500


class KinesisError(Exception):
    """An answer in Kinesis' error shape."""

    def __init__(self, error_type: str, message: str, status: int = BAD_REQUEST) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status

    def body(self) -> dict[str, str]:
        return {"__type": self.error_type, "message": self.message}


def invalid_argument(message: str) -> KinesisError:
    return KinesisError("InvalidArgumentException", message)


def validation(message: str) -> KinesisError:
    """A request field outside the service model's constraints (length, pattern, range)."""
    return KinesisError("ValidationException", f"1 validation error detected: {message}")


def not_found(message: str) -> KinesisError:
    return KinesisError("ResourceNotFoundException", message)


def in_use(message: str) -> KinesisError:
    return KinesisError("ResourceInUseException", message)


def expired_iterator(message: str) -> KinesisError:
    return KinesisError("ExpiredIteratorException", message)


def access_denied(message: str) -> KinesisError:
    return KinesisError("AccessDeniedException", message)


def serialization(message: str) -> KinesisError:
    return KinesisError("SerializationException", message)


def unknown_operation(message: str) -> KinesisError:
    return KinesisError("UnknownOperationException", message)


def unavailable(message: str, *, retry_is_safe: bool) -> KinesisError:
    """The cluster could not answer in time (no leader, a leader change).

    A 500 lets botocore retry by itself: right for reads and for writes it
    cannot apply twice. Otherwise a 400, which the caller sees and decides.
    """
    status = INTERNAL_ERROR if retry_is_safe else BAD_REQUEST
    return KinesisError("InternalFailureException", message, status)
