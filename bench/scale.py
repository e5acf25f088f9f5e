"""Cost as a cluster's data grows: the scale rows of bench/RESULTS.md.

    .venv/bin/python bench/scale.py [--records 10000000] [--streams 10000]
                                    [--behind 1000000] [--only big,streams,sizes,behind,nodes]
                                    [--time-limit 3h]

Each part runs on fresh local clusters (`railyard node start --id` per
node, the standard matrix's config: fsync on, peers over plain TCP, JSON
logs) under a temporary directory, and stops every node it started by pid:

- big: one stream grown to `--records` records of `--size` bytes in
  batches of 500 (16 in flight), in `--steps` parts; the put rate of each
  part, the RSS of each node after each part, GetRecords latency (1,000
  records, linearizable) at the head and at the tail of the stream, the
  last snapshot's time (from the node's `snapshot_taken` log line) and
  size (its file), and the restart time of a follower (SIGTERM, start,
  until its status answers, and until it applied what the leader
  committed), and when the restarted node's background scrub of its state
  ended (its `state_scrubbed` log line).
- streams: `--streams` streams with `--per-stream` records each (one
  PutRecords call per stream, 64 calls in flight, streams created on first
  put); the put rate, and the time of `railyard stream list` (the whole
  command) once they exist.
- sizes: records of 1 KiB, 64 KiB and 1 MiB (`--size-bytes` of each,
  batches of at most 512 KiB, 16 in flight): MB/s.
- behind: a follower stopped while `--behind` records are put, then
  started again: the time until it applied what the leader committed, the
  MB/s that makes, whether it caught up through a snapshot, and the
  leader's put rate meanwhile (5-s runs of batches of 500 while it catches
  up) against the rate before.
- nodes: a 3-node and a 5-node cluster, single puts at 64 in flight
  (coalesced) and batches of 500 at 16 in flight, `--duration` each.

Progress goes to stderr; the result is a markdown table, then one JSON
object, on stdout. Every bench run is bounded by its count or duration
and by a timeout; the whole run stops starting new work after
`--time-limit` (what ran is still reported).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from run_matrix import (
    Nodes,
    machine,
    railyard,
    rss_mib,
    wait_for_leader,
    write_config,
)

from railyard.client import RailyardClient

PARTS = ("big", "streams", "sizes", "behind", "nodes")
# A bench command: far beyond any run this script asks for.
BENCH_TIMEOUT_S = 3600.0
# Polling a node that is catching up or restarting.
POLL_S = 0.2
CATCH_UP_TIMEOUT_S = 3600.0
# GetRecords calls timed at each end of the big stream (the first few are warm-up).
READ_SAMPLES = 60
READ_WARMUP = 10
# Single calls per stream in the streams part, in flight at once.
STREAM_PUTS_IN_FLIGHT = 64
# (label, record size, records per batch) of the sizes part: at most 512 KiB a batch.
SIZES = [("1 KiB", 1 << 10, 500), ("64 KiB", 64 << 10, 8), ("1 MiB", 1 << 20, 1)]
# Length of each put run while a follower catches up.
CATCH_UP_RUN = "5s"


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def seconds(text: str) -> float:
    """'90s', '15m', '3h' or a plain number of seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if text[-1:] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a duration must be a number with s, m or h, not {text!r}"
        ) from None


