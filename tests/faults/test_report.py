"""The nemesis report's availability figures measure what they say."""

from __future__ import annotations

from tests.faults.nemesis import longest_gap, longest_outage

ACKS = [1.0, 2.0, 3.0, 10.0, 11.0]


def test_longest_gap_is_cut_to_the_window() -> None:
    assert longest_gap(ACKS, 0.0, 20.0) == 9.0
    assert longest_gap(ACKS, 4.0, 5.0) == 1.0
    assert longest_gap([], 2.0, 5.0) == 3.0


def test_longest_outage_runs_past_the_window_end() -> None:
    # Acks stop at 3 and resume at 10: a fault during [4, 5] left writes down until 10.
    assert longest_outage(ACKS, 4.0, 5.0, 20.0) == 6.0
    assert longest_outage(ACKS, 2.5, 5.0, 20.0) == 7.0
    assert longest_outage([], 1.0, 2.0, 5.0) == 4.0
    assert longest_outage([8.0], 1.0, 2.0, 9.0) == 7.0
    assert longest_outage([1.0, 2.0], 3.0, 4.0, 9.0) == 6.0
