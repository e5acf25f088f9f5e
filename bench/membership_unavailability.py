"""How long a 5-node cluster stops acknowledging writes during each membership change.

Starts a local 5-node cluster (peers over TCP, 50 ms heartbeats, 500 ms
election timeout, data in a temporary directory) and a sixth node with
`--join`, runs one producer that puts a record every `--interval-ms`
(waiting for each acknowledgement, retrying as the client does), and makes
the changes one after the other, a few quiet seconds apart:

1. add n6 as a learner;  2. promote n6;  3. remove a follower;
4. remove the leader.

For each change it prints the longest gap between two consecutive
acknowledgements from just before the change was asked until two seconds
after it was answered, and the longest gap of a quiet period before the
first change for comparison. Every process it starts is stopped by pid.

    python bench/membership_unavailability.py [--interval-ms 10] [-o json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from railyard.client import RailyardClient, RailyardError

HOST = "127.0.0.1"
NODES = 5
READY_TIMEOUT_S = 30.0
# Time around each change in which the acknowledgement gaps are looked at.
BEFORE_S = 0.5
AFTER_S = 2.0
QUIET_S = 3.0
NODE_START = [sys.executable, "-m", "railyard", "node", "start"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def write_config(root: Path, ids: list[str]) -> tuple[Path, dict[str, tuple[str, str]]]:
    addresses = {n: (f"{HOST}:{free_port()}", f"{HOST}:{free_port()}") for n in ids}
    lines = [
        "[cluster]",
        'name = "bench"',
        f'data_dir = "{root / "data"}"',
        "heartbeat_interval_ms = 50",
        "election_timeout_ms = 500",
        "auto_create_streams = true",
    ]
    for node_id in ids[:NODES]:
        address, peer_address = addresses[node_id]
        lines += ["", "[[nodes]]", f'id = "{node_id}"']
        lines += [f'address = "{address}"', f'peer_address = "{peer_address}"']
    path = root / "bench.toml"
    path.write_text("\n".join(lines) + "\n")
    return path, addresses


def start(path: Path, node_id: str, log_dir: Path, *extra: str) -> subprocess.Popen[bytes]:
    with open(log_dir / f"{node_id}.log", "ab") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "railyard",
                "node",
                "start",
                "-c",
                str(path),
                "--id",
                node_id,
                *extra,
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


class Producer:
    def __init__(self, client: RailyardClient, interval_s: float) -> None:
        self.client = client
        self.interval_s = interval_s
        self.acks: list[float] = []
        self.errors: list[str] = []
        self.stopped = False

    async def run(self) -> None:
        i = 0
        while not self.stopped:
            try:
                await self.client.put("bench", f"r{i}".encode())
            except RailyardError as exc:
                # Counted, and the gap it leaves shows in the figures.
                self.errors.append(f"{time.time():.3f} {exc}")
                continue
            self.acks.append(time.monotonic())
            i += 1
            await asyncio.sleep(self.interval_s)

    def longest_gap_ms(self, since: float, until: float) -> float:
        inside = [t for t in self.acks if since <= t <= until]
        gaps = [b - a for a, b in itertools.pairwise(inside)]
        return round(max(gaps, default=0.0) * 1000, 1)


async def measure(
    path: Path, addresses: dict[str, tuple[str, str]], interval_s: float
) -> dict[str, float]:
    endpoints = [addresses[n][0] for n in list(addresses)[:NODES]]
    results: dict[str, float] = {}
    async with RailyardClient(endpoints) as admin, RailyardClient(endpoints) as client:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            statuses = await admin.cluster_status()
            if all(st is not None and st.leader_id for _, st in statuses):
                break
            await asyncio.sleep(0.2)
        await client.put("bench", b"warm-up")
        producer = Producer(client, interval_s)
        task = asyncio.create_task(producer.run())
        await asyncio.sleep(QUIET_S)
        results["quiet (no change)"] = producer.longest_gap_ms(time.monotonic() - QUIET_S, 1e18)

        async def change(name: str, call: object) -> None:
            print(f"{time.time():.3f} {name}", file=sys.stderr)
            asked = time.monotonic()
            await call  # type: ignore[misc]
            answered = time.monotonic()
            await asyncio.sleep(AFTER_S)
            results[name] = producer.longest_gap_ms(asked - BEFORE_S, answered + AFTER_S)
            await asyncio.sleep(QUIET_S - AFTER_S)

        address, peer_address = addresses["n6"]
        await change("add learner", admin.add_member("n6", address, peer_address))
        for _ in range(100):
            listing = await admin.list_members()
            if any(m.id == "n6" and m.caught_up for m in listing.members):
                break
            await asyncio.sleep(0.1)
        await change("promote", admin.promote_member("n6"))
        leader = (await admin.list_members()).leader_id
        follower = next(n for n in ("n5", "n4", "n3") if n != leader)
        await change("remove follower", admin.remove_member(follower))
        leader = (await admin.list_members()).leader_id
        await change("remove leader", admin.remove_member(leader))
        producer.stopped = True
        await task
        results["records acknowledged"] = len(producer.acks)
        results["puts failed"] = len(producer.errors)
        for error in producer.errors:
            print(error, file=sys.stderr)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--interval-ms", type=float, default=10.0)
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    parser.add_argument("--keep", help="Keep data and logs in this directory.")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.keep:
            root = Path(args.keep)
            root.mkdir(parents=True)
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="membership-")))
        (root / "logs").mkdir()
        ids = [f"n{i + 1}" for i in range(NODES + 1)]
        path, addresses = write_config(root, ids)
        procs = [start(path, n, root / "logs") for n in ids[:NODES]]
        address, peer_address = addresses["n6"]
        procs.append(
            start(
                path,
                "n6",
                root / "logs",
                "--join",
                "--address",
                address,
                "--peer-address",
                peer_address,
            )
        )
        try:
            results = asyncio.run(measure(path, addresses, args.interval_ms / 1000))
        finally:
            for proc in procs:
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
    if args.output == "json":
        print(json.dumps(results, indent=2))
    else:
        for name, value in results.items():
            unit = "" if name in ("records acknowledged", "puts failed") else " ms longest gap"
            print(f"{name:24} {value}{unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
