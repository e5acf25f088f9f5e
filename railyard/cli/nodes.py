"""`railyard node start`: run one node in the foreground, or every node of a file.

With ``--id`` the node runs in this process (`railyard.node.run_node`,
imported only here: starting nodes is the one thing the CLI may use the node
for). Without it, this process supervises one child process per node of the
file:

- each child's output lines are printed with the node id in front;
- Ctrl-C / SIGTERM stops every child (SIGTERM by pid, SIGKILL after a grace
  period) before this process exits;
- children are in their own process group (a terminal's Ctrl-C reaches only
  the supervisor, which stops them in order) and get SIGTERM from the kernel
  should the supervisor die without cleaning up, so no node is orphaned.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import dataclasses
import json
import os
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from railyard.cli.common import (
    CliError,
    ConfigOption,
    TlsFiles,
    client_tls,
    eprint,
    errors_end_cleanly,
    examples,
    fail,
    resolve_config,
)
from railyard.client import RailyardClient
from railyard.config import ClusterConfig, ConfigError, NodeConfig, split_address
from railyard.proto import railyard_pb2 as pb

# A node asked to stop gets this long to finish its last fsync and close.
STOP_GRACE_S = 10.0
# prctl(PR_SET_PDEATHSIG): Linux only; elsewhere the process group still helps.
PR_SET_PDEATHSIG = 1
LOG_LEVELS = ("debug", "info", "warning", "error")
# text: "<time> <LEVEL> <node> <message>"; json: one object per line, for log shippers.
LOG_FORMATS = ("text", "json")
# The supervisor's own lines carry this in place of a node id.
SUPERVISOR = "railyard"
# A child's log line longer than this is cut (asyncio's default of 64 KiB would raise).
MAX_LOG_LINE_BYTES = 1 << 20

node_app = typer.Typer(
    name="node",
    help="Run cluster nodes.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@node_app.command(
    "start",
    epilog=examples(
        "railyard node start                  # every node of the default cluster",
        "railyard node start -c configs/five.toml",
        "railyard node start -c cluster.toml --id n2 --log-level debug",
        "railyard node start --log-format json   # JSON lines: time, level, node, event, fields",
        "railyard node start -c cluster.toml --id n4 --join --address 127.0.0.1:50054",
    ),
)
def start(
    config: ConfigOption = None,
    node_id: Annotated[
        str | None,
        typer.Option(
            "--id",
            help="Run only this node, in the foreground. Without it every node of the "
            "file runs as a child process, with its id in front of each log line.",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[
        str,
        typer.Option("--log-level", help=f"One of {', '.join(LOG_LEVELS)}."),
    ] = "info",
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format",
            envvar="RAILYARD_LOG_FORMAT",
            help="text, or json for one JSON object per line (time, level, node, event, "
            "message, fields).",
        ),
    ] = "text",
    join: Annotated[
        bool,
        typer.Option(
            "--join",
            help="With --id: the node is not a member yet. It starts with no configuration, "
            "never campaigns, and waits for the leader to add it (`railyard member add ID`). "
            "Refused when the cluster already counts ID as a voter holding data.",
        ),
    ] = False,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="With --id of a node the cluster file does not list (one added since): "
            "the HOST:PORT it serves on. Required for such a node; a listed node's "
            "addresses come from the file.",
            show_default=False,
        ),
    ] = None,
    peer_address: Annotated[
        str | None,
        typer.Option(
            "--peer-address",
            help="With --address: the HOST:PORT it takes Raft messages on over TCP "
            "(default: none, Raft over gRPC).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Start the nodes of a cluster file (Ctrl-C stops them)."""
    with errors_end_cleanly():
        if log_level.lower() not in LOG_LEVELS:
            raise typer.BadParameter(
                f"expected one of {', '.join(LOG_LEVELS)}", param_hint="--log-level"
            )
        log_format = log_format.lower()
        if log_format not in LOG_FORMATS:
            raise typer.BadParameter(
                f"expected one of {', '.join(LOG_FORMATS)} (got {log_format!r})",
                param_hint="--log-format / RAILYARD_LOG_FORMAT",
            )
        cluster = resolve_config(config)
        if node_id is None and (join or address or peer_address):
            fail("--join, --address and --peer-address need --id: they describe one node")
        if node_id is not None:
            cluster = with_node(cluster, node_id, address, peer_address, join)
            if join:
                asyncio.run(refuse_join_of_voter(cluster, node_id))
            # Imported here, and only here: starting nodes is all the CLI asks of it.
            from railyard.node import run_node

            code = run_node(
                cluster, node_id, log_level=log_level.lower(), log_format=log_format, join=join
            )
        else:
            # Each child would refuse alike, one after the other: refuse once, start none.
            for node in cluster.nodes:
                refusal = cluster.plaintext_refusal(node.id)
                if refusal is not None:
                    fail(f"{node.id}: {refusal}")
            code = asyncio.run(_supervise(cluster, log_level.lower(), log_format))
    raise typer.Exit(code)


