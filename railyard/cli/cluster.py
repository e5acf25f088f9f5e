"""`railyard status`, `railyard force-election` and `railyard top`."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from railyard.cli.common import (
    DEFAULT_CONNECTION,
    Connection,
    Output,
    OutputOption,
    Target,
    connection_options,
    eprint,
    errors_end_cleanly,
    examples,
    fail,
    print_json,
    print_table,
    run,
)
from railyard.cli.units import parse_duration_ms
from railyard.proto import railyard_pb2 as pb

ROLE_NAMES: dict[int, str] = {
    pb.ROLE_LEADER: "leader",
    pb.ROLE_FOLLOWER: "follower",
    pb.ROLE_CANDIDATE: "candidate",
    pb.ROLE_PRE_CANDIDATE: "pre-candidate",
}
# force-election waits this many election timeouts for the new leader to show.
ELECTION_TIMEOUTS_TO_WAIT = 4
# Without a cluster file the election timeout is unknown: assume the default's.
ASSUMED_ELECTION_TIMEOUT_MS = 1000
CONFIRM_POLL_S = 0.05
DEFAULT_TOP_INTERVAL = "250ms"
# `status` with nodes answering but no leader: scripts tell it from errors (1).
EXIT_NO_LEADER = 3
STATUS_COLUMNS = (
    "id",
    "address",
    "reachable",
    "member",
    "role",
    "term",
    "leader",
    "commit",
    "applied",
    "last log",
    "snapshot",
    "cert",
)
# `status` flags a certificate this close to expiring (as the node's own warning).
CERT_WARNING_DAYS = 30


# ------------------------------------------------------------------ status


def node_json(address: str, node_id: str | None, status: pb.NodeStatus | None) -> dict[str, Any]:
    if status is None:
        return {
            "id": node_id,
            "address": address,
            "reachable": False,
            "role": None,
            "term": None,
            "leader": None,
            "commit_index": None,
            "applied_index": None,
            "last_log_index": None,
            "snapshot_index": None,
            "awaiting_catch_up": None,
            "tls": None,
            "insecure": None,
            "cert_days_left": None,
            "fsync_p99_ms": None,
            "apply_lag": None,
            "proposals_per_s": None,
            "disk_free_bytes": None,
            "state_scrub_passes": None,
            "state_scrub_rows": None,
            "peer_round_trip_ms": None,
            "native_address": None,
        }
    return {
        "id": status.node_id or node_id,
        "address": address,
        "reachable": True,
        "role": ROLE_NAMES.get(status.role, "unknown"),
        "term": status.term,
        "leader": status.leader_id or None,
        "commit_index": status.commit_index,
        "applied_index": status.applied_index,
        "last_log_index": status.last_log_index,
        "snapshot_index": status.snapshot_index,
        "awaiting_catch_up": status.awaiting_catch_up,
        "tls": status.tls,
        "insecure": status.insecure,
        "cert_days_left": status.cert_days_left if status.tls else None,
        # What the node's metrics know (negative: not measured yet).
        "fsync_p99_ms": _known(status.fsync_p99_ms),
        "apply_lag": status.apply_lag,
        "proposals_per_s": round(status.proposals_per_s, 1),
        "disk_free_bytes": status.disk_free_bytes if status.disk_free_bytes >= 0 else None,
        # The background check of every record: passes finished, rows of the one under way.
        "state_scrub_passes": status.state_scrub_passes,
        "state_scrub_rows": status.state_scrub_rows,
        # Measured by the leader only: its heartbeats' round trips to each follower.
        "peer_round_trip_ms": {p.node_id: _known(p.round_trip_ms) for p in status.peers},
        # Where it takes per-call puts over the native protocol (None: nowhere).
        "native_address": status.native_address or None,
    }


def _known(ms: float) -> float | None:
    return None if ms < 0 else round(ms, 3)


def status_json(target: Target, statuses: list[tuple[str, pb.NodeStatus | None]]) -> dict[str, Any]:
    ids = target.node_ids
    nodes = [node_json(address, ids.get(address), st) for address, st in statuses]
    reachable = [st for _, st in statuses if st is not None]
    leaders = [st for st in reachable if st.role == pb.ROLE_LEADER]
    leader = max(leaders, key=lambda st: st.term) if leaders else None
    # A follower names its leader: with only followers in reach (--endpoints
    # of one follower), the header says what their rows say -- unless that
    # node is one of those that did not answer (it went down since).
    down = {ids.get(address) for address, st in statuses if st is None}
    named = max(((st.term, st.leader_id) for st in reachable if st.leader_id), default=(0, ""))[1]
    if named in down:
        named = ""
    if target.config is not None:
        name: str | None = target.config.name
    else:
        name = next((st.cluster for st in reachable if st.cluster), None)
    # The committed configuration as the leader sees it (progress included),
    # else as the most recent node that answered knows it.
    source = leader or max(reachable, key=lambda st: st.term, default=None)
    members = list(source.members) if source is not None else []
    last_index = source.last_log_index if source is not None else 0
    by_id = {m.id: m for m in members}
    for node in nodes:
        member = by_id.get(node["id"])
        # None: not in the configuration (a node removed, still in the file).
        node["member"] = member.role if member is not None else None
        node["match_index"] = member.match_index if member is not None else None
    return {
        "cluster": name,
        "leader": leader.node_id if leader is not None else (named or None),
        "term": max((st.term for st in reachable), default=None),
        "security": security(reachable),
        "nodes": nodes,
        "config_index": source.config_index if source is not None else None,
        "members": [
            {
                "id": m.id,
                "address": m.address,
                "role": m.role,
                "match_index": m.match_index,
                "last_index": last_index,
                "reachable": m.reachable,
            }
            for m in members
        ],
    }


def member_text(node: dict[str, Any], last_index: int) -> str | None:
    """voter, learner with its catch-up progress, or "-" for a node not in the configuration."""
    role = node.get("member")
    if role is None:
        return "-" if node["reachable"] else None
    if role == "learner":
        return f"learner {node['match_index']}/{last_index}"
    return str(role)


def security(reachable: list[pb.NodeStatus]) -> str | None:
    """ "tls" when every answering node is, "insecure" when any serves plaintext by
    the file's leave (insecure = true), else "plaintext" (loopback only)."""
    if not reachable:
        return None
    if any(st.insecure for st in reachable):
        return "insecure"
    return "tls" if all(st.tls for st in reachable) else "plaintext"


