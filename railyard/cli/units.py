"""Parsing what people type: durations (``24h``), sizes (``10MiB``), times (``5m`` ago).

Each parser raises ValueError with a message saying what is expected; the
commands turn it into a usage error naming the option.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

__all__ = ["format_bytes", "parse_duration_ms", "parse_size", "parse_time_ms"]

_DURATION_UNITS_MS = {
    "ms": 1.0,
    "s": 1000.0,
    "m": 60_000.0,
    "h": 3_600_000.0,
    "d": 86_400_000.0,
    "w": 604_800_000.0,
}
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}
_NUMBER_UNIT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d|w)")


def parse_duration_ms(text: str) -> int:
    """``"24h"``, ``"1h30m"``, ``"250ms"``, ``"0.25s"`` -> ms (a bare number is seconds)."""
    cleaned = text.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d*)?", cleaned):
        return round(float(cleaned) * 1000)
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(cleaned):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS_MS[match.group(2)]
        pos = match.end()
    if pos != len(cleaned) or not cleaned:
        raise ValueError(
            f"expected a duration like 250ms, 10s, 5m, 24h, 7d or 1h30m (got {text!r})"
        )
    return round(total)


def parse_size(text: str) -> int:
    """``"10MiB"``, ``"1.5GB"``, ``"4096"`` -> bytes (KB = 1000, KiB = 1024)."""
    match = _NUMBER_UNIT.match(text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _SIZE_UNITS:
        raise ValueError(f"expected a size like 4096, 64KiB, 10MiB or 1GB (got {text!r})")
    return round(float(match.group(1)) * _SIZE_UNITS[unit])


def parse_time_ms(text: str, now_ms: int) -> int:
    """An ISO-8601 time, or a duration meaning that long before `now_ms` -> epoch ms.

    A time without a zone is taken as UTC.
    """
    try:
        return now_ms - parse_duration_ms(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"expected an ISO-8601 time (2026-01-31T12:00:00Z) or how long ago (5m, 2h) "
            f"(got {text!r})"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def format_duration_ms(ms: int) -> str:
    """The inverse of parse_duration_ms for whole units: 86400000 -> '24h'."""
    for unit in ("d", "h", "m", "s"):
        size = int(_DURATION_UNITS_MS[unit])
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
