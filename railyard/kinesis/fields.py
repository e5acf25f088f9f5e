"""Reading request fields with the service model's constraints.

Field names and limits are those of botocore's `kinesis/2013-12-02/
service-2.json`. A value of the wrong JSON type is a
`SerializationException`; a value outside a constraint (length, pattern,
range, a required field missing) is a `ValidationException` worded as
Kinesis words it, naming the field in lower camel case.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping
from typing import Any

from railyard.kinesis.errors import serialization, validation

STREAM_NAME = re.compile(r"[a-zA-Z0-9_.-]+")
MAX_STREAM_NAME_CHARS = 128
MAX_PARTITION_KEY_CHARS = 256
HASH_KEY = re.compile(r"0|[1-9]\d{0,38}")
STREAM_ARN = re.compile(r"arn:aws.*:kinesis:.*:\d{12}:stream/(\S+)")


def _member(name: str) -> str:
    return name[:1].lower() + name[1:]


class Fields:
    """One request body, read field by field."""

    def __init__(self, body: Mapping[str, Any], prefix: str = "") -> None:
        self.body = body
        self.prefix = prefix

    def _where(self, name: str) -> str:
        return f"{self.prefix}{_member(name)}"

    def _present(self, name: str, required: bool) -> Any:
        value = self.body.get(name)
        if value is None and required:
            raise validation(
                f"Value null at '{self._where(name)}' failed to satisfy constraint: "
                "Member must not be null"
            )
        return value

    def string(
        self,
        name: str,
        *,
        required: bool = False,
        min_len: int = 0,
        max_len: int | None = None,
        pattern: re.Pattern[str] | None = None,
    ) -> str | None:
        value = self._present(name, required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise serialization(f"{name}: expected a string, got {type(value).__name__}")
        where = self._where(name)
        if len(value) < min_len:
            raise validation(
                f"Value '{value}' at '{where}' failed to satisfy constraint: "
                f"Member must have length greater than or equal to {min_len}"
            )
        if max_len is not None and len(value) > max_len:
            raise validation(
                f"Value '{value[:64]}' at '{where}' failed to satisfy constraint: "
                f"Member must have length less than or equal to {max_len}"
            )
        if pattern is not None and not pattern.fullmatch(value):
            raise validation(
                f"Value '{value[:64]}' at '{where}' failed to satisfy constraint: "
                f"Member must satisfy regular expression pattern: {pattern.pattern}"
            )
        return value

    def integer(
        self,
        name: str,
        *,
        required: bool = False,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        value = self._present(name, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise serialization(f"{name}: expected an integer, got {type(value).__name__}")
        where = self._where(name)
        if minimum is not None and value < minimum:
            raise validation(
                f"Value '{value}' at '{where}' failed to satisfy constraint: "
                f"Member must have value greater than or equal to {minimum}"
            )
        if maximum is not None and value > maximum:
            raise validation(
                f"Value '{value}' at '{where}' failed to satisfy constraint: "
                f"Member must have value less than or equal to {maximum}"
            )
        return value

    def boolean(self, name: str) -> bool | None:
        value = self.body.get(name)
        if value is not None and not isinstance(value, bool):
            raise serialization(f"{name}: expected true or false, got {type(value).__name__}")
        return value

    def blob(self, name: str, *, required: bool = False) -> bytes | None:
        value = self._present(name, required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise serialization(f"{name}: expected base64 text, got {type(value).__name__}")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise serialization(f"{name}: not valid base64") from None

    def timestamp_ms(self, name: str) -> int | None:
        """A timestamp, sent as epoch seconds (a number), in milliseconds."""
        value = self.body.get(name)
        if value is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise serialization(f"{name}: expected epoch seconds (a number)")
        return int(value * 1000)

    def mapping(self, name: str, *, required: bool = False) -> Fields | None:
        value = self._present(name, required)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise serialization(f"{name}: expected an object, got {type(value).__name__}")
        return Fields(value, f"{self._where(name)}.")

    def items(
        self, name: str, *, required: bool = False, min_len: int = 0, max_len: int
    ) -> list[Fields]:
        value = self._present(name, required)
        if value is None:
            return []
        if not isinstance(value, list):
            raise serialization(f"{name}: expected a list, got {type(value).__name__}")
        where = self._where(name)
        if not min_len <= len(value) <= max_len:
            bound = (
                f"greater than or equal to {min_len}"
                if len(value) < min_len
                else f"less than or equal to {max_len}"
            )
            raise validation(
                f"Value at '{where}' failed to satisfy constraint: Member must have length {bound}"
            )
        out = []
        for position, item in enumerate(value, start=1):
            if not isinstance(item, dict):
                raise serialization(f"{name}[{position}]: expected an object")
            out.append(Fields(item, f"{where}.{position}.member."))
        return out

    def stream_name(self, *, required: bool = True) -> str | None:
        """StreamName, or the name inside StreamARN (either may name the stream)."""
        name = self.string(
            "StreamName", min_len=1, max_len=MAX_STREAM_NAME_CHARS, pattern=STREAM_NAME
        )
        if name is not None:
            return name
        arn = self.string("StreamARN", min_len=1, max_len=2048)
        if arn is not None:
            found = STREAM_ARN.fullmatch(arn)
            if found is None or not STREAM_NAME.fullmatch(found[1]):
                raise validation(
                    f"Value '{arn[:128]}' at '{self._where('StreamARN')}' failed to satisfy "
                    f"constraint: Member must satisfy regular expression pattern: "
                    f"{STREAM_ARN.pattern}"
                )
            return found[1]
        if required:
            raise validation(
                f"Value null at '{self._where('StreamName')}' failed to satisfy constraint: "
                "Member must not be null"
            )
        return None