class Cluster:
    """A fresh local cluster in `root`, its nodes logging JSON, stopped by pid on exit."""

    def __init__(self, root: Path, nodes: int) -> None:
        root.mkdir(parents=True)
        self.root = root
        self.config, self.endpoints = write_config(root, nodes, peer_tcp=True)
        self.node_ids = [f"n{i}" for i in range(1, nodes + 1)]
        self.nodes = Nodes(root, self.config, self.node_ids)
        self.leader = ""

    def __enter__(self) -> Cluster:
        os.environ["RAILYARD_LOG_FORMAT"] = "json"  # the nodes inherit it
        try:
            for node_id in self.node_ids:
                self.nodes.start(node_id)
            self.leader = wait_for_leader(self.config)
        except BaseException:
            self.nodes.stop_all()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.nodes.stop_all()

    def followers(self) -> list[str]:
        return [n for n in self.node_ids if n != self.leader]

    def stop(self, node_id: str) -> None:
        """SIGTERM one node and wait for it (by pid)."""
        proc = self.nodes.procs[node_id]
        proc.terminate()
        proc.wait(timeout=60)

    def bench(self, *args: str) -> dict[str, Any]:
        done = railyard(
            "bench", *args, "-c", str(self.config), "-o", "json", timeout_s=BENCH_TIMEOUT_S
        )
        if done.returncode != 0:
            raise SystemExit(f"railyard bench {' '.join(args)} failed: {done.stderr.strip()}")
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def rss(self) -> dict[str, float]:
        return {
            n: round(rss_mib(p.pid), 1) for n, p in self.nodes.procs.items() if p.poll() is None
        }

    def last_snapshot(self, node_id: str) -> dict[str, Any]:
        """The node's last `snapshot_taken` (seconds, index) and its newest snapshot file's size."""
        taken: dict[str, Any] = {}
        with (self.root / f"{node_id}.log").open() as log:
            for line in log:
                if '"snapshot_taken"' in line:
                    with contextlib.suppress(ValueError):
                        taken = json.loads(line)["fields"]
        files = sorted(
            (self.root / "data" / node_id / "snapshots").glob("snapshot-*.db"),
            key=lambda p: p.stat().st_mtime,
        )
        return {
            "seconds": taken.get("seconds"),
            "index": taken.get("index"),
            "bytes": files[-1].stat().st_size if files else None,
        }

    def scrubbed_after(self, node_id: str, offset: int) -> float | None:
        """Seconds the node's `state_scrubbed` line after `offset` of its log reports, if any."""
        with (self.root / f"{node_id}.log").open() as log:
            log.seek(offset)
            for line in log:
                if '"state_scrubbed"' in line:
                    with contextlib.suppress(ValueError, KeyError):
                        return float(json.loads(line)["fields"]["seconds"])
        return None

    def log_size(self, node_id: str) -> int:
        return (self.root / f"{node_id}.log").stat().st_size


async def _wait_applied(client: RailyardClient, endpoint: str, target: int) -> None:
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if (await client.status(endpoint)).applied_index >= target:
                return
        await asyncio.sleep(POLL_S)
    raise SystemExit(f"{endpoint} did not apply index {target} within {CATCH_UP_TIMEOUT_S:g}s")


async def _leader_commit(client: RailyardClient) -> int:
    for _, st in await client.cluster_status():
        if st is not None and st.leader_id == st.node_id:
            return int(st.commit_index)
    raise SystemExit("no leader answered")


async def _read_latency(endpoints: list[str], stream: str) -> dict[str, float]:
    """p50/p99 ms of GetRecords (1,000 records, linearizable) at the head and the tail."""
    async with RailyardClient(endpoints) as client:
        info = await client.describe_stream(stream)
        ends = {
            "head": info.first_sequence,
            "tail": max(info.first_sequence, info.last_sequence - 999),
        }
        out: dict[str, float] = {}
        for name, start in ends.items():
            samples = []
            for i in range(READ_SAMPLES):
                began = time.perf_counter()
                response = await client.get_records(stream, start, limit=1000)
                if i >= READ_WARMUP:
                    samples.append((time.perf_counter() - began) * 1e3)
                if not response.records:
                    raise SystemExit(f"no records read at {name} ({start}) of {stream}")
            samples.sort()
            out[f"{name}_p50_ms"] = round(statistics.median(samples), 2)
            out[f"{name}_p99_ms"] = round(samples[int(len(samples) * 0.99) - 1], 2)
    return out


async def _restart_time(cluster: Cluster, node_id: str) -> dict[str, float]:
    """Seconds from starting a stopped node to its status answering, and to caught up."""
    endpoint = cluster.endpoints[cluster.node_ids.index(node_id)]
    async with RailyardClient(cluster.endpoints) as client:
        target = await _leader_commit(client)
        cluster.stop(node_id)
        offset = cluster.log_size(node_id)
        began = time.monotonic()
        cluster.nodes.start(node_id)
        deadline = began + CATCH_UP_TIMEOUT_S
        while True:
            with contextlib.suppress(Exception):
                await client.status(endpoint)
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{node_id} did not answer after a restart")
            await asyncio.sleep(POLL_S)
        serving = time.monotonic() - began
        await _wait_applied(client, endpoint, target)
        caught_up = time.monotonic() - began
        scrub = None
        while scrub is None and time.monotonic() < deadline:
            scrub = cluster.scrubbed_after(node_id, offset)
            await asyncio.sleep(POLL_S)
        return {
            "serving_s": round(serving, 2),
            "caught_up_s": round(caught_up, 2),
            "scrubbed_s": scrub,
        }


