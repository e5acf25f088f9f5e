"""`railyard top`: the live dashboard of a railyard cluster (Textual).

Data flows one way: one worker per node endpoint consumes the source's
status stream and folds each update into the `ClusterView` model; a render
pass then writes only what changed into the widgets (`update_cell`, never a
rebuilt table), so the screen updates in place. The selected node's Raft log
tail is polled with ReadLog at the refresh interval.

Time is read from the injected clock only, and durations are computed from
the times stamped on the updates, so a frozen clock gives a frozen screen.
Nothing a node does (going down, answering garbage, hanging) may crash the
app: sources report failures as values, and workers never exit the app.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from rich.cells import cell_len
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, RichLog, Sparkline, Static
from textual.widgets.data_table import ColumnKey
from textual.worker import WorkType

from railyard.proto import railyard_pb2 as pb
from railyard.tui import formatting as fmt
from railyard.tui import render
from railyard.tui.commands import DashboardCommands, PaletteCommand
from railyard.tui.model import ClusterView, Event, NodeView, Severity
from railyard.tui.render import Cell
from railyard.tui.screens import ConfirmScreen, HelpScreen
from railyard.tui.source import Clock, DashboardSource, describe_error

# Refresh intervals offered by `+`/`-`: from "watch an election happen" to
# "leave it open all day".
INTERVAL_STEPS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
DEFAULT_INTERVAL_S = 0.25
# Enough log entries to fill a tall terminal's log panel.
LOG_TAIL_COUNT = 100
# "time since" texts in the header tick once a second even when no update
# arrives (e.g. every node is down).
CLOCK_TICK_S = 1.0

DASHBOARD_CSS = """
#summary {
    /* Two lines; a third when a narrow terminal wraps the first. */
    height: auto;
    max-height: 3;
    padding: 0 1;
    background: $boost;
}
#nodes {
    height: auto;
    max-height: 12;
    /* No mouse needed: the columns that do not fit (address last) are
       clipped rather than taking a line for a scrollbar. */
    scrollbar-size: 0 0;
}
#rates {
    height: auto;
    padding: 0 1;
}
.rate-row {
    height: 1;
}
.rate-label {
    width: 8;
}
#rates Sparkline {
    width: 1fr;
}
.rate-value {
    width: 9;
    text-align: right;
}
#bottom {
    height: 1fr;
    min-height: 8;
}
#log-box {
    width: 3fr;
    border: round $primary;
}
#side {
    width: 2fr;
}
#streams-box {
    height: 1fr;
    border: round $primary;
}
#events-box {
    height: 1fr;
    border: round $primary;
}
#log, #streams, #events {
    height: 1fr;
    scrollbar-size: 0 0;
}
"""


class DashboardApp(App[None]):
    """The dashboard over any `DashboardSource` (real cluster or fake)."""

    TITLE = "railyard top"
    CSS = DASHBOARD_CSS
    COMMANDS = App.COMMANDS | {DashboardCommands}
    AUTO_FOCUS = "#nodes"
    BINDINGS = [
        Binding("e", "elect", "elect"),
        Binding("p", "pause", "pause"),
        Binding("plus", "slower", "slower"),
        Binding("minus", "faster", "faster"),
        Binding("question_mark", "help", "help"),
        Binding("q", "quit", "quit"),
        # Every terminal program stops on Ctrl-C (Textual would only hint at Ctrl-Q).
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
    ]

    def __init__(
        self,
        source: DashboardSource,
        interval_s: float = DEFAULT_INTERVAL_S,
        *,
        clock: Clock = time.time,
    ) -> None:
        super().__init__()
        self.source = source
        self.interval_s = interval_s
        self.clock = clock
        self.paused = False
        self.view = ClusterView(tuple(source.endpoints))
        self.selected: str = source.endpoints[0] if source.endpoints else ""
        # (table, row, column) -> what the cell shows, to update only changes
        self._shown: dict[tuple[str, str, str], render.CellKey] = {}
        self._log_rows: list[str] = []
        self._log_busy = False
        self._tick_timer: Timer | None = None
        self._redraw_pending = False
        self._events_shown = 0  # how many of the model's events are on screen
        self._rates_shown: dict[int, tuple[render.CellKey, list[float]]] = {}
        self._summary_shown: render.CellKey | None = None
        self._log_shown: list[tuple[int, int, bool]] = []  # (index, term, committed)

    # ------------------------------------------------------------ layout

    @property
    def _main(self) -> Screen[Any]:
        """The dashboard's own screen, where its widgets are looked up.

        `App.query_one` searches the active screen, which is a modal (the
        confirmation, help, the command palette) while one is open.
        """
        return self.screen_stack[0]

    @property
    def _showing(self) -> bool:
        """False while starting or shutting down: timers and workers may
        still fire then, but the widgets are not (or no longer) there."""
        return self.is_running and bool(self.screen_stack)

    def compose(self) -> ComposeResult:
        yield Static(id="summary")
        yield DataTable(id="nodes", cursor_type="row", zebra_stripes=False)
        with Vertical(id="rates"):
            for i, endpoint in enumerate(self.source.endpoints):
                with Horizontal(classes="rate-row"):
                    yield Static(endpoint, id=f"rate-label-{i}", classes="rate-label")
                    yield Sparkline([], id=f"rate-spark-{i}", summary_function=max)
                    yield Static("", id=f"rate-value-{i}", classes="rate-value")
        with Horizontal(id="bottom"):
            with Vertical(id="log-box"):
                yield DataTable(id="log", cursor_type="none", show_cursor=False)
            with Vertical(id="side"):
                with Vertical(id="streams-box"):
                    yield DataTable(id="streams", cursor_type="none", show_cursor=False)
                with Vertical(id="events-box"):
                    yield RichLog(
                        id="events", max_lines=500, min_width=1, wrap=True, auto_scroll=True
                    )
        yield Footer()

    def on_mount(self) -> None:
        nodes = self._main.query_one("#nodes", DataTable)
        for key, label in render.NODE_COLUMNS:
            nodes.add_column(label, key=key)
        for endpoint in self.source.endpoints:
            self._add_row(nodes, endpoint, render.node_cells(self.view, self.view.nodes[endpoint]))
        for table_id, columns in (
            ("#log", render.LOG_COLUMNS),
            ("#streams", render.STREAM_COLUMNS),
        ):
            table = self._main.query_one(table_id, DataTable)
            table.can_focus = False
            for key, label in columns:
                table.add_column(label, key=key)
        self._main.query_one("#events", RichLog).can_focus = False
        self._main.query_one("#streams-box").border_title = "streams"
        self._main.query_one("#events-box").border_title = "events (UTC)"
        self._set_log_title()
        self._start_updates()
        self.set_interval(CLOCK_TICK_S, self._redraw)
        self._redraw()

    # ------------------------------------------------------------ updates

    def _start_updates(self) -> None:
        for endpoint in self.source.endpoints:
            self._run(partial(self._watch, endpoint), group="watch")
        self._tick_timer = self.set_interval(self.interval_s, self._tick)
        self._poll_log()

    def _run(self, work: Callable[[], Awaitable[None]], *, group: str) -> None:
        """Runs `work` in a worker that never takes the app down with it."""

        # A function, not a coroutine object: a worker cancelled before it
        # starts then leaves no coroutine behind un-awaited.
        async def run() -> None:
            await work()

        job: WorkType[None] = run
        self.run_worker(job, group=group, exit_on_error=False)

    def _stop_updates(self) -> None:
        self.workers.cancel_group(self, "watch")
        if self._tick_timer is not None:
            self._tick_timer.stop()
            self._tick_timer = None

    def _tick(self) -> None:
        """Once per refresh interval: show what arrived, ask for the log tail."""
        if self._redraw_pending:
            self._redraw()
        self._poll_log()

    async def _watch(self, endpoint: str) -> None:
        async for update in self.source.watch(endpoint, self.interval_s):
            if self.paused:
                continue
            self.view.observe(update)
            self._schedule_redraw()

    def _schedule_redraw(self) -> None:
        # Every node sends an update per interval: draw them together at the
        # next tick rather than once each (drawing is most of the app's work).
        self._redraw_pending = True

    @property
    def redraw_pending(self) -> bool:
        """True while updates have arrived that the screen does not show yet."""
        return self._redraw_pending

    def _poll_log(self) -> None:
        if self._log_busy or not self.selected or self.paused or not self._showing:
            return
        self._log_busy = True
        self._run(partial(self._read_log, self.selected), group="log")

    async def _read_log(self, endpoint: str) -> None:
        try:
            entries = await self.source.read_log(endpoint, LOG_TAIL_COUNT)
        except Exception:  # a down node has no log to show; its row says why
            entries = None
        finally:
            self._log_busy = False
        if entries is not None and endpoint == self.selected:
            self._show_log(entries)

    # ------------------------------------------------------------ rendering

    def _redraw(self) -> None:
        self._redraw_pending = False
        if not self._showing:
            return
        now = self.clock()
        summary = render.summary(
            now=now, view=self.view, interval_s=self.interval_s, paused=self.paused
        )
        if render.cell_key(summary) != self._summary_shown:
            self._summary_shown = render.cell_key(summary)
            self._main.query_one("#summary", Static).update(summary)
        nodes = self._main.query_one("#nodes", DataTable)
        for i, endpoint in enumerate(self.source.endpoints):
            node = self.view.nodes[endpoint]
            for column, cell in render.node_cells(self.view, node, now).items():
                self._set_cell(nodes, endpoint, column, cell)
            self._render_rate(i, node, now)
        self._show_streams(self.view.streams())
        self._show_events()
        self._set_log_title()

    def _render_rate(self, i: int, node: NodeView, now: float) -> None:
        history = self.view.rate_history(node, now)
        label = Text(node.label, style="bold" if node.up else "dim")
        shows = (render.cell_key(label), history)
        if self._rates_shown.get(i) == shows:
            return
        self._rates_shown[i] = shows
        self._main.query_one(f"#rate-label-{i}", Static).update(label)
        self._main.query_one(f"#rate-spark-{i}", Sparkline).data = history
        self._main.query_one(f"#rate-value-{i}", Static).update(
            fmt.rate(history[-1] if history else 0)
        )

    def _set_cell(self, table: DataTable[Cell], row: str, column: str, cell: Cell) -> None:
        key = (table.id or "", row, column)
        shows = render.cell_key(cell)
        if self._shown.get(key) != shows:
            self._shown[key] = shows
            # Re-measuring a column re-lays out the table: only when it must grow.
            wider = _grow_column(table, column, shows[0])
            table.update_cell(row, column, cell, update_width=wider)

    def _show_log(self, entries: Sequence[pb.LogEntryInfo]) -> None:
        if not self._showing:
            return
        # Most polls find the same tail: skip the cell-by-cell comparison.
        summary = [(entry.index, entry.term, entry.committed) for entry in entries]
        if summary == self._log_shown:
            return
        self._log_shown = summary
        table = self._main.query_one("#log", DataTable)
        keys = [str(entry.index) for entry in entries]
        wanted = set(keys)
        for key in [k for k in self._log_rows if k not in wanted]:
            table.remove_row(key)
            self._forget("log", key)
        shown = set(self._log_rows)
        for key, entry in zip(keys, entries, strict=True):
            cells = render.log_cells(entry)
            if key in shown:
                for column, cell in cells.items():
                    self._set_cell(table, key, column, cell)
            else:
                self._add_row(table, key, cells)
        if keys != self._log_rows:
            self._log_rows = keys
            # After the refresh: the new rows' heights are known only then.
            self.call_after_refresh(table.scroll_end, animate=False)

    def _show_streams(self, streams: Sequence[pb.StreamInfo]) -> None:
        table = self._main.query_one("#streams", DataTable)
        names = [stream.name for stream in streams]
        for row_key in list(table.rows):
            name = row_key.value or ""
            if name not in names:
                table.remove_row(row_key)
                self._forget("streams", name)
        for stream in streams:
            cells = render.stream_cells(stream)
            if stream.name in table.rows:
                for column, cell in cells.items():
                    self._set_cell(table, stream.name, column, cell)
            else:
                self._add_row(table, stream.name, cells)

    def _add_row(self, table: DataTable[Cell], row: str, cells: dict[str, Cell]) -> None:
        """Adds a row with its cells in the table's column order."""
        ordered = [cells[column.value or ""] for column in table.columns]
        for key, value in zip(table.columns, ordered, strict=True):
            _grow_column(table, key.value or "", render.cell_key(value)[0])
        table.add_row(*ordered, key=row)
        for column, cell in cells.items():
            self._shown[(table.id or "", row, column)] = render.cell_key(cell)

    def _forget(self, table: str, row: str | None = None) -> None:
        """Drops what `_set_cell` remembers of a removed row (None: every row)."""
        for key in [k for k in self._shown if k[0] == table and row in (None, k[1])]:
            del self._shown[key]

    def _add_events(self, events: Sequence[Event]) -> None:
        """Events of the app's own doing (not implied by a status update)."""
        self.view.record(events)
        self._schedule_redraw()

    def _show_events(self) -> None:
        new, self._events_shown = self.view.events_after(self._events_shown)
        log = self._main.query_one("#events", RichLog)
        for event in new:
            log.write(render.event_line(event))

    def _set_log_title(self) -> None:
        node = self.view.nodes.get(self.selected)
        label = f"{node.node_id} {self.selected}" if node and node.node_id else self.selected
        if node is not None and node.state.is_down:
            label += f" ({node.state.value}: last known)"
        self._main.query_one("#log-box").border_title = f"raft log · {label}"

    # ------------------------------------------------------------ selection

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "nodes" or event.row_key.value is None:
            return
        if event.row_key.value == self.selected:
            return
        self.selected = event.row_key.value
        # A read of the previous node (maybe hanging on a dead one) must not
        # hold up the new node's log.
        self.workers.cancel_group(self, "log")
        self._log_busy = False
        table = self._main.query_one("#log", DataTable)
        table.clear()
        self._log_rows = []
        self._log_shown = []
        self._forget("log")
        self._set_log_title()
        self._poll_log()

    # ------------------------------------------------------------ actions

    def action_pause(self) -> None:
        self.paused = not self.paused
        if self.paused:
            self._stop_updates()
        else:
            self._start_updates()
        self._redraw()

    def action_slower(self) -> None:
        self._change_interval(_next_step(self.interval_s, +1))

    def action_faster(self) -> None:
        self._change_interval(_next_step(self.interval_s, -1))

    def _change_interval(self, interval_s: float) -> None:
        if interval_s == self.interval_s:
            return
        self.interval_s = interval_s
        if not self.paused:
            # Status streams are subscribed at an interval: resubscribe.
            self._stop_updates()
            self._start_updates()
        self._redraw()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_elect(self) -> None:
        # The row under the cursor: keys may arrive faster than the
        # highlight messages that update `selected`.
        nodes = self._main.query_one("#nodes", DataTable)
        row_key, _ = nodes.coordinate_to_cell_key(nodes.cursor_coordinate)
        self.elect(row_key.value or self.selected)

    def elect(self, endpoint: str) -> None:
        """Ask to move leadership to the node at `endpoint`, after confirmation."""
        node = self.view.nodes.get(endpoint)
        if node is None or not node.node_id:
            self.notify("That node has not reported its id yet.", severity="warning")
            return
        if node.node_id == self.view.leader_id and self.view.leader() is not None:
            self.notify(f"{node.node_id} is already the leader.")
            return
        node_id = node.node_id
        question = f"Move leadership to {node_id} ({endpoint})?\nThis starts an election now."

        def answered(yes: bool | None) -> None:
            if yes:
                self._run(partial(self._transfer, node_id), group="transfer")

        self.push_screen(ConfirmScreen(question), answered)

    async def _transfer(self, node_id: str) -> None:
        try:
            response = await self.source.transfer_leadership(node_id)
        except Exception as exc:  # shown to the operator; the dashboard carries on
            message = f"transfer to {node_id} failed: {describe_error(exc)}"
            self._add_events([Event(self.clock(), message, Severity.BAD)])
            self.notify(message, severity="error")
            return
        leader = response.leader or "?"
        message = f"transfer to {node_id} done: {leader} leads term {response.term}"
        self._add_events([Event(self.clock(), message, Severity.GOOD)])
        self.notify(message)

    def palette_commands(self) -> Sequence[PaletteCommand]:
        commands = [
            PaletteCommand(
                "Force election to the selected node",
                "move leadership to the highlighted node (asks first)",
                self.action_elect,
            ),
            PaletteCommand("Pause / resume updates", "freeze the screen", self.action_pause),
            PaletteCommand("Refresh less often", "longer refresh interval", self.action_slower),
            PaletteCommand("Refresh more often", "shorter refresh interval", self.action_faster),
            PaletteCommand("Show keys", "help", self.action_help),
            PaletteCommand("Quit", "leave railyard top", self.exit),
        ]
        for endpoint, node in self.view.nodes.items():
            if node.up and node.node_id and node.node_id != self.view.leader_id:
                commands.append(
                    PaletteCommand(
                        f"Transfer leadership to {node.node_id}",
                        f"{endpoint} (asks first)",
                        partial(self.elect, endpoint),
                    )
                )
        return commands

    async def on_unmount(self) -> None:
        self._stop_updates()
        await self.source.close()


def _next_step(interval_s: float, direction: int) -> float:
    """The next refresh interval up (+1) or down (-1) the ladder of steps."""
    if direction > 0:
        return next((s for s in INTERVAL_STEPS_S if s > interval_s), INTERVAL_STEPS_S[-1])
    return next((s for s in reversed(INTERVAL_STEPS_S) if s < interval_s), INTERVAL_STEPS_S[0])


def _grow_column(table: DataTable[Cell], column: str, text: str) -> bool:
    """Widen `column` now for `text`; True when it had to grow.

    A DataTable measures grown cells only at its next idle, and a render
    before that caches the table's lines at the old widths (the cache is
    keyed by update count, which the measuring does not change): on a busy
    machine the screen then kept cut-off cells (`learne` for `learner
    17,614/17,622`) until the next update. Set before the update, the
    width is right for every render.
    """
    target = table.columns[ColumnKey(column)]
    width = cell_len(text)
    if width <= target.content_width:
        return False
    target.content_width = width
    return True
