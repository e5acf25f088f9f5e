"""The short texts the dashboard's narrow columns rely on."""

from __future__ import annotations

import pytest
from rich.text import Text

from railyard.tui.formatting import age, clock_time, duration, millis, per_second, size
from railyard.tui.render import cell_key


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "—"), (-1.0, "—"), (0.85, "850ms"), (12.9, "12s"), (184.0, "3m04s"), (7500, "2h05m")],
)
def test_duration(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


def test_age_does_not_flicker_below_a_second() -> None:
    assert [age(0.0), age(0.099), age(0.999), age(2.5)] == ["<1s", "<1s", "<1s", "2s"]


@pytest.mark.parametrize(
    ("num_bytes", "text"),
    [
        (0, "0B"),
        (1023, "1023B"),
        (1024, "1.0K"),
        (3_500, "3.4K"),
        (10 << 20, "10M"),
        (5 << 40, "5.0T"),
    ],
)
def test_size(num_bytes: int, text: str) -> None:
    assert size(num_bytes) == text


def test_per_second_stays_short() -> None:
    assert [per_second(0.25), per_second(42), per_second(126.4), per_second(12_345)] == [
        "0.2",
        "42.0",
        "126",
        "12k",
    ]


def test_millis_for_fsyncs_and_round_trips() -> None:
    assert [millis(-1), millis(0.423), millis(3.14), millis(12.6), millis(1234)] == [
        "—",
        "0.42ms",
        "3.1ms",
        "13ms",
        "1.2s",
    ]


def test_event_times_are_utc() -> None:
    assert clock_time(1767323045.0) == "03:04:05"


def test_cell_key_tells_styles_apart() -> None:
    assert cell_key(Text("7", style="dim")) != cell_key(Text("7"))
    assert cell_key(Text("7")) == cell_key(Text("7"))
    assert cell_key("7") != cell_key(Text("7", style="bold"))
