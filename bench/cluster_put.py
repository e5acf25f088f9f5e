"""Start a fresh local cluster, run one `railyard bench` command against it, stop it.

    .venv/bin/python bench/cluster_put.py [--nodes 3] [--profile-dir DIR] -- put --count 2000 ...

One whole process per measurement, for A/B runs of two trees timed from
outside (`/usr/bin/time -v`, or any harness that alternates two commands):
with a fixed `--count`, the CPU of the whole process (nodes included, they
are its children) is the CPU per request times the count plus a constant
start-up. The bench's JSON result is printed on stdout.

`--profile-dir DIR` runs every node under cProfile (`python -m cProfile`)
and leaves `DIR/<node>.prof` after the nodes stopped; the event loop's
thread is what it sees.

Every node is started in its own session and stopped by pid (SIGTERM, then
SIGKILL after `STOP_TIMEOUT_S`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from run_matrix import RAILYARD, Nodes, railyard, wait_for_leader, write_config

# The whole bench command: a bound on a run that went wrong.
BENCH_TIMEOUT_S = 600.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=3, help="cluster size")
    parser.add_argument("--profile-dir", type=Path, help="run the nodes under cProfile")
    parser.add_argument("bench", nargs=argparse.REMAINDER, help="`railyard bench` arguments")
    args = parser.parse_args()
    bench = [a for a in args.bench if a != "--"]
    if not bench:
        parser.error("give the bench arguments after --, e.g. -- put --count 2000")
    with tempfile.TemporaryDirectory(prefix="railyard-put-") as tmp:
        root = Path(tmp)
        config, _ = write_config(root, args.nodes, peer_tcp=True)
        node_ids = [f"n{i}" for i in range(1, args.nodes + 1)]
        nodes = Nodes(root, config, node_ids)
        if args.profile_dir is not None:
            args.profile_dir.mkdir(parents=True, exist_ok=True)
            nodes.command = lambda node_id: [
                RAILYARD[0],
                "-m",
                "cProfile",
                "-o",
                str(args.profile_dir / f"{node_id}.prof"),
                "-m",
                "railyard",
            ]
        try:
            for node_id in node_ids:
                nodes.start(node_id)
            leader = wait_for_leader(config)
            print(f"leader {leader}", file=sys.stderr)
            done = railyard(
                "bench", *bench, "-c", str(config), "-o", "json", timeout_s=BENCH_TIMEOUT_S
            )
        finally:
            nodes.stop_all()
    if done.returncode != 0:
        print(done.stderr.strip(), file=sys.stderr)
        return 1
    print(json.dumps({"leader": leader, **json.loads(done.stdout)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
