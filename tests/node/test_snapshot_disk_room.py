"""A received snapshot larger than the disk-space guard allows is refused (issue 14).

Declared larger than the room (`SnapshotChunk.total_bytes`): refused before
anything is written. Not declared, or declared falsely: cut off as soon as
what arrived passes the room, and what was written is deleted.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from railyard.node.driver import disk_space
from railyard.node.driver.disk_space import DISK_RESERVE_BYTES, DiskGuard
from railyard.node.peers.inbound import RaftService
from railyard.proto import railyard_pb2 as pb
from railyard.raft import NodeId
from railyard.storage import SnapshotStore

LOG = logging.getLogger("test")
ROOM = 1 << 20
LEADER = pb.Peer(cluster="c", node_id="n1")


class Usage(NamedTuple):
    total: int
    used: int
    free: int


class FakeDriver:
    def __init__(self, disk: DiskGuard) -> None:
        self.disk = disk
        self.delivered: list[Any] = []

    async def deliver_snapshot(self, message: Any, receiver: Any) -> None:
        self.delivered.append(message)


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RaftService:
    # Free space for a snapshot of ROOM bytes and the state restored from it.
    free = DISK_RESERVE_BYTES + disk_space.SNAPSHOT_AMPLIFICATION * ROOM
    monkeypatch.setattr(shutil, "disk_usage", lambda _: Usage(free * 2, free, free))
    disk = DiskGuard(NodeId("n2"), tmp_path, LOG)
    return RaftService(
        cluster="c",
        node_id=NodeId("n2"),
        peers=[NodeId("n1"), NodeId("n3")],
        driver=FakeDriver(disk),  # type: ignore[arg-type]
        snapshots=SnapshotStore(tmp_path / "snapshots"),
        log=LOG,
    )


def chunk(
    data: bytes, *, first: bool = False, total: int = 0, last: bool = False
) -> pb.SnapshotChunk:
    out = pb.SnapshotChunk(data=data, last=last, total_bytes=total, **{"from": LEADER})
    if first:
        out.message.CopyFrom(
            pb.RaftMessage(
                type=pb.MESSAGE_TYPE_SNAPSHOT,
                to="n2",
                sender="n1",
                term=3,
                snapshot=pb.SnapshotMeta(index=100, term=3, voters=["n1", "n2", "n3"]),
            )
        )
    return out


async def stream(*chunks: pb.SnapshotChunk) -> AsyncIterator[pb.SnapshotChunk]:
    for c in chunks:
        yield c


def written(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "snapshots").iterdir())


async def test_a_snapshot_declared_larger_than_the_room_is_refused_before_writing(
    service: RaftService, tmp_path: Path
) -> None:
    reason = await service.receive_snapshot(
        stream(chunk(b"x" * 1000, first=True, total=ROOM + 1), chunk(b"y", last=True))
    )
    assert reason is not None and f"a snapshot of {ROOM + 1} bytes does not fit" in reason
    assert written(tmp_path) == []


async def test_a_snapshot_growing_past_the_room_is_cut_off_and_deleted(
    service: RaftService, tmp_path: Path
) -> None:
    part = b"z" * (ROOM // 2 + 1)
    reason = await service.receive_snapshot(
        stream(chunk(part, first=True, total=10), chunk(part), chunk(b"", last=True))
    )
    assert reason is not None and "the most this node accepts" in reason
    assert written(tmp_path) == []
