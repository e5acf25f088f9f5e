"""Shared pieces of the dashboard tests: a frozen demo app and bounded waits."""

from __future__ import annotations

import time
from collections.abc import Callable

from textual.pilot import Pilot
from textual.widgets import DataTable

from railyard.tui import DashboardApp, FakeSource, demo_source
from railyard.tui.fake import DEMO_NOW

# Every wait is bounded in time; generous, as the machine may be busy.
WAIT_S = 20.0
WAIT_STEP_S = 0.02
# Key tests need the demo's shape, not its full minute of history (which
# costs a second of start-up on a busy machine).
SHORT_HISTORY_S = 4


def demo_app(source: FakeSource | None = None) -> DashboardApp:
    """The dashboard over the demo data with its clock frozen at DEMO_NOW."""
    return DashboardApp(source or demo_source(), 0.25, clock=lambda: DEMO_NOW)


def short_source() -> FakeSource:
    return demo_source(history_s=SHORT_HISTORY_S)


async def wait_until(pilot: Pilot[None], condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT_S}s waiting for {what}")
        await pilot.pause(WAIT_STEP_S)


async def wait_for_data(pilot: Pilot[None]) -> None:
    """Until every scripted update is shown and the log tail is on screen."""
    app = pilot.app
    assert isinstance(app, DashboardApp)
    source = app.source
    assert isinstance(source, FakeSource)
    await wait_until(pilot, lambda: source.pending == 0, "the scripted updates")
    await wait_until(pilot, lambda: bool(app._log_rows), "the log tail")
    await wait_until(pilot, lambda: not app.redraw_pending, "the screen to show them")
    await wait_until(pilot, lambda: tables_laid_out(app), "the tables to lay out")
    await pilot.pause()
    await pilot.pause()


def tables_laid_out(app: DashboardApp) -> bool:
    """True when no DataTable holds updates it will lay out at its next idle.

    A DataTable measures new rows, changed cells and grown columns only once
    its message queue is empty. `pilot.pause()` waits for the *process* to
    look idle, which on a busy machine can come first: the screenshot then
    showed the new text in the old column widths (issue 13's flaky
    snapshot). NB: these are Textual's private fields; the condition has no
    public name.
    """
    return not any(
        table._updated_cells or table._require_update_dimensions or table._new_rows
        for table in app.screen_stack[0].query(DataTable)
    )