def part_big(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"records": args.records, "size": args.size, "steps": []}
    with Cluster(root / "big", 3) as cluster:
        per_step = args.records // args.steps
        for step in range(1, args.steps + 1):
            progress(f"big: part {step}/{args.steps} ({per_step:,} records)")
            r = cluster.bench(
                "put", "--stream", "big", "--batch", "500", "--in-flight", "16",
                "--size", str(args.size), "--count", str(per_step),
            )  # fmt: skip
            out["steps"].append(
                {
                    "records": step * per_step,
                    "records_per_sec": r["records_per_sec"],
                    "rss_mib": cluster.rss(),
                }
            )
        progress("big: reads at head and tail")
        out["reads"] = asyncio.run(_read_latency(cluster.endpoints, "big"))
        out["snapshot"] = {n: cluster.last_snapshot(n) for n in cluster.node_ids}
        follower = cluster.followers()[0]
        progress(f"big: restart of {follower}")
        out["restart"] = {"node": follower, **asyncio.run(_restart_time(cluster, follower))}
        out["rss_after_restart_mib"] = cluster.rss()
    return out


async def _many_streams(endpoints: list[str], streams: int, per_stream: int, size: int) -> float:
    """Records/s of one PutRecords call per stream, `STREAM_PUTS_IN_FLIGHT` at once."""
    payload = [(os.urandom(size), None) for _ in range(per_stream)]
    queue = iter(range(streams))
    async with RailyardClient(endpoints) as client:

        async def worker() -> None:
            for i in queue:
                await client.put_records(f"s{i:06d}", payload)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(STREAM_PUTS_IN_FLIGHT)))
        return streams * per_stream / (time.perf_counter() - began)


