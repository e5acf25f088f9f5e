"""What each part of the dashboard says: pure functions from the model to text.

Table rows are dicts keyed by column key, so the app can compare them cell
by cell and update only the cells that changed.
"""

from __future__ import annotations

from rich.text import Text

from railyard.proto import railyard_pb2 as pb
from railyard.tui.formatting import (
    MISSING,
    SEVERITY_STYLES,
    age,
    clock_time,
    count,
    duration,
    entry_kind,
    millis,
    per_second,
    role_text,
    size,
    state_text,
)
from railyard.tui.model import ClusterView, Event, NodeState, NodeView

# Most telling first: at 80 columns the last ones (snapshot, address) are clipped.
NODE_COLUMNS = (
    ("id", "id"),
    ("state", "state"),
    ("role", "role"),
    ("member", "member"),
    ("term", "term"),
    ("leader", "leader"),
    ("commit", "commit"),
    ("applied", "applied"),
    ("last", "last log"),
    ("lag", "lag"),
    ("seen", "seen"),
    ("fsync", "fsync p99"),
    ("apply_lag", "apply lag"),
    ("proposals", "prop/s"),
    ("rtt", "rtt"),
    ("free", "disk free"),
    ("snap", "snapshot"),
    ("address", "address"),
)
LOG_COLUMNS = (
    ("index", "index"),
    ("term", "term"),
    ("kind", "kind"),
    ("stream", "stream"),
    ("records", "recs"),
    ("size", "size"),
)
STREAM_COLUMNS = (
    ("name", "stream"),
    ("records", "records"),
    ("bytes", "bytes"),
    ("first", "first"),
    ("last", "last"),
)

# A few entries in flight are normal under load; hundreds mean a follower
# that cannot keep up (or is catching up after a restart).
LAG_WARN_ENTRIES = 100
LAG_BAD_ENTRIES = 1000

Cell = str | Text
CellKey = tuple[str, str, tuple[object, ...]]


def cell_key(cell: Cell) -> CellKey:
    """What makes two cells look the same (`Text.__eq__` ignores the style)."""
    if isinstance(cell, str):
        return (cell, "", ())
    return (cell.plain, str(cell.style), tuple(cell.spans))


def leader_for_s(view: ClusterView, now: float) -> float | None:
    """How long the leader has led: from its own Status when it says (the
    real election), else from when the dashboard first saw it lead."""
    leader = view.leader()
    if leader is not None and leader.status is not None and leader.status.leader_since_ms > 0:
        return max(0.0, now - leader.status.leader_since_ms / 1000)
    return None if view.leader_changed_at is None else now - view.leader_changed_at


def summary(view: ClusterView, now: float, *, interval_s: float, paused: bool) -> Text:
    """The two header lines: who leads, how fast, and what is wrong."""
    leader = view.leader()
    line = Text()
    line.append("railyard", style="bold")
    line.append(f" · {view.cluster_name or '?'}")
    if leader is not None:
        line.append(" · leader ")
        line.append(leader.node_id, style="bold green")
    line.append(f" · term {view.term}")
    line.append(f" · up {view.up_count}/{len(view.nodes)}")
    line.append(f" · {per_second(view.commits_per_s(now))} commits/s")
    since = leader_for_s(view, now)
    line.append(f" · leader for {duration(since)}" if leader else "")
    line.append("\n")
    # Before a node's first answer nothing is known of it: the first screen
    # says so rather than raising alarms that the next second takes back.
    waiting = sum(node.state is NodeState.UNKNOWN for node in view.nodes.values())
    if waiting:
        line.append(f" waiting for {waiting} of {len(view.nodes)} nodes… ", style="bold")
        line.append(" ")
    if view.up_count + waiting <= len(view.nodes) // 2:
        line.append(" ⚠ NO QUORUM ", style="bold white on red")
        line.append(" ")
    if leader is None and not (waiting and (view.leader_id or not view.up_count)):
        line.append(" ⚠ NO LEADER ", style="bold white on red")
        line.append(" ")
    statuses = [n.status for n in view.nodes.values() if n.status is not None]
    if any(st.insecure for st in statuses):
        line.append(" ⚠ INSECURE: no TLS ", style="bold white on red")
        line.append(" ")
    elif statuses and all(st.tls for st in statuses):
        days = min(st.cert_days_left for st in statuses)
        line.append(f"TLS · certificates {days}d ", style="yellow" if days <= 30 else "dim")
    if paused:
        line.append(" PAUSED ", style="bold black on yellow")
        line.append(" ")
    line.append(f"refresh {duration(interval_s)}", style="dim")
    return line


