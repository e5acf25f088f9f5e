"""What an operator of `railyard top` tripped over (issue 13): each failed before its fix."""

from __future__ import annotations

import grpc
import pytest

from railyard.client import DeadlineExceeded, Unavailable
from railyard.tui import DashboardApp, StatusUpdate
from railyard.tui.fake import DEMO_ENDPOINTS, DEMO_NOW, demo_status
from railyard.tui.model import ClusterView
from railyard.tui.render import summary
from railyard.tui.source import describe_error
from tests.tui.helpers import demo_app, short_source, wait_for_data

LED_FOR_S = 2 * 3600 + 5 * 60


async def test_ctrl_c_quits() -> None:
    app: DashboardApp = demo_app(short_source())
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for_data(pilot)
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert not app.is_running


def test_leader_for_counts_from_the_election_the_leader_reports() -> None:
    view = ClusterView(DEMO_ENDPOINTS)
    leader = demo_status(0, commit=100)
    leader.leader_since_ms = int((DEMO_NOW - LED_FOR_S) * 1000)
    # The dashboard saw the leader for the first time just now.
    view.observe(StatusUpdate(DEMO_ENDPOINTS[0], DEMO_NOW, leader))
    view.observe(StatusUpdate(DEMO_ENDPOINTS[1], DEMO_NOW, demo_status(1, commit=100)))
    text = summary(view, DEMO_NOW, interval_s=0.25, paused=False).plain
    assert "leader for 2h05m" in text


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (
            Unavailable("127.0.0.1:1: unavailable (Stream removed (Socket closed))"),
            "connection lost",
        ),
        (
            Unavailable("127.0.0.1:1: unavailable (failed to connect to all addresses)"),
            "not running (connection refused)",
        ),
        (
            DeadlineExceeded("127.0.0.1:1: no answer in time; the request may ..."),
            "no answer in time",
        ),
    ],
)
def test_events_say_what_happened_not_grpcs_words(error: Exception, said: str) -> None:
    assert describe_error(error, "127.0.0.1:1") == said
    assert grpc.StatusCode.UNAVAILABLE.name.lower() not in said
