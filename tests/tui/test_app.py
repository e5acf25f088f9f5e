"""The dashboard's keys and live updates, driven by Pilot over a FakeSource."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable, RichLog

from railyard.proto import railyard_pb2 as pb
from railyard.tui import DashboardApp, FakeSource, StatusUpdate
from railyard.tui.fake import DEMO_ENDPOINTS, DEMO_NOW, demo_status
from railyard.tui.screens import ConfirmScreen, HelpScreen
from tests.tui.helpers import demo_app, short_source, wait_for_data, wait_until

N1, N2, N3 = DEMO_ENDPOINTS
SIZE = (80, 24)


def cell(app: DashboardApp, row: str, column: str) -> str:
    value = app.query_one("#nodes", DataTable).get_cell(row, column)
    return value.plain if isinstance(value, Text) else str(value)


def event_lines(app: DashboardApp) -> str:
    """The events as recorded (the pane shows the same, wrapped to its width)."""
    assert app.query_one("#events", RichLog).lines, "the events pane is empty"
    return "\n".join(event.text for event in app.view.events)


async def test_table_shows_every_node_in_place() -> None:
    app = demo_app(short_source())
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_data(pilot)
        table = app.query_one("#nodes", DataTable)
        assert table.row_count == 3
        assert [cell(app, e, "id") for e in DEMO_ENDPOINTS] == ["n1", "n2", "n3"]
        assert [cell(app, e, "role") for e in DEMO_ENDPOINTS] == ["leader", "follower", "—"]
        assert [cell(app, e, "state") for e in DEMO_ENDPOINTS] == ["up", "up", "down"]
        # Updated in place: the same row keys, no rebuild.
        assert [key.value for key in table.rows] == list(DEMO_ENDPOINTS)


async def test_new_status_updates_the_row_and_reports_events() -> None:
    source = short_source()
    app = demo_app(source)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_data(pilot)
        source.push(StatusUpdate(N1, DEMO_NOW, None, "connection refused"))
        source.push(StatusUpdate(N2, DEMO_NOW, demo_status(1, commit=20_000, leader="n2", term=8)))
        await wait_until(pilot, lambda: cell(app, N2, "role") == "leader", "n2 to lead")
        assert cell(app, N1, "state") == "down"
        assert cell(app, N1, "role") == "—"  # no stale second leader
        # Same text, new style: the last known term is dimmed, not left as live.
        term = app.query_one("#nodes", DataTable).get_cell(N1, "term")
        assert isinstance(term, Text) and term.plain == "7" and str(term.style) == "dim"
        assert cell(app, N2, "term") == "8"
        text = event_lines(app)
        assert "n1 is down: connection refused" in text
        assert "n2 leads term 8 (was n1)" in text


async def test_up_and_down_select_the_node_whose_log_is_shown() -> None:
    source = short_source()
    source.logs[N2] = [
        pb.LogEntryInfo(index=i, term=7, kind="append", committed=True) for i in (5, 6)
    ]
    app = demo_app(source)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_data(pilot)
        assert app.selected == N1
        await pilot.press("down")
        await wait_until(pilot, lambda: app._log_rows == ["5", "6"], "n2's log")
        assert app.selected == N2
        assert "n2" in str(app.query_one("#log-box").border_title)
        await pilot.press("up")
        assert app.selected == N1


async def test_log_tail_follows_new_entries() -> None:
    source = short_source()
    app = demo_app(source)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_data(pilot)
        last = source.logs[N1][-1].index
        source.logs[N1] = [*source.logs[N1], pb.LogEntryInfo(index=last + 1, term=8, kind="noop")]
        await wait_until(pilot, lambda: app._log_rows[-1] == str(last + 1), "the new entry")
        assert len(app._log_rows) == len(source.logs[N1])


async def test_pause_holds_updates_until_resumed() -> None:
    source = short_source()
    app = demo_app(source)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_data(pilot)
        await pilot.press("p")
        assert app.paused
        source.push(StatusUpdate(N1, DEMO_NOW, demo_status(0, commit=30_000, term=9)))
        for _ in range(5):
            await pilot.pause(0.02)
        assert cell(app, N1, "term") == "7"
        await pilot.press("p")
        assert not app.paused
        await wait_until(pilot, lambda: cell(app, N1, "term") == "9", "the held update")


async def test_plus_and_minus_change_the_interval_and_resubscribe() -> None:
    source = short_source()
    app = demo_app(source)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_data(pilot)
        await pilot.press("plus")
        assert app.interval_s == 0.5
        await wait_until(pilot, lambda: source.watch_intervals[-3:] == [0.5] * 3, "resubscribed")
        await pilot.press("minus", "minus", "minus")
        assert app.interval_s == 0.1
        await pilot.press("minus")
        assert app.interval_s == 0.1  # the shortest step
        await wait_until(pilot, lambda: source.watch_intervals[-3:] == [0.1] * 3, "resubscribed")
        assert "refresh 100ms" in str(app.query_one("#summary").render())


async def test_e_then_yes_transfers_leadership_to_the_selected_node() -> None:
    source = short_source()
    app = demo_app(source)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_data(pilot)
        await pilot.press("down", "e")
        assert isinstance(app.screen, ConfirmScreen)
        assert "n2" in app.screen.question
        await pilot.press("y")
        await wait_until(pilot, lambda: source.transfers == ["n2"], "the transfer")
        assert not isinstance(app.screen, ConfirmScreen)
        await wait_until(pilot, lambda: "transfer to n2 done" in event_lines(app), "an event")


async def test_e_then_no_or_escape_does_nothing() -> None:
    source = short_source()
    app = demo_app(source)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_data(pilot)
        await pilot.press("down", "e", "n")
        await pilot.press("e", "escape")
        await pilot.press("e", "enter")  # the focused button is "No"
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert source.transfers == []


async def test_e_on_the_leader_asks_nothing() -> None:
    source = short_source()
    app = demo_app(source)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_data(pilot)
        await pilot.press("e")
        assert not isinstance(app.screen, ConfirmScreen)
        assert source.transfers == []


async def test_a_failed_transfer_is_reported_and_the_app_goes_on() -> None:
    source = short_source()
    source.transfer_error = RuntimeError("no quorum")
    app = demo_app(source)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_data(pilot)
        await pilot.press("down", "e", "y")
        await wait_until(pilot, lambda: "failed" in event_lines(app), "the failure event")
        assert "no quorum" in event_lines(app)
        assert app.is_running


async def test_help_opens_and_closes() -> None:
    app = demo_app(short_source())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_command_palette_offers_the_transfer() -> None:
    source = short_source()
    app = demo_app(source)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_data(pilot)
        names = [command.name for command in app.palette_commands()]
        assert "Transfer leadership to n2" in names
        assert "Transfer leadership to n1" not in names  # n1 leads
        assert "Transfer leadership to n3" not in names  # n3 is down
        await pilot.press("ctrl+p")
        await pilot.press(*"to n2")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation")
        await pilot.press("y")
        await wait_until(pilot, lambda: source.transfers == ["n2"], "the transfer")


async def test_no_leader_and_no_quorum_are_flagged() -> None:
    source = FakeSource(DEMO_ENDPOINTS)
    for endpoint in (N1, N2):
        source.push(StatusUpdate(endpoint, DEMO_NOW, None, "refused"))
    source.push(
        StatusUpdate(N3, DEMO_NOW, pb.NodeStatus(node_id="n3", term=4, role=pb.ROLE_CANDIDATE))
    )
    app = DashboardApp(source, clock=lambda: DEMO_NOW)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: source.pending == 0, "the updates")
        await wait_until(pilot, lambda: not app.redraw_pending, "the redraw")
        summary = str(app.query_one("#summary").render())
        assert "NO LEADER" in summary
        assert "NO QUORUM" in summary
        assert "up 1/3" in summary


async def test_nodes_not_heard_from_yet_raise_no_alarm() -> None:
    source = FakeSource(DEMO_ENDPOINTS)
    source.push(
        StatusUpdate(
            N3, DEMO_NOW, pb.NodeStatus(node_id="n3", term=4, role=pb.ROLE_FOLLOWER, leader_id="n1")
        )
    )
    app = DashboardApp(source, clock=lambda: DEMO_NOW)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: source.pending == 0, "the updates")
        await wait_until(pilot, lambda: not app.redraw_pending, "the redraw")
        summary = str(app.query_one("#summary").render())
        assert "waiting for 2 of 3 nodes" in summary
        assert "NO QUORUM" not in summary and "NO LEADER" not in summary


async def test_q_quits_and_closes_the_source() -> None:
    source = short_source()
    app = demo_app(source)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        await pilot.pause()
    assert source.closed


async def test_updates_keep_rendering_while_a_modal_is_open() -> None:
    source = short_source()
    app = demo_app(source)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_data(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        source.push(StatusUpdate(N1, DEMO_NOW, demo_status(0, commit=30_000, term=9)))
        await wait_until(pilot, lambda: app.view.term == 9, "the update")
        await wait_until(pilot, lambda: not app.redraw_pending, "a redraw under the modal")
        await pilot.press("escape")
        assert cell(app, N1, "term") == "9"


async def test_a_wider_cell_widens_its_column_before_any_render() -> None:
    """A render between an update and the table's idle measuring cached the
    old width: the column must be wide enough at once (`_grow_column`)."""
    app = demo_app(short_source())
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_data(pilot)
        nodes = app.query_one("#nodes", DataTable)
        column = next(iter(nodes.columns.values()))
        row = next(iter(nodes.rows.values()))
        wide = "x" * (column.content_width + 12)
        app._set_cell(nodes, row.key.value or "", column.key.value or "", wide)
        assert column.content_width >= len(wide)