def member_text(view: ClusterView, node: NodeView) -> Cell:
    """voter, learner with its catch-up (match/leader's last index), or - when the
    leader's committed configuration does not list the node."""
    leader = view.leader()
    if leader is None or leader.status is None:
        return MISSING
    for member in leader.status.members:
        if member.id == node.node_id:
            if member.role == "learner":
                progress = f"{count(member.match_index)}/{count(leader.status.last_log_index)}"
                return Text(f"learner {progress}", style="yellow")
            return Text(member.role)
    return Text("-", style="dim")


def node_cells(view: ClusterView, node: NodeView, now: float | None = None) -> dict[str, Cell]:
    """One nodes-table row; `now` None before the first render (no ages yet)."""
    status = node.status
    up = node.state is NodeState.UP
    dim = "" if up else "dim"
    cells: dict[str, Cell] = {
        "id": Text(node.node_id or "?", style="bold" if up else "dim"),
        "role": role_text(status, node.state),
        "address": Text(status.address if status and status.address else node.endpoint),
        "state": state_text(node.state),
        "member": member_text(view, node),
    }
    if status is None:
        cells.update({key: MISSING for key in ("term", "leader", "commit", "applied")})
        cells.update({key: MISSING for key in ("last", "snap", "lag", "seen")})
        cells.update({key: MISSING for key in ("fsync", "apply_lag", "proposals", "rtt", "free")})
        return cells
    lag = view.lag(node) if up else None
    cells.update(
        {
            "term": Text(str(status.term), style=dim),
            "leader": Text(status.leader_id or MISSING, style=dim),
            "commit": Text(count(status.commit_index), style=dim),
            "applied": Text(count(status.applied_index), style=dim),
            "last": Text(count(status.last_log_index), style=dim),
            "snap": Text(count(status.snapshot_index), style=dim),
            "lag": MISSING if lag is None else Text(count(lag), style=lag_style(lag)),
            "seen": _seen(node, now),
            "fsync": Text(millis(status.fsync_p99_ms), style=dim),
            "apply_lag": Text(count(status.apply_lag), style=dim),
            "proposals": Text(per_second(status.proposals_per_s), style=dim),
            "rtt": Text(_round_trip(view, node), style=dim),
            "free": Text(size(status.disk_free_bytes) if status.disk_free_bytes >= 0 else MISSING),
        }
    )
    return cells


def _round_trip(view: ClusterView, node: NodeView) -> str:
    """The leader's last heartbeat round trip to this node (the leader measures them)."""
    leader = view.leader()
    if leader is None or leader.status is None or node is leader:
        return MISSING
    for peer in leader.status.peers:
        if peer.node_id == node.node_id:
            return millis(peer.round_trip_ms)
    return MISSING


def _seen(node: NodeView, now: float | None) -> Cell:
    if node.up and node.status is not None:
        ms = node.status.last_contact_ms_ago
        return age(None if ms < 0 else ms / 1000)
    if now is None or node.last_seen_at is None:
        return MISSING
    return Text(age(now - node.last_seen_at), style="red")


def log_cells(entry: pb.LogEntryInfo) -> dict[str, Cell]:
    style = "" if entry.committed else "dim italic"
    return {
        "index": Text(count(entry.index), style=style),
        "term": Text(str(entry.term), style=style),
        "kind": Text(entry_kind(entry.kind), style=style),
        "stream": Text(entry.stream or MISSING, style=style),
        "records": Text(str(entry.records) if entry.records else MISSING, style=style),
        "size": Text(size(entry.size), style=style),
    }


def stream_cells(stream: pb.StreamInfo) -> dict[str, Cell]:
    return {
        "name": stream.name,
        "records": count(stream.record_count),
        "bytes": size(stream.bytes),
        "first": count(stream.first_sequence) if stream.first_sequence else MISSING,
        "last": count(stream.last_sequence) if stream.last_sequence else MISSING,
    }


def lag_style(lag: int) -> str:
    if lag >= LAG_BAD_ENTRIES:
        return "bold red"
    if lag >= LAG_WARN_ENTRIES:
        return "yellow"
    return ""


def event_line(event: Event) -> Text:
    line = Text(clock_time(event.at) + " ", style="dim")
    line.append(event.text, style=SEVERITY_STYLES[event.severity])
    return line
