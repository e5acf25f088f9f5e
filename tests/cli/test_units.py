"""Durations, sizes and times as people type them."""

from __future__ import annotations

import pytest

from railyard.cli.units import parse_duration_ms, parse_size, parse_time_ms


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("250ms", 250),
        ("0.25s", 250),
        ("10s", 10_000),
        ("10", 10_000),
        ("5m", 300_000),
        ("24h", 86_400_000),
        ("7d", 604_800_000),
        ("1h30m", 5_400_000),
    ],
)
def test_durations(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "h", "10x", "5m3", "-5s", "1.2.3s"])
def test_bad_durations_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration_ms(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [("100", 100), ("1KB", 1000), ("1KiB", 1024), ("10MiB", 10 << 20), ("1.5GB", 1_500_000_000)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MiB", "10 parsecs", "-1"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="expected a size"):
        parse_size(text)


def test_times_are_iso_or_relative() -> None:
    now_ms = 1_800_000_000_000
    assert parse_time_ms("5m", now_ms) == now_ms - 300_000
    assert parse_time_ms("2026-01-31T12:00:00Z", now_ms) == 1_769_860_800_000
    assert parse_time_ms("2026-01-31T12:00:00", now_ms) == 1_769_860_800_000
    assert parse_time_ms("2026-01-31T13:00:00+01:00", now_ms) == 1_769_860_800_000
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_time_ms("yesterday", now_ms)
