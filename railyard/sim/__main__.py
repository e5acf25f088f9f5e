"""Command line of the simulator: `python -m railyard.sim --nodes 5 --seeds 0-999`.

Prints one block per failing seed (the property, the details, the command
that replays it) and, last, exactly `<seeds> seeds, <violations> violations`.
Progress goes to stderr. Exit status 0 only when every seed passed.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import sys
import time
from collections.abc import Iterator, Sequence

from railyard.sim import breakage
from railyard.sim.breakage import BREAKS, broken
from railyard.sim.schedule import DEFAULT_STEPS, SeedResult, run_seed

# Progress lines on stderr at most this often, so long runs show they are alive.
PROGRESS_INTERVAL_S = 5.0


def parse_seeds(spec: str) -> list[int]:
    """ "17", "0-999" (inclusive) or a comma list of either: "1,5,10-12"."""
    seeds: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi) if dash else int(lo)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad seed range {part!r}") from None
        if last < first:
            raise argparse.ArgumentTypeError(f"empty seed range {part!r}")
        seeds.extend(range(first, last + 1))
    if not seeds:
        raise argparse.ArgumentTypeError("no seeds given")
    return seeds


def replay_command(
    seed: int, nodes: int, steps: int, rule: str | None, changes: bool = False
) -> str:
    command = f"python -m railyard.sim --nodes {nodes} --seeds {seed}"
    if steps != DEFAULT_STEPS:
        command += f" --steps {steps}"
    if changes:
        command += " --membership"
    if rule:
        command += f" --break {rule}"
    return command + " -v"


def report(
    result: SeedResult, nodes: int, steps: int, rule: str | None, changes: bool = False
) -> str:
    violation = result.violation
    assert violation is not None
    return (
        f"seed {result.seed}: {violation.prop} violated at t={result.at_time}: "
        f"{violation.detail}\n"
        f"  replay: {replay_command(result.seed, nodes, steps, rule, changes)}"
    )


def _start_worker(rule: str | None) -> None:
    """A --jobs worker breaks the same rule as its parent, for its whole life."""
    if rule is not None:
        breakage.apply(rule)


def run_all(
    seeds: list[int],
    nodes: int,
    steps: int,
    rule: str | None,
    trace: bool,
    jobs: int,
    changes: bool = False,
) -> Iterator[SeedResult]:
    """Results in seed order, computed here or by `jobs` worker processes."""
    one = functools.partial(run_seed, nodes=nodes, steps=steps, trace=trace, changes=changes)
    if jobs <= 1:
        with broken(rule):
            yield from map(one, seeds)
        return
    with multiprocessing.Pool(jobs, initializer=_start_worker, initargs=(rule,)) as pool:
        yield from pool.imap(one, seeds, chunksize=4)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m railyard.sim",
        description="Run randomized faulty schedules of Raft cores and check Raft's properties.",
    )
    parser.add_argument("--nodes", type=int, default=5, help="cores in the cluster (default 5)")
    parser.add_argument("--seeds", type=parse_seeds, default=[0], help='"17", "0-999", "1,4,9"')
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="ticks of faults per seed")
    parser.add_argument(
        "--break",
        dest="rule",
        choices=sorted(BREAKS),
        help="test only: break this rule of the core to show the checker catches it",
    )
    parser.add_argument(
        "--membership",
        action="store_true",
        help="add spare nodes and change the membership at random (add, promote, remove)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print each seed's trace")
    parser.add_argument(
        "--jobs", type=int, default=1, help="worker processes (default 1); output is the same"
    )
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.steps < 0 or args.jobs < 1:
        parser.error("--nodes and --jobs must be at least 1, --steps not negative")

    seeds: list[int] = args.seeds
    violations = 0
    started = last_progress = time.monotonic()
    results = run_all(
        seeds, args.nodes, args.steps, args.rule, args.verbose, args.jobs, args.membership
    )
    for done, result in enumerate(results, 1):
        if args.verbose:
            print("\n".join(result.trace))
            s = result.stats
            print(
                f"seed {result.seed}: {s.ticks} ticks, {s.messages} messages, {s.elections} "
                f"elections, {s.crashes} crashes, {s.committed} committed, {s.reads} reads"
            )
        if result.violation is not None:
            violations += 1
            print(report(result, args.nodes, args.steps, args.rule, args.membership), flush=True)
        now = time.monotonic()
        if now - last_progress >= PROGRESS_INTERVAL_S:
            last_progress = now
            print(
                f"[sim] {done}/{len(seeds)} seeds, {violations} violations, {now - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    print(f"{len(seeds)} seeds, {violations} violations")
    return 0 if violations == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