def with_node(
    cluster: ClusterConfig,
    node_id: str,
    address: str | None,
    peer_address: str | None,
    join: bool,
) -> ClusterConfig:
    """`cluster` with node `node_id` in it: listed by the file, or described by
    --address/--peer-address (a node added since the file was written)."""
    listed = any(n.id == node_id for n in cluster.nodes)
    if listed:
        if address is not None or peer_address is not None:
            fail(
                f"--address: {node_id} is in {cluster.source_name}, which gives its "
                "addresses; drop --address/--peer-address"
            )
        return cluster
    if address is None:
        if not join:
            cluster.node(node_id)  # fails, naming the file's ids
        fail(
            f"--address: {cluster.source_name} has no node {node_id!r} (it has: "
            f"{', '.join(cluster.node_ids)}): a new node needs --address HOST:PORT"
        )
    for option, value in (("--address", address), ("--peer-address", peer_address)):
        if value is not None:
            try:
                split_address(value)
            except ValueError as exc:
                fail(f"{option}: {exc}")
    if not join and not (cluster.data_dir / node_id).is_dir():
        fail(
            f"{node_id} is not in {cluster.source_name} and has no data directory: "
            "start a new node with --join, then `railyard member add` it; to bring back "
            f"a member that lost its data, list it in {cluster.source_name} first"
        )
    node = NodeConfig(id=node_id, address=address, peer_address=peer_address)
    return dataclasses.replace(cluster, nodes=(*cluster.nodes, node))


# How long `--join` asks the cluster whether the id is already a voter.
JOIN_CHECK_TIMEOUT_S = 3.0


async def refuse_join_of_voter(cluster: ClusterConfig, node_id: str) -> None:
    """Refuse `--join` with an empty data directory of an id the cluster counts as
    a voter holding data: starting empty would forget entries it acknowledged.

    Checked against the leader's Status before the node starts (a cluster
    that does not answer is not asked again: the node then just waits).
    """
    data_dir = cluster.data_dir / node_id
    if data_dir.is_dir() and any(data_dir.iterdir()):
        return  # a node restarting: its store decides
    try:
        tls = client_tls(TlsFiles(), cluster)
    except (CliError, ConfigError, OSError):
        return
    others = [n.address for n in cluster.nodes if n.id != node_id]
    if not others:
        return
    async with RailyardClient(others, tls=tls, timeout_s=JOIN_CHECK_TIMEOUT_S) as client:
        statuses = await client.cluster_status()
    leaders = [st for _, st in statuses if st is not None and st.role == pb.ROLE_LEADER]
    if not leaders:
        return
    leader = max(leaders, key=lambda st: st.term)
    for member in leader.members:
        if member.id == node_id and member.role == "voter" and member.match_index > 0:
            fail(
                f"cannot join: {node_id} is already a voter of cluster {cluster.name} holding "
                f"entries up to {member.match_index}, and its data directory {data_dir} is "
                f"empty; remove it first (`railyard member remove {node_id}`), or list it in "
                f"{cluster.source_name} and start it without --join to rejoin by snapshot"
            )


def _child_command(
    cluster: ClusterConfig, node_id: str, log_level: str, log_format: str
) -> list[str]:
    command = [sys.executable, "-m", "railyard", "node", "start"]
    if cluster.source is not None:
        command += ["-c", str(cluster.source)]
    return [*command, "--id", node_id, "--log-level", log_level, "--log-format", log_format]


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if the supervisor dies (Linux)."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(libc_name, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True)
class _Out:
    """How the supervisor writes: text lines prefixed with the node id, or JSON lines
    (the nodes' own pass unchanged: each names its node)."""

    width: int
    json: bool

    def prefix(self, node_id: str) -> str:
        return "" if self.json else f"{node_id.ljust(self.width)} | "

    def say(self, message: str) -> None:
        if not self.json:
            eprint(f"{SUPERVISOR.ljust(self.width)} | {message}")
            return
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        doc = {
            "time": f"{stamp}.{int(now * 1000) % 1000:03d}Z",
            "level": "info",
            "node": SUPERVISOR,
            "event": "supervisor",
            "message": message,
            "fields": {},
        }
        eprint(json.dumps(doc))