def cert_text(days: int | None) -> str | None:
    if days is None:
        return None
    if days < 0:
        return "EXPIRED"
    return f"{days}d{' (renew!)' if days <= CERT_WARNING_DAYS else ''}"


def print_status(doc: dict[str, Any]) -> None:
    leader = doc["leader"] or "none"
    security = {
        "tls": ", mutual TLS",
        "insecure": ", INSECURE: plaintext beyond loopback (insecure = true)",
        "plaintext": ", plaintext (loopback)",
    }.get(doc["security"], "")
    print(f"cluster {doc['cluster'] or '?'}: leader {leader}, term {doc['term'] or '-'}{security}")
    last_index = max((m["last_index"] for m in doc["members"]), default=0)
    print_table(
        STATUS_COLUMNS,
        [
            [
                n["id"] or "?",
                n["address"],
                n["reachable"],
                member_text(n, last_index),
                f"{n['role']} (catching up)" if n["awaiting_catch_up"] else n["role"],
                n["term"],
                n["leader"],
                n["commit_index"],
                n["applied_index"],
                n["last_log_index"],
                n["snapshot_index"],
                cert_text(n["cert_days_left"]),
            ]
            for n in doc["nodes"]
        ],
    )
    # Until a node's first pass ends, its records are checked only as they are read.
    scrubbing = [
        f"{n['id']} ({n['state_scrub_rows']:,} rows checked)"
        for n in doc["nodes"]
        if n["reachable"] and n["state_scrub_passes"] == 0
    ]
    if scrubbing:
        print(
            "state scrub under way (every record checked in the background after a start): "
            + ", ".join(scrubbing)
        )


