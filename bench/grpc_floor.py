"""grpc.aio's own floor: a server that does nothing, called as a railyard client calls a node.

    .venv/bin/python bench/grpc_floor.py [--calls 6400] [--in-flight 1,64] [-o json]

A per-call put pays grpc.aio's per-call cost in the client and in the
leader before any of railyard's work. This measures that cost alone on this
machine: a child process serves `railyard.v1.Streams/PutRecord` with
grpc.aio (the node's server options, no interceptors) and answers every call
at once with a constant `PutRecordResponse`; this process calls it with
grpc.aio from `--in-flight` tasks, 100-byte records, as `railyard bench put
--no-coalesce` does. Per in-flight level it reports calls/s, the latency's
p50 and p99, and each side's CPU per call (the operating system's
accounting of the whole process, every thread of it).

`bench/run_matrix.py` runs it after railyard in the same invocation, so the
matrix can say what share of the floor a real put reaches.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import grpc

from railyard.node.grpc_options import SERVER_OPTIONS
from railyard.proto import railyard_pb2 as pb

HOST = "127.0.0.1"
METHOD = "/railyard.v1.Streams/PutRecord"
RECORD_BYTES = 100
WARM_UP_CALLS = 200
CALL_TIMEOUT_S = 10.0
# The whole measurement of one in-flight level: a bound on a run gone wrong.
LEVEL_TIMEOUT_S = 120.0
TICKS = os.sysconf("SC_CLK_TCK")


def serve() -> None:
    """The child: serve the no-op method, print the port, stop when stdin closes."""

    async def put(request: pb.PutRecordRequest, context: Any) -> pb.PutRecordResponse:
        return pb.PutRecordResponse(sequence=1)

    async def main() -> None:
        server = grpc.aio.server(options=SERVER_OPTIONS)
        handler = grpc.method_handlers_generic_handler(
            "railyard.v1.Streams",
            {
                "PutRecord": grpc.unary_unary_rpc_method_handler(
                    put,
                    request_deserializer=pb.PutRecordRequest.FromString,
                    response_serializer=pb.PutRecordResponse.SerializeToString,
                )
            },
        )
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port(f"{HOST}:0")
        await server.start()
        print(port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await server.stop(None)

    asyncio.run(main())


def process_cpu_s(pid: int) -> float:
    """User + system CPU of a running process, every thread of it (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def measure(port: int, server_pid: int, calls: int, in_flight: int) -> dict[str, float]:
    async with grpc.aio.insecure_channel(f"{HOST}:{port}") as channel:
        call = channel.unary_unary(
            METHOD,
            request_serializer=pb.PutRecordRequest.SerializeToString,
            response_deserializer=pb.PutRecordResponse.FromString,
        )
        request = pb.PutRecordRequest(
            stream="bench", data=os.urandom(RECORD_BYTES), producer_id="floor", producer_sequence=1
        )
        latencies: list[float] = []

        async def caller(count: int) -> None:
            for _ in range(count):
                started = time.perf_counter()
                await call(request, timeout=CALL_TIMEOUT_S)
                latencies.append(time.perf_counter() - started)

        await caller(WARM_UP_CALLS)
        latencies.clear()
        per_caller = max(1, calls // in_flight)
        server_before, client_before = process_cpu_s(server_pid), time.process_time()
        started = time.monotonic()
        await asyncio.gather(*(caller(per_caller) for _ in range(in_flight)))
        elapsed = time.monotonic() - started
        server_cpu = process_cpu_s(server_pid) - server_before
        client_cpu = time.process_time() - client_before
    done = len(latencies)
    latencies.sort()
    return {
        "in_flight": in_flight,
        "calls": done,
        "calls_per_sec": done / elapsed,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": latencies[min(done - 1, int(done * 0.99))] * 1e3,
        "server_cpu_us_per_call": server_cpu / done * 1e6,
        "client_cpu_us_per_call": client_cpu / done * 1e6,
    }


def measure_floor(calls: int, levels: list[int]) -> list[dict[str, float]]:
    """One result per in-flight level, against one no-op server child."""
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        return [
            asyncio.run(asyncio.wait_for(measure(port, server.pid, calls, k), LEVEL_TIMEOUT_S))
            for k in levels
        ]
    finally:
        assert server.stdin is not None
        server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def table(results: list[dict[str, float]]) -> str:
    out = [
        "| in flight | calls/s | p50 ms | p99 ms | server CPU us/call | client CPU us/call |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        out.append(
            f"| {r['in_flight']:.0f} | {r['calls_per_sec']:,.0f} | {r['p50_ms']:.2f} "
            f"| {r['p99_ms']:.2f} | {r['server_cpu_us_per_call']:.0f} "
            f"| {r['client_cpu_us_per_call']:.0f} |"
        )
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, default=6400, help="calls per in-flight level")
    parser.add_argument("--in-flight", default="1,64", help="comma-separated levels")
    parser.add_argument("-o", "--output", choices=["table", "json"], default="table")
    args = parser.parse_args()
    if args.serve:
        serve()
        return 0
    levels = [int(k) for k in args.in_flight.split(",")]
    results = measure_floor(args.calls, levels)
    print(json.dumps(results) if args.output == "json" else table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