async def _pump(node_id: str, stream: asyncio.StreamReader, out: _Out) -> None:
    prefix = out.prefix(node_id)
    while True:
        try:
            line = await stream.readline()
        except ValueError:  # longer than MAX_LOG_LINE_BYTES: skip to the next newline
            line = b"[log line too long, cut]\n"
        if not line:
            return
        sys.stderr.write(prefix + line.decode(errors="replace").rstrip("\n") + "\n")
        sys.stderr.flush()


async def _supervise(cluster: ClusterConfig, log_level: str, log_format: str) -> int:
    """Run every node as a child; return when all have exited (after a stop or on their own)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # The child must resolve the same file: without -c it would look again.
    env.pop("RAILYARD_CONFIG", None)
    out = _Out(max(len(SUPERVISOR), *(len(n.id) for n in cluster.nodes)), log_format == "json")
    procs: dict[str, asyncio.subprocess.Process] = {}
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        for node in cluster.nodes:
            procs[node.id] = await asyncio.create_subprocess_exec(
                *_child_command(cluster, node.id, log_level, log_format),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                limit=MAX_LOG_LINE_BYTES,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
            out.say(f"started {node.id} (pid {procs[node.id].pid})")
        async with asyncio.TaskGroup() as tg:
            for node_id, proc in procs.items():
                assert proc.stdout is not None
                tg.create_task(_pump(node_id, proc.stdout, out))
            restarts = {n.id: restart_command(cluster, n.id) for n in cluster.nodes}
            tg.create_task(_watch(procs, stopping, out, restarts))
    finally:
        await _stop_all(procs, out)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    failed = [nid for nid, p in procs.items() if p.returncode not in (0, None)]
    return 1 if failed and not stopping.is_set() else 0


def restart_command(cluster: ClusterConfig, node_id: str) -> str:
    """The command that starts `node_id` again on its own, as the user would type it."""
    program = sys.argv[0] if os.path.basename(sys.argv[0]) == "railyard" else "railyard"
    words = [program, "node", "start"]
    if cluster.source is not None:
        source = cluster.source
        with contextlib.suppress(ValueError):
            source = source.relative_to(Path.cwd())
        words += ["-c", str(source)]
    return shlex.join([*words, "--id", node_id])


def exit_reason(code: int) -> str:
    """`exited with code 1`, or `killed by SIGKILL` for a signal (a negative code)."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


async def _watch(
    procs: dict[str, asyncio.subprocess.Process],
    stopping: asyncio.Event,
    out: _Out,
    restarts: dict[str, str],
) -> None:
    """Report children that exit on their own; stop the rest when asked to."""
    waits = {asyncio.ensure_future(p.wait()): nid for nid, p in procs.items()}
    stop = asyncio.ensure_future(stopping.wait())
    try:
        while waits:
            done, _ = await asyncio.wait([*waits, stop], return_when=asyncio.FIRST_COMPLETED)
            if stop in done:
                break
            for fut in done:
                nid = waits.pop(fut)
                out.say(
                    f"{nid} {exit_reason(fut.result())}"
                    + ("; the other nodes keep running (Ctrl-C stops them)" if waits else "")
                    + f"; to start it again: {restarts[nid]}"
                )
    finally:
        stop.cancel()
        for fut in waits:
            fut.cancel()
    await _stop_all(procs, out)


async def _stop_all(procs: dict[str, asyncio.subprocess.Process], out: _Out) -> None:
    """SIGTERM every running child by pid, then SIGKILL what is left after the grace."""
    running = [p for p in procs.values() if p.returncode is None]
    if not running:
        return
    out.say(f"stopping {len(running)} node(s)")
    for proc in running:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running)), STOP_GRACE_S)
    except TimeoutError:
        for proc in running:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        await asyncio.gather(*(p.wait() for p in running))
