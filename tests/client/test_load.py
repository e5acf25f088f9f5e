"""The load engine's bounds and modes (the load itself runs in tests/cli/test_bench.py)."""

from __future__ import annotations

import pytest

from railyard.client.load import Budget, Stats, summarize, use_stream


def test_a_counted_budget_hands_out_exactly_its_records() -> None:
    budget = Budget(None, 5)
    assert [budget.claim(2), budget.claim(2), budget.claim(2), budget.claim(2)] == [2, 2, 1, 0]


def test_modes() -> None:
    assert use_stream("auto", 100) and not use_stream("auto", 1)
    assert use_stream("stream", 1) and not use_stream("unary", 100)
    with pytest.raises(ValueError, match="expected one of auto, unary, stream"):
        use_stream("fast", 1)


def test_summary_rates_and_percentiles() -> None:
    stats = Stats()
    for ms in range(1, 101):
        stats.ok(2, 200, ms / 1000)
    result = summarize(stats, 2.0, {"operation": "put"})
    assert result["records_per_sec"] == 100.0 and result["requests_per_sec"] == 50.0
    assert result["p50_ms"] == 51.0 and result["max_ms"] == 100.0
    assert result["errors"] == 0 and result["last_error"] is None
