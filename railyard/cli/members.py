"""`railyard member list|add|promote|remove`: change who is in the cluster.

Every command talks to the leader (a follower forwards) and prints the
committed configuration afterwards. A change is one single-server step
(docs/ARCHITECTURE.md "Membership"): `add` adds a learner and, unless
`--learner`, waits until it has caught up and promotes it to voter. A request
that is already true changes nothing, says so and exits 0; a refused one
exits 1 with one line and changes nothing.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import typer

from railyard.cli.common import (
    DEFAULT_CONNECTION,
    Connection,
    Output,
    OutputOption,
    Target,
    connection_options,
    examples,
    fail,
    print_json,
    print_table,
    run,
)
from railyard.cli.units import parse_duration_ms
from railyard.client import FailedPrecondition, RailyardClient
from railyard.config import split_address
from railyard.proto import railyard_pb2 as pb

# How often `member add` looks whether the learner has caught up.
CATCH_UP_POLL_S = 0.2
DEFAULT_WAIT = "60s"
MEMBER_COLUMNS = ("id", "address", "peer address", "role", "reachable", "match index")

member_app = typer.Typer(
    name="member",
    help="List, add, promote and remove cluster members.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

IdArgument = Annotated[str, typer.Argument(metavar="ID", help="The node id.", show_default=False)]


def member_json(member: pb.MemberInfo) -> dict[str, Any]:
    return {
        "id": member.id,
        "address": member.address,
        "peer_address": member.peer_address,
        "role": member.role,
        "reachable": member.reachable,
        "match_index": member.match_index,
    }


def members_json(config_index: int, members: Any) -> dict[str, Any]:
    return {"config_index": config_index, "members": [member_json(m) for m in members]}


def print_members(config_index: int, members: Any) -> None:
    print(f"configuration at index {config_index}")
    print_table(
        MEMBER_COLUMNS,
        [
            [m.id, m.address, m.peer_address or "-", m.role, m.reachable, m.match_index]
            for m in members
        ],
    )


def check_address(option: str, address: str) -> None:
    try:
        split_address(address)
    except ValueError as exc:
        fail(f"{option}: {exc}")


def _report(output: Output, message: str, response: pb.MemberChangeResponse, **facts: Any) -> None:
    if output is Output.json:
        print_json(
            {
                "changed": response.changed,
                **facts,
                **members_json(response.config_index, response.members),
            }
        )
    else:
        print(message)


@member_app.command("list", epilog=examples("railyard member list", "railyard member list -o json"))
@connection_options
def list_members(
    connection: Connection = DEFAULT_CONNECTION,
    output: OutputOption = Output.table,
) -> None:
    """The committed configuration as the leader sees it: role, reachability, match index."""

    async def go() -> None:
        async with connection.target().client() as client:
            response = await client.list_members()
        if output is Output.json:
            print_json(members_json(response.config_index, response.members))
        else:
            print_members(response.config_index, response.members)

    run(go())


@member_app.command(
    "add",
    epilog=examples(
        "railyard member add n4 --address 10.0.0.4:50051 --peer-address 10.0.0.4:50061",
        "railyard member add n4                 # n4's addresses from the cluster file",
        "railyard member add n5 --address host5:50051 --learner",
    ),
)
@connection_options
def add(
    node_id: IdArgument,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="HOST:PORT the new node serves clients (and gRPC Raft) on. "
            "Default: its address in the cluster file.",
            show_default=False,
        ),
    ] = None,
    peer_address: Annotated[
        str | None,
        typer.Option(
            "--peer-address",
            help="HOST:PORT it takes Raft messages on over TCP. Default: the cluster file's "
            "when it lists the node, else none (Raft over gRPC on --address).",
            show_default=False,
        ),
    ] = None,
    learner: Annotated[
        bool,
        typer.Option("--learner", help="Add as a learner only; promote later."),
    ] = False,
    wait: Annotated[
        str,
        typer.Option(
            "--wait", help="How long to wait for the learner to catch up before promoting."
        ),
    ] = DEFAULT_WAIT,
    connection: Connection = DEFAULT_CONNECTION,
    output: OutputOption = Output.table,
) -> None:
    """Add a node: as a learner, then (unless --learner) a voter once it has caught up.

    Start the node first with `railyard node start -c FILE --id ID --join`.
    Exits 1 when it does not catch up within --wait: it stays a learner.
    """
    try:
        wait_s = parse_duration_ms(wait) / 1000
    except ValueError as exc:
        fail(f"--wait: {exc}")

    async def go() -> None:
        target = connection.target()
        where, peer_where = _addresses(target, node_id, address, peer_address)
        async with target.client() as client:
            added = await client.add_member(node_id, where, peer_where)
            role = _role_of(added, node_id)
            if learner or role == "voter":
                what = "added as a learner" if added.changed else f"already a {role}"
                _report(output, f"{node_id}: {what}{_nothing(added)}", added, id=node_id)
                return
            promoted = await _promote_when_caught_up(client, node_id, wait_s)
            _report(
                output,
                f"{node_id}: {'added and ' if added.changed else ''}promoted to voter",
                promoted,
                id=node_id,
            )

    run(go())


def _nothing(response: pb.MemberChangeResponse) -> str:
    return "" if response.changed else "; nothing changed"


def _role_of(response: pb.MemberChangeResponse, node_id: str) -> str | None:
    return next((m.role for m in response.members if m.id == node_id), None)


def _addresses(
    target: Target, node_id: str, address: str | None, peer_address: str | None
) -> tuple[str, str]:
    """--address/--peer-address, else the node's own in the cluster file."""
    if address is None:
        node = None
        if target.config is not None:
            node = next((n for n in target.config.nodes if n.id == node_id), None)
        if node is None:
            fail(f"--address: required, as {node_id} is not in the cluster file")
        address = node.address
        if peer_address is None:
            peer_address = node.peer_address
    check_address("--address", address)
    if peer_address:
        check_address("--peer-address", peer_address)
    return address, peer_address or ""


