"""Modal screens of the dashboard: the confirmation before acting, and help.

Both work from the keyboard alone: `y` confirms, `n` or Escape cancels (Enter
presses the focused button, "No" at first); the help screen closes on
Escape, `?` or `q`.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

MODAL_CSS = """
ConfirmScreen, HelpScreen {
    align: center middle;
}
ConfirmScreen > Vertical, HelpScreen > Vertical {
    width: auto;
    max-width: 90%;
    height: auto;
    border: thick $warning;
    background: $surface;
    padding: 0 1;
}
HelpScreen > Vertical {
    border: thick $primary;
}
ConfirmScreen Static, HelpScreen Static {
    width: auto;
}
ConfirmScreen Horizontal {
    width: auto;
    height: auto;
    margin-top: 1;
}
ConfirmScreen Button {
    margin: 0 1;
}
"""

HELP_TEXT = """\
[b]railyard top[/b] — the cluster, live

[b]↑ / ↓[/b]   select a node (its Raft log tail shows below)
[b]e[/b]       force an election: move leadership to the selected node
[b]p[/b]       pause / resume updates
[b]+ / -[/b]   refresh less / more often
[b]ctrl+p[/b]  command palette (the same actions)
[b]?[/b]       this help
[b]q[/b]       quit

lag: entries the node's log is behind the leader's.
seen: time since the node last heard from its leader
(on the leader: since a quorum last answered).

[dim]esc closes[/dim]"""


class ConfirmScreen(ModalScreen[bool]):
    """Asks a yes/no question; dismisses with True only on an explicit yes."""

    DEFAULT_CSS = MODAL_CSS
    # Enter presses the focused button: start on "No", so only `y` or a
    # deliberate move to "Yes" confirms.
    AUTO_FOCUS = "#no"
    BINDINGS = [
        Binding("y", "answer(True)", "yes"),
        Binding("n", "answer(False)", "no"),
        Binding("escape", "answer(False)", "cancel", show=False),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, id="question")
            with Horizontal():
                yield Button("Yes (y)", id="yes", variant="warning")
                yield Button("No (n)", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class HelpScreen(ModalScreen[None]):
    """The keys, in one box."""

    DEFAULT_CSS = MODAL_CSS
    BINDINGS = [
        Binding("escape", "close", "close"),
        Binding("question_mark", "close", "close", show=False),
        Binding("q", "close", "close", show=False),
    ]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(HELP_TEXT)

    def action_close(self) -> None:
        self.dismiss(None)
