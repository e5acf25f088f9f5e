"""Run the standard benchmark matrix against a fresh local 3-node cluster.

    .venv/bin/python bench/run_matrix.py [--duration 10s] [--size 100] [--nodes 3]
                                         [--failover-runs 10] [--grpc-peers]
                                         [--peers-dir DIR] [--peers-python PY] [--no-peers]
                                         [--no-floor]

Starts one `railyard node start --id ID` process per node (default timings,
fsync on) on free loopback ports under a temporary directory, each node with
a `peer_address` (Raft over plain TCP, as configs/local.toml ships; with
`--grpc-peers` none, so peers use the gRPC Pipe stream), runs
`railyard bench` for each row of the matrix, measures failover, stops every
node by pid and prints a markdown table, headed by the machine and the date,
ready for bench/RESULTS.md.

The matrix (issue 6): single-record puts with 1 and 64 in flight; batches of
100 and 500 records with 16 in flight (over the streaming producer, and 500
also as unary PutRecords calls); reads of the stream from the start
(linearizable, and stale from the local node).

Single-record puts run both ways: through the client's coalescing of
concurrent puts (the default path) and one PutRecord call per put
(`--no-coalesce`).

Peers: unless `--no-peers`, the same invocation then runs the peer systems'
benchmarks (`etcd_bench.py`, `nats_bench.py` from `--peers-dir`, by default
`../shared/peers` next to the repository, with the Python of their
`setup.sh`), one after the other and never alongside railyard, and prints
their figures and railyard's ratio to each, so every ratio is a same-run
ratio. A peer whose script or binary is missing is skipped with a note.

Floor: unless `--no-floor`, the same invocation also measures grpc.aio's
own per-call cost on this machine (`bench/grpc_floor.py`: a server that
answers PutRecord with a constant, called from 1 and 64 tasks) and prints
the per-call put rows against it: the share of the transport's ceiling a
real put reaches.

Failover: the leader is killed with SIGKILL while no put is in flight; the
time from the kill to the acknowledgement of the first put sent after it is
one sample. The killed node is restarted and the cluster allowed to converge
before the next run; the median, min and max over the runs are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from grpc_floor import measure_floor

from railyard.client import RailyardClient, RailyardError

HOST = "127.0.0.1"
RAILYARD = [sys.executable, "-m", "railyard"]
# Nodes get this long to elect a leader after start (Python start-up on a busy box is slow).
LEADER_TIMEOUT_S = 60.0
# A node gets this long to stop on SIGTERM before it is killed.
STOP_TIMEOUT_S = 30.0
POLL_S = 0.2
# The client's deadline during failover: far beyond any election with default timings.
FAILOVER_TIMEOUT_S = 30.0
# A restarted node must be back in step with the leader within this long.
CATCH_UP_TIMEOUT_S = 60.0

# (label, bench arguments): the standard matrix.
MATRIX: list[tuple[str, list[str]]] = [
    ("put batch 1, 1 in flight", ["put", "--batch", "1", "--in-flight", "1"]),
    (
        "put batch 1, 1 in flight (per call)",
        ["put", "--batch", "1", "--in-flight", "1", "--no-coalesce"],
    ),
    ("put batch 1, 64 in flight", ["put", "--batch", "1", "--in-flight", "64"]),
    (
        "put batch 1, 64 in flight (per call)",
        ["put", "--batch", "1", "--in-flight", "64", "--no-coalesce"],
    ),
    (
        "put batch 1, 1 in flight (per call, native)",
        ["put", "--batch", "1", "--in-flight", "1", "--no-coalesce", "--transport", "native"],
    ),
    (
        "put batch 1, 64 in flight (per call, native)",
        ["put", "--batch", "1", "--in-flight", "64", "--no-coalesce", "--transport", "native"],
    ),
    ("put batch 100, 16 in flight (stream)", ["put", "--batch", "100", "--in-flight", "16"]),
    ("put batch 500, 16 in flight (stream)", ["put", "--batch", "500", "--in-flight", "16"]),
    (
        "put batch 500, 16 in flight (PutRecords)",
        ["put", "--batch", "500", "--in-flight", "16", "--mode", "unary"],
    ),
    ("get (linearizable), page 1000", ["get", "--page", "1000"]),
    ("get (stale), page 1000", ["get", "--page", "1000", "--stale"]),
]


def free_ports(n: int) -> list[int]:
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def write_config(root: Path, nodes: int, peer_tcp: bool) -> tuple[Path, list[str]]:
    """The cluster file and the client endpoints (each node's address)."""
    lines = [
        "[cluster]",
        'name = "bench"',
        'data_dir = "data"',
        "heartbeat_interval_ms = 100",
        "election_timeout_ms = 1000",
        "snapshot_every = 10000",
        "auto_create_streams = true",
    ]
    ports = free_ports(3 * nodes)
    endpoints = [f"{HOST}:{port}" for port in ports[:nodes]]
    for i, address in enumerate(endpoints, start=1):
        lines += ["", "[[nodes]]", f'id = "n{i}"', f'address = "{address}"']
        if peer_tcp:
            lines.append(f'peer_address = "{HOST}:{ports[nodes + i - 1]}"')
        lines.append(f'native_address = "{HOST}:{ports[2 * nodes + i - 1]}"')
    path = root / "bench.toml"
    path.write_text("\n".join(lines) + "\n")
    return path, endpoints


def railyard(*args: str, timeout_s: float | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RAILYARD, *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def wait_for_leader(config: Path) -> str:
    deadline = time.monotonic() + LEADER_TIMEOUT_S
    while time.monotonic() < deadline:
        done = railyard("status", "-c", str(config), "-o", "json", timeout_s=LEADER_TIMEOUT_S)
        if done.returncode == 0:
            doc = json.loads(done.stdout)
            if doc["leader"] and all(n["reachable"] for n in doc["nodes"]):
                return str(doc["leader"])
        time.sleep(POLL_S)
    raise SystemExit(f"no leader within {LEADER_TIMEOUT_S:g}s")


def run_bench(config: Path, args: list[str], duration: str, size: str) -> dict[str, Any]:
    extra = ["--duration", duration] if args[0] == "put" and duration else []
    if args[0] == "put":
        extra += ["--size", size]
    command = ["bench", *args, *extra, "-c", str(config), "-o", "json"]
    done = railyard(*command)
    if done.returncode != 0:
        return {"error": done.stderr.strip() or f"exit {done.returncode}"}
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# A peer script's result lines:
# "<system> ... in-flight K  ops/s MEDIAN [MIN-MAX]  p50 MS [MIN-MAX] ms"
# and "... failover (...) s: MEDIAN [MIN-MAX]".
PEER_RATE = re.compile(r"in-flight (\d+)\s+\S+/s (\d+) \[\d+-\d+\]\s+p50 ([\d.]+)")
PEER_FAILOVER = re.compile(r"failover \(kill -9.*\) s: ([\d.]+) \[")
# (name, script, binary it starts) of each peer, in the order they run.
PEERS = [("etcd", "etcd_bench.py", "etcd"), ("JetStream", "nats_bench.py", "nats-server")]
# A peer's whole script (3 runs per in-flight level, then failover rounds).
PEER_TIMEOUT_S = 900.0
# How the floor is named among the peers' figures, and its calls per in-flight level.
FLOOR = "grpc.aio no-op"
FLOOR_CALLS = 6400


def run_peer(peers_dir: Path, python: str, script: str) -> dict[str, Any]:
    """A peer benchmark's figures: {"rates": {in_flight: (ops/s, p50 ms)}, "failover_s"}."""
    done = subprocess.run(
        [python, str(peers_dir / script)],
        capture_output=True,
        text=True,
        timeout=PEER_TIMEOUT_S,
        check=False,
    )
    rates = {int(k): (float(r), float(p50)) for k, r, p50 in PEER_RATE.findall(done.stdout)}
    failover = PEER_FAILOVER.search(done.stdout)
    if not rates:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        return {"error": tail[0]}
    return {"rates": rates, "failover_s": float(failover.group(1)) if failover else None}


def ratio_lines(
    rows: list[tuple[str, dict[str, Any]]],
    peers: dict[str, dict[str, Any]],
    failover: list[float],
) -> list[str]:
    """Each target's railyard figure over the peer's from this run."""
    ours = {label: r for label, r in rows if "error" not in r}
    out = ["| railyard run | railyard | peer (same run) | ratio |", "|---|---:|---:|---:|"]

    def line(label: str, peer: str, in_flight: int, what: str = "records_per_sec") -> None:
        theirs = peers.get(peer, {}).get("rates", {}).get(in_flight)
        if label not in ours or theirs is None:
            return
        mine = ours[label][what]
        other = theirs[0] if what == "records_per_sec" else theirs[1]
        unit = "/s" if what == "records_per_sec" else " ms p50"
        if mine is None or not other:
            return
        out.append(
            f"| {label}{'' if what == 'records_per_sec' else ' (p50)'} "
            f"| {fmt(float(mine), 2 if unit != '/s' else 0)}{unit} "
            f"| {peer} {in_flight} in flight: {fmt(other, 2 if unit != '/s' else 0)}{unit} "
            f"| {mine / other:.2f}x |"
        )

    line("put batch 1, 1 in flight", "etcd", 1)
    line("put batch 1, 1 in flight", "etcd", 1, "p50_ms")
    line("put batch 1, 1 in flight (per call)", "etcd", 1, "p50_ms")
    line("put batch 1, 64 in flight", "etcd", 64)
    line("put batch 1, 64 in flight", "JetStream", 64)
    line("put batch 1, 64 in flight (per call)", "etcd", 64)
    line("put batch 1, 1 in flight (per call, native)", "etcd", 1, "p50_ms")
    line("put batch 1, 64 in flight (per call, native)", "etcd", 64)
    line("put batch 500, 16 in flight (stream)", "JetStream", 64)
    line("put batch 1, 1 in flight (per call)", FLOOR, 1, "p50_ms")
    line("put batch 1, 64 in flight (per call)", FLOOR, 64)
    for peer, figures in peers.items():
        theirs = figures.get("failover_s")
        if failover and theirs:
            mine = statistics.median(failover)
            out.append(
                f"| failover (median) | {mine:.2f} s | {peer}: {theirs:.2f} s "
                f"| {mine / theirs:.2f}x |"
            )
    return out if len(out) > 2 else []


def peer_lines(peers: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    for peer, figures in peers.items():
        if "error" in figures:
            out.append(f"- {peer}: not measured ({figures['error']})")
            continue
        rates = ", ".join(
            f"{k} in flight {r:,.0f}/s (p50 {p50:.2f} ms)"
            for k, (r, p50) in sorted(figures["rates"].items())
        )
        failover = figures.get("failover_s")
        cpu = "; ".join(
            f"{k} in flight: server {server:.0f} us, client {client:.0f} us of CPU a call"
            for k, (server, client) in sorted(figures.get("cpu_us", {}).items())
        )
        out.append(
            f"- {peer}: {rates}"
            + (f"; failover {failover:.2f} s" if failover else "")
            + (f"; {cpu}" if cpu else "")
        )
    return out


def fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def markdown(rows: list[tuple[str, dict[str, Any]]], header: str) -> str:
    out = [
        header,
        "",
        "| run | records/s | requests/s | MB/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in rows:
        if "error" in r:
            out.append(f"| {label} | failed: {r['error']} | | | | | |")
            continue
        out.append(
            f"| {label} | {fmt(r['records_per_sec'])} | {fmt(r['requests_per_sec'])} "
            f"| {fmt(r['mb_per_sec'], 2)} | {fmt(r['p50_ms'], 2)} | {fmt(r['p99_ms'], 2)} "
            f"| {r['errors']} |"
        )
    return "\n".join(out)


def machine() -> str:
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )


class Nodes:
    """One `railyard node start --id` process per node of `config`, stopped by pid."""

    def __init__(self, root: Path, config: Path, node_ids: list[str]) -> None:
        self.root = root
        self.config = config
        self.node_ids = node_ids
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        # What runs `railyard` for a node (a profiler may wrap it).
        self.command: Callable[[str], list[str]] = lambda _node_id: RAILYARD

    def start(self, node_id: str) -> None:
        with (self.root / f"{node_id}.log").open("ab") as log:
            self.procs[node_id] = subprocess.Popen(
                [*self.command(node_id), "node", "start", "-c", str(self.config), "--id", node_id],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def kill(self, node_id: str) -> None:
        proc = self.procs[node_id]
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT_S)

    def stop_all(self) -> None:
        running = [p for p in self.procs.values() if p.poll() is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        for proc in running:
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)


async def _converged(client: RailyardClient) -> bool:
    statuses = [st for _, st in await client.cluster_status()]
    if any(st is None for st in statuses):
        return False
    commits = {st.commit_index for st in statuses if st is not None}
    applied = {st.applied_index for st in statuses if st is not None}
    leaders = {st.leader_id for st in statuses if st is not None}
    return len(commits) == 1 and applied == commits and len(leaders) == 1 and "" not in leaders


async def _leader_id(client: RailyardClient) -> str | None:
    for _, st in await client.cluster_status():
        if st is not None and st.leader_id:
            return st.leader_id
    return None


async def measure_failover(nodes: Nodes, endpoints: list[str], runs: int) -> list[float]:
    """Seconds from SIGKILL of the leader to the first acknowledged put sent after it."""
    samples: list[float] = []
    async with RailyardClient(endpoints, timeout_s=FAILOVER_TIMEOUT_S) as client:
        await client.put("failover", b"warm-up")
        for _ in range(runs):
            deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
            while not await _converged(client):
                if time.monotonic() > deadline:
                    raise SystemExit("the cluster did not converge between failover runs")
                await asyncio.sleep(POLL_S)
            leader = await _leader_id(client)
            if leader is None:
                raise SystemExit("no leader before a failover run")
            await client.put("failover", b"before")
            killed_at = time.monotonic()
            nodes.kill(leader)
            try:
                await client.put("failover", b"after")
            except RailyardError as e:
                raise SystemExit(f"no put acknowledged after killing {leader}: {e}") from None
            samples.append(time.monotonic() - killed_at)
            nodes.start(leader)
    return samples


def rss_mib(pid: int) -> float:
    """Resident memory of a process (Linux /proc), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure_memory(nodes: Nodes, config: Path, records: int, steps: int, size: str) -> list[str]:
    """Ingest `records` records in `steps` equal parts; each node's RSS after each part."""
    lines = [
        f"Memory: RSS of each node (MiB) while one stream grows to {records:,} records "
        f"of {size} bytes (batches of 500, 16 in flight):",
        "",
        "| records | " + " | ".join(nodes.node_ids) + " |",
        "|---:|" + "---:|" * len(nodes.node_ids),
    ]
    per_step = records // steps
    for step in range(1, steps + 1):
        args = ["put", "--stream", "memory", "--batch", "500", "--in-flight", "16"]
        done = run_bench(config, [*args, "--count", str(per_step)], "", size)
        if "error" in done:
            raise SystemExit(f"memory run failed: {done['error']}")
        rss = [rss_mib(nodes.procs[n].pid) for n in nodes.node_ids]
        lines.append(f"| {step * per_step:,} | " + " | ".join(f"{r:.0f}" for r in rss) + " |")
        print(f"  memory: {step * per_step:,} records", file=sys.stderr, flush=True)
    return lines


def failover_line(samples: list[float]) -> str:
    if not samples:
        return ""
    ms = sorted(s * 1000 for s in samples)
    return (
        f"Failover (leader SIGKILL -> first acknowledged put), {len(ms)} runs: "
        f"median {statistics.median(ms):.0f} ms, min {ms[0]:.0f} ms, max {ms[-1]:.0f} ms."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", default="10s", help="length of each put run (e.g. 10s)")
    parser.add_argument("--size", default="100", help="record size for puts (e.g. 100, 1KiB)")
    parser.add_argument("--nodes", type=int, default=3, help="cluster size")
    parser.add_argument("--failover-runs", type=int, default=10, help="0 skips failover")
    parser.add_argument("--skip-matrix", action="store_true", help="measure failover only")
    parser.add_argument(
        "--memory-records",
        type=int,
        default=0,
        help="also grow one stream to this many records and report each node's RSS (0 skips)",
    )
    parser.add_argument("--memory-steps", type=int, default=4, help="RSS samples while growing")
    parser.add_argument(
        "--grpc-peers",
        action="store_true",
        help="no peer_address: Raft traffic over the gRPC Pipe stream instead of plain TCP",
    )
    parser.add_argument(
        "--peers-dir",
        type=Path,
        default=Path(__file__).resolve().parents[1].parent / "shared" / "peers",
        help="the peers' benchmark scripts (default: ../shared/peers next to the repository)",
    )
    parser.add_argument(
        "--peers-python",
        default=os.environ.get("PEERS_PYTHON", "/tmp/peers/venv/bin/python"),
        help="the Python the peers' setup.sh installed (default: /tmp/peers/venv/bin/python)",
    )
    parser.add_argument("--no-peers", action="store_true", help="railyard only")
    parser.add_argument(
        "--no-floor", action="store_true", help="skip grpc.aio's no-op floor (bench/grpc_floor.py)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="railyard-bench-") as tmp:
        root = Path(tmp)
        config, endpoints = write_config(root, args.nodes, peer_tcp=not args.grpc_peers)
        node_ids = [f"n{i}" for i in range(1, args.nodes + 1)]
        nodes = Nodes(root, config, node_ids)
        rows: list[tuple[str, dict[str, Any]]] = []
        samples: list[float] = []
        memory: list[str] = []
        try:
            for node_id in node_ids:
                nodes.start(node_id)
            leader = wait_for_leader(config)
            print(
                f"cluster up (leader {leader}); running {len(MATRIX)} benchmarks", file=sys.stderr
            )
            for label, bench_args in [] if args.skip_matrix else MATRIX:
                print(f"  {label} ...", file=sys.stderr, flush=True)
                rows.append((label, run_bench(config, bench_args, args.duration, args.size)))
            if args.failover_runs > 0:
                print(f"  failover x{args.failover_runs} ...", file=sys.stderr, flush=True)
                samples = asyncio.run(measure_failover(nodes, endpoints, args.failover_runs))
            if args.memory_records > 0:
                memory = measure_memory(
                    nodes, config, args.memory_records, args.memory_steps, args.size
                )
        finally:
            nodes.stop_all()
    peer_figures: dict[str, dict[str, Any]] = {}
    for name, script, binary in [] if args.no_peers else PEERS:
        if not (args.peers_dir / script).exists() or not Path(args.peers_python).exists():
            peer_figures[name] = {"error": f"no {args.peers_dir / script} or {args.peers_python}"}
        elif shutil.which(binary) is None:
            peer_figures[name] = {"error": f"{binary} is not installed (see the peers' setup.sh)"}
        else:
            print(f"  peer {name} ...", file=sys.stderr, flush=True)
            peer_figures[name] = run_peer(args.peers_dir, args.peers_python, script)
    if not args.no_floor:
        print(f"  {FLOOR} floor ...", file=sys.stderr, flush=True)
        floor = measure_floor(FLOOR_CALLS, [1, 64])
        peer_figures[FLOOR] = {
            "rates": {int(r["in_flight"]): (r["calls_per_sec"], r["p50_ms"]) for r in floor},
            "cpu_us": {
                int(r["in_flight"]): (r["server_cpu_us_per_call"], r["client_cpu_us_per_call"])
                for r in floor
            },
        }
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    peers = "gRPC Pipe" if args.grpc_peers else "plain TCP"
    flag = (" --grpc-peers" if args.grpc_peers else "") + (" --no-floor" if args.no_floor else "")
    header = (
        f"{args.nodes} nodes on {HOST}, fsync on, peer traffic over {peers}, "
        f"{args.size}-byte records, {args.duration} per put run; {machine()}; {now}\n\n"
        f"Command: `.venv/bin/python bench/run_matrix.py --duration {args.duration} "
        f"--size {args.size} --nodes {args.nodes} --failover-runs {args.failover_runs}{flag}`"
    )
    print(markdown(rows, header))
    if samples:
        print("\n" + failover_line(samples))
    if memory:
        print("\n" + "\n".join(memory))
    if peer_figures:
        print("\nPeers and the floor, run by this invocation after railyard:\n")
        print("\n".join(peer_lines(peer_figures)))
        ratios = ratio_lines(rows, peer_figures, samples)
        if ratios:
            print("\nSame-run ratios (railyard / peer):\n")
            print("\n".join(ratios))
    return 0 if all("error" not in r for _, r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