def part_streams(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    with Cluster(root / "streams", 3) as cluster:
        progress(f"streams: {args.streams:,} streams x {args.per_stream} records")
        rate = asyncio.run(
            _many_streams(cluster.endpoints, args.streams, args.per_stream, args.size)
        )
        progress("streams: railyard stream list")
        times = []
        for _ in range(3):
            began = time.perf_counter()
            done = railyard(
                "stream", "list", "-c", str(cluster.config), "-o", "json", timeout_s=600
            )
            times.append(time.perf_counter() - began)
            if done.returncode != 0:
                raise SystemExit(f"railyard stream list failed: {done.stderr.strip()}")
        listed = len(json.loads(done.stdout))
        return {
            "streams": args.streams,
            "per_stream": args.per_stream,
            "records_per_sec": round(rate, 1),
            "list_s": round(statistics.median(times), 2),
            "listed": listed,
            "rss_mib": cluster.rss(),
        }


def part_sizes(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    out = {}
    with Cluster(root / "sizes", 3) as cluster:
        for label, size, batch in SIZES:
            count = max(batch, args.size_bytes // size)
            progress(f"sizes: {label} x {count:,}")
            r = cluster.bench(
                "put", "--stream", f"size-{size}", "--batch", str(batch), "--in-flight", "16",
                "--size", str(size), "--count", str(count),
            )  # fmt: skip
            out[label] = {
                "records": count,
                "batch": batch,
                "mb_per_sec": r["mb_per_sec"],
                "records_per_sec": r["records_per_sec"],
                "p99_ms": r["p99_ms"],
            }
    return out


async def _catch_up(
    cluster: Cluster, node_id: str, run: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Start `node_id` again; time it until it applied the leader's commit of that moment.

    Put runs (`run`, one after the other on a thread) go on meanwhile; the
    one running when the node catches up is let finish.
    """
    endpoint = cluster.endpoints[cluster.node_ids.index(node_id)]
    async with RailyardClient(cluster.endpoints) as client:
        target = await _leader_commit(client)
        began = time.monotonic()
        cluster.nodes.start(node_id)
        rates: list[dict[str, Any]] = []
        done = asyncio.Event()

        async def load() -> None:
            while not done.is_set():
                rates.append(await asyncio.to_thread(run))

        loader = asyncio.create_task(load())
        try:
            await _wait_applied(client, endpoint, target)
            caught_up = time.monotonic() - began
        finally:
            done.set()
            await loader
        installed = int((await client.status(endpoint)).snapshots_installed)
        return {"caught_up_s": caught_up, "snapshots_installed": installed, "runs": rates}


def part_behind(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    with Cluster(root / "behind", 3) as cluster:

        def run() -> dict[str, Any]:
            return cluster.bench(
                "put", "--stream", "live", "--batch", "500", "--in-flight", "16",
                "--size", str(args.size), "--duration", CATCH_UP_RUN,
            )  # fmt: skip

        progress("behind: put rate with every node up")
        before = run()["records_per_sec"]
        follower = cluster.followers()[0]
        cluster.stop(follower)
        progress(f"behind: {follower} stopped; {args.behind:,} records put")
        during_down = cluster.bench(
            "put", "--stream", "behind", "--batch", "500", "--in-flight", "16",
            "--size", str(args.size), "--count", str(args.behind),
        )["records_per_sec"]  # fmt: skip
        progress(f"behind: {follower} started again; puts while it catches up")
        caught = asyncio.run(_catch_up(cluster, follower, run))
        rates = [r["records_per_sec"] for r in caught["runs"]]
        # What the follower missed up to the commit it is timed to: the records put while it
        # was down (their payload only).
        fetched = args.behind * args.size
        return {
            "behind": args.behind,
            "rate_before": before,
            "rate_two_nodes": during_down,
            "caught_up_s": round(caught["caught_up_s"], 2),
            "mb_per_sec": round(fetched / 1e6 / caught["caught_up_s"], 2),
            "via_snapshot": caught["snapshots_installed"] > 0,
            "rate_during": round(statistics.median(rates), 1) if rates else None,
            "runs_during": len(rates),
        }


def part_nodes(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    out = {}
    for n in (3, 5):
        with Cluster(root / f"nodes{n}", n) as cluster:
            progress(f"nodes: {n}-node cluster")
            single = cluster.bench(
                "put", "--batch", "1", "--in-flight", "64", "--size", str(args.size),
                "--duration", args.duration,
            )  # fmt: skip
            batch = cluster.bench(
                "put", "--stream", "b", "--batch", "500", "--in-flight", "16",
                "--size", str(args.size), "--duration", args.duration,
            )  # fmt: skip
            out[str(n)] = {
                "single_64": single["records_per_sec"],
                "single_64_p50_ms": single["p50_ms"],
                "batch_500": batch["records_per_sec"],
                "rss_mib": cluster.rss(),
            }
    return out


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown(results: dict[str, Any]) -> str:
    rows = ["| row | figure |", "|---|---|"]
    big = results.get("big")
    if big:
        for s in big["steps"]:
            rss = ", ".join(f"{n} {m:.0f}" for n, m in s["rss_mib"].items())
            rows.append(
                f"| one stream, {s['records']:,} records | put {fmt(s['records_per_sec'])} "
                f"records/s (this part); RSS MiB {rss} |"
            )
        r = big["reads"]
        rows.append(
            f"| GetRecords 1,000 at head / tail, {big['records']:,} records | "
            f"p50 {r['head_p50_ms']} / {r['tail_p50_ms']} ms, "
            f"p99 {r['head_p99_ms']} / {r['tail_p99_ms']} ms |"
        )
        snaps = "; ".join(
            f"{n} {fmt(s['seconds'] or 0.0)} s, {fmt((s['bytes'] or 0) / 1e6)} MB "
            f"at index {s['index']}"
            for n, s in big["snapshot"].items()
        )
        rows.append(f"| last snapshot (time, size) | {snaps} |")
        rs = big["restart"]
        rows.append(
            f"| restart of follower {rs['node']} | serving after {rs['serving_s']} s, "
            f"caught up after {rs['caught_up_s']} s; its state scrubbed in the background "
            f"in {rs.get('scrubbed_s')} s |"
        )
    st = results.get("streams")
    if st:
        rows.append(
            f"| {st['streams']:,} streams x {st['per_stream']} records | put "
            f"{fmt(st['records_per_sec'])} records/s; `railyard stream list` {st['list_s']} s "
            f"({st['listed']:,} listed) |"
        )
    for label, s in (results.get("sizes") or {}).items():
        if not isinstance(s, dict):
            continue  # the part's wall time and load
        rows.append(
            f"| records of {label} ({s['records']:,}, {s['batch']} per batch) | "
            f"{fmt(s['mb_per_sec'])} MB/s ({fmt(s['records_per_sec'])} records/s) |"
        )
    b = results.get("behind")
    if b:
        how = "through a snapshot" if b["via_snapshot"] else "from the log"
        rows.append(
            f"| follower {b['behind']:,} records behind | caught up in {b['caught_up_s']} s "
            f"({b['mb_per_sec']} MB/s, {how}); leader put rate meanwhile "
            f"{fmt(b['rate_during'])}/s against {fmt(b['rate_before'])}/s before "
            f"({fmt(b['rate_two_nodes'])}/s while it was down) |"
        )
    nodes = results.get("nodes")
    if nodes:
        for n, v in nodes.items():
            if not isinstance(v, dict):
                continue
            rows.append(
                f"| {n}-node cluster | single puts at 64 in flight {fmt(v['single_64'])}/s "
                f"(p50 {v['single_64_p50_ms']} ms); "
                f"batches of 500 {fmt(v['batch_500'])} records/s |"
            )
        if "3" in nodes and "5" in nodes:
            five, three = nodes["5"], nodes["3"]
            rows.append(
                f"| 5 nodes / 3 nodes | single {five['single_64'] / three['single_64']:.2f}x, "
                f"batches {five['batch_500'] / three['batch_500']:.2f}x |"
            )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Parts: " + ", ".join(PARTS) + ". See the module docstring for what each measures.",
    )
    parser.add_argument("--records", type=int, default=10_000_000, help="records in the big stream")
    parser.add_argument("--steps", type=int, default=4, help="parts the big stream grows in")
    parser.add_argument("--size", type=int, default=100, help="record size in bytes")
    parser.add_argument("--streams", type=int, default=10_000, help="streams in the streams part")
    parser.add_argument("--per-stream", type=int, default=3, help="records in each of them")
    parser.add_argument(
        "--size-bytes", type=int, default=256 << 20, help="bytes put per record size (sizes part)"
    )
    parser.add_argument("--behind", type=int, default=1_000_000, help="records a follower misses")
    parser.add_argument("--duration", default="10s", help="length of each run of the nodes part")
    parser.add_argument(
        "--only", default=",".join(PARTS), help="comma-separated parts to run (default: all)"
    )
    parser.add_argument(
        "--time-limit", type=seconds, default=seconds("3h"),
        help="start no new part after this long (e.g. 90m)",
    )  # fmt: skip
    args = parser.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"--only: unknown part {unknown[0]!r}; expected some of {', '.join(PARTS)}")
    for name in ("records", "steps", "size", "streams", "per_stream", "size_bytes", "behind"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    runners = {
        "big": part_big,
        "streams": part_streams,
        "sizes": part_sizes,
        "behind": part_behind,
        "nodes": part_nodes,
    }
    started = time.monotonic()
    results: dict[str, Any] = {
        "machine": machine(),
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_before": os.getloadavg(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    with tempfile.TemporaryDirectory(prefix="railyard-scale-") as tmp:
        for part in parts:
            if time.monotonic() - started > args.time_limit:
                progress(f"time limit reached: {part} not run")
                results.setdefault("not_run", []).append(part)
                continue
            began = time.monotonic()
            results[part] = runners[part](Path(tmp), args)
            results[part]["wall_s"] = round(time.monotonic() - began, 1)
            results[part]["load_after"] = os.getloadavg()
            progress(f"{part} done, load {os.getloadavg()[0]:.1f}: {json.dumps(results[part])}")
    results["ended"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(markdown(results))
    print()
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
