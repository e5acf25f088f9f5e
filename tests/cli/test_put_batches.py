"""How `put -` cuts stdin into batches: by count and bytes, in order, nothing lost."""

from __future__ import annotations

import asyncio

import pytest

from railyard.cli.common import CliError
from railyard.cli.records import StdinBatches


async def batches_of(
    chunks: list[bytes], *, records: int, nbytes: int, record: int
) -> list[list[bytes]]:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for chunk in [*chunks, b""]:
        queue.put_nowait(chunk)
    cutter = StdinBatches(queue, records, nbytes)
    out = []
    while (batch := await cutter.next(record)) is not None:
        if batch:
            out.append(batch)
    return out


async def test_lines_split_across_chunks_keep_their_order() -> None:
    got = await batches_of([b"a\nb", b"b\r\n\nc", b"c\nd"], records=2, nbytes=100, record=10)
    assert [line for batch in got for line in batch] == [b"a", b"bb", b"cc", b"d"]
    assert got[0] == [b"a", b"bb"]  # empty line skipped, \r\n handled
    assert all(len(batch) <= 2 for batch in got)


async def test_batches_stay_under_the_byte_limit() -> None:
    got = await batches_of([b"xxxx\nyyyy\nzz\n"], records=100, nbytes=8, record=10)
    assert got == [[b"xxxx", b"yyyy"], [b"zz"]]


async def test_an_oversized_line_fails_after_the_lines_before_it_are_sent() -> None:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    queue.put_nowait(b"ok\n" + b"x" * 11 + b"\nlater\n")
    queue.put_nowait(b"")
    cutter = StdinBatches(queue, 100, 1000)
    assert await cutter.next(10) == [b"ok"]
    with pytest.raises(CliError, match="stdin line 2: record of 11 bytes"):
        await cutter.next(10)