@connection_options
def status(
    connection: Connection = DEFAULT_CONNECTION,
    output: OutputOption = Output.table,
) -> None:
    """Show every node: role, term, leader, commit/applied/last-log/snapshot index.

    Exits 1 when no node answers, 3 when nodes answer but none knows a leader.
    """

    async def go() -> None:
        target = connection.target()
        async with target.client() as client:
            statuses = await client.cluster_status()
        doc = status_json(target, statuses)
        if output is Output.json:
            print_json(doc)
        else:
            print_status(doc)
        if not any(n["reachable"] for n in doc["nodes"]):
            fail(
                f"no node answered ({', '.join(target.endpoints)}); "
                "start the cluster with `railyard node start`"
            )
        if doc["leader"] is None:
            raise typer.Exit(EXIT_NO_LEADER)

    run(go())


STATUS_EPILOG = examples("railyard status", "railyard status -c cluster.toml -o json")


# ------------------------------------------------------------------ force-election


def _agreed_leader(statuses: list[tuple[str, pb.NodeStatus | None]]) -> pb.NodeStatus | None:
    """The node that says it leads and that a majority of the nodes name."""
    reachable = [st for _, st in statuses if st is not None]
    majority = len(statuses) // 2 + 1
    for st in reachable:
        if st.role != pb.ROLE_LEADER:
            continue
        agree = sum(1 for s in reachable if s.leader_id == st.node_id and s.term == st.term)
        if agree >= majority:
            return st
    return None


async def _force_election(target: Target, to: str | None, output: Output) -> None:
    election_ms = (
        target.config.election_timeout_ms if target.config else ASSUMED_ELECTION_TIMEOUT_MS
    )
    wait_s = ELECTION_TIMEOUTS_TO_WAIT * election_ms / 1000
    async with target.client(timeout_s=max(wait_s, 5.0)) as client:
        before = await client.cluster_status()
        known_ids = list(target.node_ids.values()) or [st.node_id for _, st in before if st]
        if to is not None and to not in known_ids:
            fail(f"--node: no node {to!r} in this cluster; nodes are: {', '.join(known_ids)}")
        current = _agreed_leader(before)
        response = await client.transfer_leadership(to)
        previous = response.previous_leader or (current.node_id if current else "")
        expected = to or response.leader or None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            leader = _agreed_leader(await client.cluster_status())
            if leader is not None and (
                leader.node_id == expected if expected else leader.node_id != previous
            ):
                break
            if loop.time() >= deadline:
                seen = leader.node_id if leader is not None else "none"
                fail(
                    f"leadership did not move to {expected or 'another node'} within "
                    f"{wait_s:g}s (leader now: {seen}); check `railyard status` and retry"
                )
            await asyncio.sleep(CONFIRM_POLL_S)
    doc = {"previous_leader": previous or None, "leader": leader.node_id, "term": leader.term}
    if output is Output.json:
        print_json(doc)
    else:
        print(f"leader {doc['previous_leader'] or 'none'} -> {leader.node_id} (term {leader.term})")


@connection_options
def force_election(
    node: Annotated[
        str | None,
        typer.Option(
            "--node",
            help="Node id to hand leadership to. Default: the most up-to-date other node.",
            show_default=False,
        ),
    ] = None,
    connection: Connection = DEFAULT_CONNECTION,
    output: OutputOption = Output.table,
) -> None:
    """Move leadership to another node and print the old leader, the new one and the term."""

    async def go() -> None:
        await _force_election(connection.target(), node, output)

    run(go())


FORCE_ELECTION_EPILOG = examples(
    "railyard force-election", "railyard force-election --node n3 -o json"
)


# ------------------------------------------------------------------ top


@connection_options
def top(
    connection: Connection = DEFAULT_CONNECTION,
    interval: Annotated[
        str, typer.Option(help="Refresh interval (e.g. 250ms, 0.5s, 1s).")
    ] = DEFAULT_TOP_INTERVAL,
) -> None:
    """Watch the cluster live: roles, terms, indexes, replication, log (q quits)."""
    try:
        interval_s = parse_duration_ms(interval) / 1000
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--interval") from None
    if interval_s <= 0:
        raise typer.BadParameter("expected a positive duration", param_hint="--interval")
    with errors_end_cleanly():
        target = connection.target()
        from railyard.tui import run_dashboard  # Textual is heavy: load it only for `top`

        try:
            run_dashboard(target.endpoints, interval_s, target.tls)
        except KeyboardInterrupt:
            eprint("")


TOP_EPILOG = examples("railyard top", "railyard top -c configs/five.toml --interval 1s")
