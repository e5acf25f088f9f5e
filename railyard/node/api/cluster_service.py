"""The Cluster service: what operators and the dashboard ask a node.

`Status` is this node's own view (role, term, indexes, peers' progress when
leader, streams); `WatchStatus` repeats it at an interval, from one status
built and encoded per round for all subscribers (`status_feed.py`), each
answer sent as those bytes (`WATCH_STATUS_METHOD` is registered to pass
them through), at most `[limits] max_watch_subscribers` at once. `ReadLog` shows
the most recent entries of this node's log, decoded enough to display.
The membership RPCs (ListMembers, AddMember, PromoteMember, RemoveMember)
are those of the base class, `membership.MembershipRpcs`; `Status` lists
the committed configuration too.
`TransferLeadership` moves leadership (Raft §3.10): the leader asks the core
to transfer; a follower forwards the request to the leader; either way the
answer comes once a new leader is known, or fails after a few election
timeouts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from railyard.node.api.commands import stream_info_to_pb
from railyard.node.api.context import FORWARDED_KEY, Forwarder, NodeContext
from railyard.node.api.membership import MembershipRpcs, member_infos
from railyard.node.api.status_codes import (
    ServiceError,
    abort,
    exception_error,
    rpc,
    unavailable,
)
from railyard.node.api.status_feed import StatusFeed
from railyard.proto import commands_pb2 as cmd
from railyard.proto import railyard_pb2 as pb
from railyard.proto import railyard_pb2_grpc as pb_grpc
from railyard.raft import Entry, EntryKind, Index, NodeId, Role, Term
from railyard.storage import sha256_file
from railyard.streams import FrozenState, state_summary

# The dashboard may ask often, but a status every 50 ms is plenty.
MIN_WATCH_INTERVAL_MS = 50
DEFAULT_WATCH_INTERVAL_MS = 1000
DEFAULT_READ_LOG_COUNT = 50
MAX_READ_LOG_COUNT = 10_000
# A transfer normally completes within one election timeout (the target
# campaigns at once); after this many the answer is DEADLINE_EXCEEDED.
TRANSFER_TIMEOUT_ELECTIONS = 3
# Most bytes in one SaveSnapshot chunk: well under gRPC's 4 MiB message limit,
# large enough that per-message costs vanish.
MAX_BACKUP_CHUNK_BYTES = 1 << 20
# A backup without a deadline of its own still ends: an hour copies many GiB.
DEFAULT_BACKUP_TIMEOUT_S = 3600.0
# Answers already encoded as NodeStatus bytes: one encoding shared by every watcher.
WATCH_STATUS_METHOD = f"/{pb.DESCRIPTOR.services_by_name['Cluster'].full_name}/WatchStatus"
# A figure not measured yet (no fsync, no answered heartbeat, no disk).
UNKNOWN = -1

ROLE_TO_PB = {
    Role.FOLLOWER: pb.ROLE_FOLLOWER,
    Role.PRE_CANDIDATE: pb.ROLE_PRE_CANDIDATE,
    Role.CANDIDATE: pb.ROLE_CANDIDATE,
    Role.LEADER: pb.ROLE_LEADER,
}


def describe_entry(entry: Entry, commit_index: Index) -> pb.LogEntryInfo:
    info = pb.LogEntryInfo(
        index=entry.index,
        term=entry.term,
        size=len(entry.data),
        committed=entry.index <= commit_index,
    )
    if entry.kind is EntryKind.NOOP:
        info.kind = "noop"
        return info
    if entry.kind is EntryKind.CONFIG:
        info.kind = "config"
        return info
    command = cmd.Command()
    try:
        command.ParseFromString(entry.data)
    except DecodeError:
        info.kind = "unknown"
        return info
    which = command.WhichOneof("command")
    if which == "create_stream":
        info.kind, info.stream = "create_stream", command.create_stream.name
    elif which == "delete_stream":
        info.kind, info.stream = "delete_stream", command.delete_stream.name
    elif which == "update_stream":
        info.kind, info.stream = "update_stream", command.update_stream.name
    elif which == "append_records":
        info.kind, info.stream = "append", command.append_records.stream
        info.records = len(command.append_records.records)
    else:
        info.kind = "unknown"
    return info


class ClusterService(MembershipRpcs):
    def __init__(self, node: NodeContext, forwarder: Forwarder) -> None:
        super().__init__(node, forwarder)
        self.feed = StatusFeed(self._encoded_status)

    async def status(self) -> pb.NodeStatus:
        core = self.driver.status()
        streams = await self.driver.machine_call(self.driver.machine.list_streams)
        heartbeat_ms = self.node.heartbeat_interval_ms
        ticks = (
            core.ticks_since_quorum_contact
            if core.role is Role.LEADER
            else core.ticks_since_leader_contact
        )
        now = time.monotonic()
        status = pb.NodeStatus(
            cluster=self.node.cluster,
            node_id=self.node.node_id,
            address=self.node.address,
            native_address=self.node.native_address,
            role=ROLE_TO_PB[core.role],
            term=core.term,
            leader_id=core.leader_id or "",
            commit_index=core.commit_index,
            applied_index=self.driver.applied,
            last_log_index=core.last_index,
            snapshot_index=core.snapshot_index,
            voted_for=core.voted_for or "",
            last_contact_ms_ago=ticks * heartbeat_ms,
            uptime_ms=int((now - self.node.started_at) * 1000),
            snapshots_taken=self.driver.stats.snapshots_taken,
            snapshots_installed=self.driver.stats.snapshots_installed,
            streams=[stream_info_to_pb(s) for s in streams],
            awaiting_catch_up=core.awaiting_catch_up,
            leader_since_ms=int((self.driver.leader_since_s or 0) * 1000),
            tls=self.node.tls is not None,
            insecure=self.node.insecure,
            cert_days_left=self.node.tls.days_left() if self.node.tls is not None else 0,
        )
        self._add_figures(status, core.commit_index, now)
        config_index, membership = self.driver.core.committed_membership()
        status.config_index = config_index
        status.members.extend(member_infos(core, membership, self.node.node_id))
        metrics = self.driver.metrics
        for peer_id, progress in sorted(core.progress.items()):
            if peer_id == self.node.node_id:
                continue
            heard = self.node.last_heard.get(peer_id)
            round_trip_s = metrics.round_trip_s.get(peer_id)
            status.peers.append(
                pb.PeerProgress(
                    node_id=peer_id,
                    match_index=progress.match_index,
                    next_index=progress.next_index,
                    state=str(progress.state),
                    last_contact_ms_ago=-1 if heard is None else int((now - heard) * 1000),
                    round_trip_ms=UNKNOWN if round_trip_s is None else round_trip_s * 1000,
                )
            )
        return status

    def _add_figures(self, status: pb.NodeStatus, commit_index: int, now: float) -> None:
        """What the metrics know that `top` shows (fsync p99, apply lag, proposals/s,
        disk), and the scrub's progress."""
        metrics = self.driver.metrics
        fsync_p99_s = metrics.fsync_p99_s()
        free = self.driver.disk.free_bytes()
        status.fsync_p99_ms = UNKNOWN if fsync_p99_s is None else fsync_p99_s * 1000
        status.apply_lag = max(0, commit_index - self.driver.applied)
        status.proposals_per_s = metrics.committed_per_s(now)
        status.disk_free_bytes = UNKNOWN if free is None else free
        status.state_scrub_passes = self.driver.scrubber.passes
        status.state_scrub_rows = self.driver.scrubber.rows

    @rpc
    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.NodeStatus:
        return await self.status()

    async def _encoded_status(self) -> bytes:
        return (await self.status()).SerializeToString()

    async def WatchStatus(  # type: ignore[override]  # answers NodeStatus bytes, see above
        self, request: pb.WatchStatusRequest, context: Any
    ) -> AsyncIterator[bytes]:
        interval_ms = max(request.interval_ms or DEFAULT_WATCH_INTERVAL_MS, MIN_WATCH_INTERVAL_MS)
        try:
            with self.node.admission.watcher(), self.feed.subscribe(interval_ms) as subscriber:
                while True:
                    yield await subscriber.next()
        except Exception as exc:
            error = exception_error(exc)
            if error is None:
                raise
            await abort(context, error, self.addresses)

    @rpc
    async def ReadLog(self, request: pb.ReadLogRequest, context: Any) -> pb.ReadLogResponse:
        count = min(request.count or DEFAULT_READ_LOG_COUNT, MAX_READ_LOG_COUNT)
        core = self.driver.status()
        lo = Index(max(core.snapshot_index + 1, core.last_index - count + 1))
        entries = self.driver.log_entries(lo, Index(core.last_index + 1))
        return pb.ReadLogResponse(entries=[describe_entry(e, core.commit_index) for e in entries])

    @rpc
    async def TransferLeadership(
        self, request: pb.TransferLeadershipRequest, context: Any
    ) -> pb.TransferLeadershipResponse:
        target = NodeId(request.to) if request.to else None
        if target is not None and target not in self.addresses:
            known = ", ".join(sorted(self.addresses))
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"to: no node {target!r} in cluster {self.node.cluster!r} (nodes: {known})",
            )
        leader = self.node.leader()
        if leader is None:
            raise unavailable("no leader is known; retry shortly", None)
        if leader != self.node.node_id:
            # Our own wait plus one for the hop: every call has a deadline.
            hop_s = (TRANSFER_TIMEOUT_ELECTIONS + 1) * self.node.election_timeout_ms / 1000
            response: pb.TransferLeadershipResponse = await self.forwarder.forward(
                "TransferLeadership", request, context, stub=pb_grpc.ClusterStub, timeout_s=hop_s
            )
            return response
        term = self.driver.status().term
        if target == leader:
            return pb.TransferLeadershipResponse(previous_leader=leader, leader=leader, term=term)
        await self.driver.transfer_leadership(target)
        new_leader, new_term = await self._await_new_leader(leader, context)
        if target is not None and new_leader != target:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"leadership moved to {new_leader}, not {target}",
            )
        return pb.TransferLeadershipResponse(
            previous_leader=leader, leader=new_leader, term=new_term
        )

    async def _await_new_leader(self, previous: NodeId, context: Any) -> tuple[NodeId, int]:
        timeout_s = TRANSFER_TIMEOUT_ELECTIONS * self.node.election_timeout_ms / 1000
        remaining = context.time_remaining()
        if remaining is not None:
            timeout_s = min(timeout_s, remaining)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            core = self.driver.status()
            if core.leader_id is not None and core.leader_id != previous:
                return core.leader_id, core.term
            await asyncio.sleep(self.node.heartbeat_interval_ms / 1000)
        raise ServiceError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"leadership did not move from {previous} within {timeout_s:.1f}s",
        )

    # ------------------------------------------------------------ backups

    async def SaveSnapshot(
        self, request: pb.SaveSnapshotRequest, context: Any
    ) -> AsyncIterator[pb.SaveSnapshotResponse]:
        try:
            leader = self.node.leader()
            if leader is None:
                raise unavailable("no leader is known; retry shortly", None)
            parts = (
                self._save_snapshot(request)
                if leader == self.node.node_id
                else self._relay_save_snapshot(leader, request, context)
            )
            async for part in parts:
                yield part
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            error = exception_error(exc)
            if error is None:
                raise
            await abort(context, error, self.addresses)

    async def _save_snapshot(
        self, request: pb.SaveSnapshotRequest
    ) -> AsyncIterator[pb.SaveSnapshotResponse]:
        chunk_bytes = min(request.chunk_bytes or MAX_BACKUP_CHUNK_BYTES, MAX_BACKUP_CHUNK_BYTES)
        # Linearizable: every write committed before the call is applied.
        await self.driver.read_barrier()
        frozen, index, term = await self.driver.call(self._freeze)
        copy = self.driver.snapshotter.snapshots.scratch_path()
        try:
            # Its own thread: the reads thread serves queries meanwhile, and
            # applying goes on (the frozen state is a read transaction).
            await asyncio.to_thread(_copy_frozen, frozen, copy)
            streams, records = await asyncio.to_thread(state_summary, copy)
            checksum = await asyncio.to_thread(sha256_file, copy)
            header = pb.BackupHeader(
                index=index,
                term=term,
                streams=streams,
                records=records,
                bytes=copy.stat().st_size,
                sha256=checksum,
                cluster=self.node.cluster,
                node_id=self.node.node_id,
            )
            yield pb.SaveSnapshotResponse(header=header)
            with copy.open("rb") as f:
                while chunk := await asyncio.to_thread(f.read, chunk_bytes):
                    yield pb.SaveSnapshotResponse(chunk=chunk)
        finally:
            copy.unlink(missing_ok=True)

    def _freeze(self) -> tuple[FrozenState, Index, Term]:
        """The state as of the last apply, its index and term (runs inside the driver)."""
        frozen = self.driver.machine.freeze()
        return frozen, Index(frozen.applied), self.driver.applied_term

    async def _relay_save_snapshot(
        self, leader: NodeId, request: pb.SaveSnapshotRequest, context: Any
    ) -> AsyncIterator[pb.SaveSnapshotResponse]:
        """The leader's answer, relayed (a client that can reach only this node still gets one)."""
        if any(key == FORWARDED_KEY for key, _ in context.invocation_metadata() or ()):
            raise unavailable(f"not the leader (leader: {leader})", leader)
        remaining = context.time_remaining()
        call = pb_grpc.ClusterStub(self.forwarder.channel(leader)).SaveSnapshot(
            request,
            timeout=DEFAULT_BACKUP_TIMEOUT_S if remaining is None else max(0.0, remaining),
            metadata=((FORWARDED_KEY, self.node.node_id),),
        )
        try:
            async for part in call:
                yield part
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.UNAVAILABLE:
                raise unavailable(
                    f"leader {leader} did not answer ({exc.details()})", None
                ) from exc
            raise ServiceError(exc.code(), exc.details() or "") from exc


def _copy_frozen(frozen: FrozenState, path: Path) -> None:
    try:
        frozen.write_to(path)
    finally:
        frozen.close()
