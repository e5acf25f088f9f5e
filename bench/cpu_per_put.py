"""CPU per put, per process: a fresh 3-node cluster, one `railyard bench` run, each process's share.

    .venv/bin/python bench/cpu_per_put.py -- put --in-flight 64 --no-coalesce --count 6000 ...

Starts a cluster as `bench/run_matrix.py` writes it (peer TCP and a native
port per node), warms it with 300 per-call puts, then reads each node's
user + system CPU from /proc/<pid>/stat around one `railyard bench` command
and the bench process's own from `getrusage(RUSAGE_CHILDREN)` (its start-up,
about half a second of imports, included). Prints one JSON line: the run's
rate and latency, and microseconds of CPU per record for the leader, each
follower and the client.

Every node is started in its own session and stopped by pid.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
from pathlib import Path

from run_matrix import Nodes, railyard, wait_for_leader, write_config

TICKS = os.sysconf("SC_CLK_TCK")
WARM_UP = ["put", "--count", "300", "--in-flight", "1", "--no-coalesce"]


def process_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    bench = [a for a in sys.argv[1:] if a != "--"]
    if not bench:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="railyard-cpu-") as tmp:
        root = Path(tmp)
        config, _ = write_config(root, 3, peer_tcp=True)
        node_ids = ["n1", "n2", "n3"]
        nodes = Nodes(root, config, node_ids)
        try:
            for node_id in node_ids:
                nodes.start(node_id)
            leader = wait_for_leader(config)
            railyard("bench", *WARM_UP, "-c", str(config), "-o", "json")
            pids = {n: nodes.procs[n].pid for n in node_ids}
            before = {n: process_cpu_s(pid) for n, pid in pids.items()}
            client_before = children_cpu_s()
            done = railyard("bench", *bench, "-c", str(config), "-o", "json")
            client_cpu = children_cpu_s() - client_before
            after = {n: process_cpu_s(pid) for n, pid in pids.items()}
        finally:
            nodes.stop_all()
    if done.returncode != 0:
        print(done.stderr.strip(), file=sys.stderr)
        return 1
    result = json.loads(done.stdout)
    records = result["records"]
    per_put = {
        ("leader" if n == leader else f"follower {n}"): round(
            (after[n] - before[n]) / records * 1e6
        )
        for n in node_ids
    }
    per_put["client"] = round(client_cpu / records * 1e6)
    print(
        json.dumps(
            {
                "records_per_sec": result["records_per_sec"],
                "p50_ms": result["p50_ms"],
                "p99_ms": result["p99_ms"],
                "transport": result.get("transport"),
                "cpu_us_per_record": per_put,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