async def _promote_when_caught_up(
    client: RailyardClient, node_id: str, wait_s: float
) -> pb.MemberChangeResponse:
    deadline = time.monotonic() + wait_s
    held, last = 0, 0
    while True:
        listing = await client.list_members()
        member = next((m for m in listing.members if m.id == node_id), None)
        if member is not None and member.role == "voter":
            return pb.MemberChangeResponse(
                changed=False, config_index=listing.config_index, members=listing.members
            )
        if member is not None:
            held, last = member.match_index, listing.last_index
            if member.caught_up:
                try:
                    return await client.promote_member(node_id)
                except FailedPrecondition as exc:
                    if "not caught up" not in str(exc):
                        raise
        if time.monotonic() >= deadline:
            fail(
                f"{node_id} did not catch up within {wait_s:g}s (holds up to index {held} of "
                f"{last}); it stays a learner: check that it is running, then "
                f"`railyard member promote {node_id}`"
            )
        await asyncio.sleep(CATCH_UP_POLL_S)


@member_app.command("promote", epilog=examples("railyard member promote n4"))
@connection_options
def promote(
    node_id: IdArgument,
    connection: Connection = DEFAULT_CONNECTION,
    output: OutputOption = Output.table,
) -> None:
    """Make a learner a voter; refused until it has caught up with the leader."""

    async def go() -> None:
        async with connection.target().client() as client:
            response = await client.promote_member(node_id)
        _report(output, f"{node_id}: promoted to voter", response, id=node_id)

    run(go())


@member_app.command(
    "remove",
    epilog=examples("railyard member remove n2", "railyard member remove n2 --force -o json"),
)
@connection_options
def remove(
    node_id: IdArgument,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Remove even if the voters left that answer lately could not form a quorum.",
        ),
    ] = False,
    connection: Connection = DEFAULT_CONNECTION,
    output: OutputOption = Output.table,
) -> None:
    """Remove a voter or a learner (the leader too: leadership then moves)."""

    async def go() -> None:
        async with connection.target().client() as client:
            response = await client.remove_member(node_id, force=force)
        what = "removed" if response.changed else "not a member; nothing changed"
        _report(output, f"{node_id}: {what}", response, id=node_id)

    run(go())
