"""How numbers, durations, roles and states read on the dashboard.

Pure functions from values to short strings or Rich `Text`: the widths of
the table columns assume these stay short (a duration is at most 6 cells).
"""

from __future__ import annotations

import time

from rich.text import Text

from railyard.proto import railyard_pb2 as pb
from railyard.tui.model import NodeState, Severity

ROLE_NAMES = {
    pb.ROLE_FOLLOWER: "follower",
    pb.ROLE_PRE_CANDIDATE: "pre-cand",
    pb.ROLE_CANDIDATE: "candidate",
    pb.ROLE_LEADER: "leader",
}
ROLE_STYLES = {
    pb.ROLE_FOLLOWER: "cyan",
    pb.ROLE_PRE_CANDIDATE: "yellow",
    pb.ROLE_CANDIDATE: "bold yellow",
    pb.ROLE_LEADER: "bold green",
}
SEVERITY_STYLES = {
    Severity.INFO: "",
    Severity.GOOD: "green",
    Severity.WARN: "yellow",
    Severity.BAD: "bold red",
}
# Entry kinds as ReadLog names them, shortened to fit a narrow log column.
KIND_NAMES = {"create_stream": "create", "delete_stream": "delete", "update_stream": "update"}
MISSING = "—"


def role_text(status: pb.NodeStatus | None, state: NodeState) -> Text:
    # A node that is not answering has no role we can vouch for: showing its
    # last one would show two leaders after the leader dies.
    if status is None or state is not NodeState.UP:
        return Text(MISSING, style="dim")
    return Text(ROLE_NAMES.get(status.role, "?"), style=ROLE_STYLES.get(status.role, ""))


def state_text(state: NodeState) -> Text:
    if state is NodeState.UP:
        return Text("up", style="green")
    if state.is_down:
        return Text(state.value, style="bold white on red")
    return Text(state.value, style="dim")


def duration(seconds: float | None) -> str:
    """`850ms`, `12s`, `3m04s`, `2h05m`; `—` when unknown."""
    if seconds is None or seconds < 0:
        return MISSING
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    if seconds < 60:
        return f"{int(seconds)}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def millis(ms: float) -> str:
    """`0.42ms`, `3.1ms`, `12ms`, `1.2s`; `—` for a negative (unknown) figure."""
    if ms < 0:
        return MISSING
    if ms < 1:
        return f"{ms:.2f}ms"
    if ms < 10:
        return f"{ms:.1f}ms"
    if ms < 1000:
        return f"{ms:.0f}ms"
    return f"{ms / 1000:.1f}s"


def age(seconds: float | None) -> str:
    """Time since contact: `<1s` while heartbeats flow (they come every few
    tens of ms, so finer values would only flicker), then `3s`, `2m05s`."""
    if seconds is not None and 0 <= seconds < 1:
        return "<1s"
    return duration(seconds)


def count(value: int) -> str:
    """Integers with thousands separators: indexes grow large."""
    return f"{value:,}"


def size(num_bytes: int) -> str:
    """`512B`, `3.4K`, `12M`: binary units, at most 5 cells."""
    value = float(num_bytes)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            if unit == "B":
                return f"{int(value)}B"
            return f"{value:.1f}{unit}" if value < 10 else f"{int(value)}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def per_second(value: float) -> str:
    """`0.5`, `42.0`, `126`, `12k`: a rate's number, at most 5 cells."""
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}"


def rate(per_s: float) -> str:
    return f"{per_second(per_s)}/s"


def clock_time(at: float) -> str:
    """Event times, in UTC so every operator (and every test run) reads the same."""
    return time.strftime("%H:%M:%S", time.gmtime(at))


def entry_kind(kind: str) -> str:
    return KIND_NAMES.get(kind, kind)
