"""boto3 PutRecords throughput against a Kinesis endpoint, in records per second.

    .venv/bin/python bench/kinesis_put_records.py --endpoint http://127.0.0.1:4567 \\
        --threads 4 --duration 10

Each thread has its own boto3 client and one call in flight (boto3 is
synchronous), writing to a fresh stream of `--shards` shards; the partition
keys spread every call over all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid

import boto3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default="http://127.0.0.1:4567")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()

    def client() -> object:
        return boto3.client(
            "kinesis",
            endpoint_url=args.endpoint,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )

    stream = f"bench-{uuid.uuid4().hex[:8]}"
    admin = client()
    admin.create_stream(StreamName=stream, ShardCount=args.shards)  # type: ignore[attr-defined]
    admin.get_waiter("stream_exists").wait(StreamName=stream)  # type: ignore[attr-defined]
    payload = os.urandom(args.size)
    counts = [0] * args.threads
    latencies: list[float] = []
    deadline = time.monotonic() + args.duration

    def produce(i: int) -> None:
        k = client()
        records = [{"Data": payload, "PartitionKey": f"{i}-{n}"} for n in range(args.batch)]
        while time.monotonic() < deadline:
            started = time.monotonic()
            answer = k.put_records(StreamName=stream, Records=records)  # type: ignore[attr-defined]
            latencies.append(time.monotonic() - started)
            counts[i] += args.batch - answer["FailedRecordCount"]

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(args.threads)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    latencies.sort()
    print(
        json.dumps(
            {
                "threads": args.threads,
                "batch": args.batch,
                "size": args.size,
                "records": sum(counts),
                "seconds": round(elapsed, 2),
                "records_per_s": round(sum(counts) / elapsed),
                "call_p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
                "call_p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
            }
        )
    )
    admin.delete_stream(StreamName=stream)  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
