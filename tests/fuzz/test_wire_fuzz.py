"""Bad input on the wire: every RPC of every service, fuzzed, against a real 3-node cluster.

For each generated request the node must answer with a proper status code
(never UNKNOWN/INTERNAL, which mean an unhandled exception, nor hang), stay
alive (its pid runs and Status answers), and leave its state unchanged when
the request is invalid:

- Raft: envelopes from another cluster or an unknown node (PERMISSION_DENIED),
  and messages from a real peer carrying a *stale* term with arbitrary
  fields (huge indexes, unknown message types and entry kinds, entries that
  match nothing in the log). A stale term is what a deposed leader or a
  replayed packet sends; Raft must ignore it. Messages at the current or a
  newer term are not fuzzed: Raft assumes peers are not Byzantine.
- Streams: out-of-range numbers, empty/huge/odd names and payloads, unknown
  enum values; a failed request must not change the streams.
- Cluster, health: odd arguments, unknown nodes and services.
- Raw TCP: garbage bytes, a truncated HTTP/2 preface, HTTP/1.1.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from railyard.node.peers import tcp
from railyard.proto import commands_pb2 as cmd
from railyard.proto import railyard_pb2 as pb
from railyard.proto import railyard_pb2_grpc as pb_grpc
from tests.support.cluster import LocalCluster

CLUSTER = "fuzz"
CANARY = "canary"
CANARY_RECORDS = 5
# A fuzzed request on an idle loopback cluster answers well within this;
# longer counts as a hang.
RPC_DEADLINE_S = 10.0
# Codes that mean the server broke (an unhandled exception) or hung.
BROKEN = {
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
# Codes that say "not done": after them the state must be as before.
REFUSED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
# Long timings: a spurious election under CPU load would look like a state
# change caused by a fuzzed request.
HEARTBEAT_MS = 100
ELECTION_TIMEOUT_MS = 3000
# Leadership moves this many times before fuzzing so that stale terms >= 1 exist.
TERM_BUMPS = 2
EXAMPLES = 25
# Status calls (1 s deadline each) tried before a node counts as not answering.
STATUS_TRIES = 5
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=False,
)

u64 = st.one_of(
    st.integers(0, 8), st.integers(0, 2**64 - 1), st.sampled_from([2**63 - 1, 2**63, 2**64 - 1])
)
u32 = st.one_of(st.integers(0, 8), st.integers(0, 2**32 - 1), st.just(2**32 - 1))
i64 = st.one_of(st.integers(-8, 8), st.integers(-(2**63), 2**63 - 1))
enum_value = st.integers(-3, 40)
# Stream and node names; never the canary's, since writes to it would be valid.
text = st.one_of(
    st.just(""),
    st.text(max_size=12),
    st.text(min_size=129, max_size=400),
    st.sampled_from(["..", "/", "a/b", "\x00", " ", "ü" * 200, "n1"]),
)
small_bytes = st.binary(max_size=64)
big_bytes = st.sampled_from([1 << 20, (1 << 20) + 1, 3 << 20]).map(lambda n: b"x" * n)
payload = st.one_of(small_bytes, big_bytes)


# ---------------------------------------------------------------- the cluster


class Fuzzed:
    """The cluster under fuzz and what must not change."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.leader = cluster.wait_for_leader(timeout_s=30)

    def status(self, nid: str) -> pb.NodeStatus:
        """The node's status; a few tries, since a loaded machine may be slow to answer."""
        for _ in range(STATUS_TRIES):
            assert self.cluster.pid(nid) is not None, (
                f"{nid} died:\n{self.cluster.log(nid)[-3000:]}"
            )
            status = self.cluster.status(nid)
            if status is not None:
                return status
        raise AssertionError(f"{nid} stopped answering Status")

    def alive(self) -> None:
        for nid in self.cluster.node_ids:
            self.status(nid)

    def raft_state(self) -> dict[str, tuple[Any, ...]]:
        out = {}
        for nid in self.cluster.node_ids:
            s = self.status(nid)
            out[nid] = (s.term, s.voted_for, s.commit_index, s.last_log_index, s.snapshot_index)
        return out

    def streams_state(self) -> list[tuple[str, int, int]]:
        stub = self.cluster.streams_stub(self.leader)
        response = stub.ListStreams(pb.ListStreamsRequest(), timeout=RPC_DEADLINE_S)
        return sorted((s.name, s.last_sequence, s.record_count) for s in response.streams)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    yield from _fuzzed(Path(tmp_path_factory.mktemp("fuzz")), peer_tcp=True)


@pytest.fixture(scope="module")
def fuzzed_grpc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    """Nodes without a peer_address: only they serve the gRPC Raft service."""
    yield from _fuzzed(Path(tmp_path_factory.mktemp("fuzz-grpc")), peer_tcp=False)


def _fuzzed(root: Path, *, peer_tcp: bool) -> Iterator[Fuzzed]:
    cluster = LocalCluster(
        root,
        name=CLUSTER,
        heartbeat_interval_ms=HEARTBEAT_MS,
        election_timeout_ms=ELECTION_TIMEOUT_MS,
        peer_tcp=peer_tcp,
    )
    try:
        cluster.start()
        leader = cluster.wait_for_leader(timeout_s=30)
        for _ in range(TERM_BUMPS):
            cluster.cluster_stub(leader).TransferLeadership(
                pb.TransferLeadershipRequest(), timeout=RPC_DEADLINE_S * 3
            )
            leader = cluster.wait_for_leader(timeout_s=30, exclude=leader)
        stub = cluster.streams_stub(leader)
        stub.CreateStream(pb.CreateStreamRequest(name=CANARY), timeout=RPC_DEADLINE_S)
        for i in range(CANARY_RECORDS):
            stub.PutRecord(
                pb.PutRecordRequest(stream=CANARY, data=b"%d" % i), timeout=RPC_DEADLINE_S
            )
        cluster.wait_converged(timeout_s=30)
        yield Fuzzed(cluster)
        tracebacks = [nid for nid in cluster.node_ids if "Traceback" in cluster.log(nid)]
        assert not tracebacks, f"tracebacks in the logs of {tracebacks}:\n{cluster.logs()[-6000:]}"
    finally:
        cluster.stop()


def call(fn: Callable[[], object]) -> grpc.StatusCode:
    """Run one RPC; its status code (OK when it returned)."""
    try:
        fn()
    except grpc.RpcError as e:
        code: grpc.StatusCode = e.code()
        event(code.name)
        assert code not in BROKEN, f"{code.name}: {e.details()}"
        return code
    event("OK")
    return grpc.StatusCode.OK


# ---------------------------------------------------------------- Raft


def raft_message(target: str, sender: str, term: st.SearchStrategy[int]) -> st.SearchStrategy[Any]:
    entry = st.builds(
        pb.Entry, term=u64, index=u64, kind=enum_value, data=st.one_of(small_bytes, st.just(b""))
    )
    addressing = st.one_of(
        st.just((target, sender)), st.tuples(text, text), st.just((target, sender))
    )
    return st.builds(
        lambda addr, **kw: pb.RaftMessage(to=addr[0], sender=addr[1], **kw),
        addressing,
        type=st.one_of(st.integers(1, 13), st.integers(1, 13), enum_value),
        term=term,
        prev_log_index=u64,
        prev_log_term=u64,
        entries=st.lists(entry, max_size=4),
        leader_commit=u64,
        last_log_index=u64,
        last_log_term=u64,
        vote_granted=st.booleans(),
        success=st.booleans(),
        match_index=u64,
        conflict_index=u64,
        conflict_term=u64,
        snapshot=st.builds(pb.SnapshotMeta, index=u64, term=u64, voters=st.lists(text, max_size=3)),
        context=u64,
        read_index=u64,
    )


def envelope(peer: pb.Peer, messages: list[Any]) -> pb.RaftEnvelope:
    return pb.RaftEnvelope(messages=messages, **{"from": peer})


@st.composite
def raft_case(draw: st.DrawFn, fuzzed: Fuzzed) -> tuple[str, pb.RaftEnvelope]:
    """(target node, envelope): a stranger, or a real peer at a stale term."""
    cluster = fuzzed.cluster
    target = draw(st.sampled_from(cluster.node_ids))
    status = fuzzed.status(target)
    kind = draw(st.sampled_from(["other_cluster", "unknown_node", "stale_term"]))
    peer_id = draw(st.sampled_from([n for n in cluster.node_ids if n != target]))
    if kind == "other_cluster":
        peer = pb.Peer(cluster=draw(text.filter(lambda c: c != CLUSTER)), node_id=peer_id)
        term: st.SearchStrategy[int] = u64
    elif kind == "unknown_node":
        peer = pb.Peer(
            cluster=CLUSTER, node_id=draw(text.filter(lambda n: n not in cluster.node_ids))
        )
        term = u64
    else:
        peer = pb.Peer(cluster=CLUSTER, node_id=peer_id)
        term = st.integers(0, status.term - 1)
    messages = draw(st.lists(raft_message(target, peer.node_id, term), max_size=3))
    return target, envelope(peer, messages)


def _assert_raft_unchanged(fuzzed: Fuzzed, before: dict[str, tuple[Any, ...]], what: str) -> None:
    after = fuzzed.raft_state()
    if after == before:
        return
    # An election on its own (every node's term moved) is not the request's doing.
    organic = all(after[n][0] > before[n][0] for n in after)
    assert organic, f"{what} changed the Raft state: {before} -> {after}"
    fuzzed.leader = fuzzed.cluster.wait_for_leader(timeout_s=30)


@FUZZ
@given(data=st.data())
def test_raft_unary_rpcs(fuzzed_grpc: Fuzzed, data: st.DataObject) -> None:
    target, env = data.draw(raft_case(fuzzed_grpc))
    rpc = data.draw(st.sampled_from(["RequestVote", "AppendEntries", "TimeoutNow"]))
    before = fuzzed_grpc.raft_state()
    stub = pb_grpc.RaftStub(fuzzed_grpc.cluster.channel(target))
    code = call(lambda: getattr(stub, rpc)(env, timeout=RPC_DEADLINE_S))
    _assert_raft_unchanged(fuzzed_grpc, before, f"{rpc} to {target} ({code.name}): {env}")
    fuzzed_grpc.alive()


@FUZZ
@given(data=st.data())
def test_raft_pipe(fuzzed_grpc: Fuzzed, data: st.DataObject) -> None:
    cases = data.draw(st.lists(raft_case(fuzzed_grpc), min_size=1, max_size=3))
    target = cases[0][0]
    before = fuzzed_grpc.raft_state()
    stub = pb_grpc.RaftStub(fuzzed_grpc.cluster.channel(target))

    def pipe() -> None:
        responses = stub.Pipe(iter([env for _, env in cases]), timeout=RPC_DEADLINE_S / 2)
        with contextlib.suppress(grpc.RpcError):
            for _ in responses:
                pass

    call(pipe)
    _assert_raft_unchanged(fuzzed_grpc, before, f"Pipe to {target}")
    fuzzed_grpc.alive()


@FUZZ
@given(data=st.data())
def test_raft_peer_tcp(fuzzed: Fuzzed, data: st.DataObject) -> None:
    """The same envelopes as frames on the TCP peer port (`peers/tcp.py`)."""
    cases = data.draw(st.lists(raft_case(fuzzed), min_size=1, max_size=3))
    target = cases[0][0]
    before = fuzzed.raft_state()
    frames = b"".join(tcp.frame(env.SerializeToString()) for _, env in cases)
    _exchange(fuzzed.cluster.peer_addresses[target], tcp.PREAMBLE + frames)
    _assert_raft_unchanged(fuzzed, before, f"peer frames to {target}")
    fuzzed.alive()


def _exchange(address: str, data: bytes) -> None:
    """Send `data`, half-close, read until the node closes or the timeout."""
    host, port = address.rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=SOCKET_TIMEOUT_S) as s,
        contextlib.suppress(OSError),
    ):
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + SOCKET_TIMEOUT_S
        while time.monotonic() < deadline and s.recv(4096):
            pass


@FUZZ
@given(data=st.data())
def test_raft_install_snapshot(fuzzed_grpc: Fuzzed, data: st.DataObject) -> None:
    target, env = data.draw(raft_case(fuzzed_grpc))
    peer = getattr(env, "from")
    first = env.messages[0] if env.messages else None
    chunks = [
        pb.SnapshotChunk(message=first, data=data.draw(small_bytes), **{"from": peer}),
        *[
            pb.SnapshotChunk(data=data.draw(small_bytes), **{"from": peer})
            for _ in range(data.draw(st.integers(0, 2)))
        ],
    ]
    if data.draw(st.booleans()):
        chunks.append(
            pb.SnapshotChunk(
                data=data.draw(small_bytes),
                checksum=data.draw(st.one_of(text, st.just("0" * 64))),
                last=True,
                **{"from": peer},
            )
        )
    before = fuzzed_grpc.raft_state()
    stub = pb_grpc.RaftStub(fuzzed_grpc.cluster.channel(target))
    code = call(lambda: stub.InstallSnapshot(iter(chunks), timeout=RPC_DEADLINE_S))
    assert code != grpc.StatusCode.OK or first is not None, "a snapshot without a message"
    _assert_raft_unchanged(fuzzed_grpc, before, f"InstallSnapshot to {target} ({code.name})")
    fuzzed_grpc.alive()


# ---------------------------------------------------------------- Streams


retention = st.builds(cmd.Retention, max_age_ms=i64, max_records=i64, max_bytes=i64)
record = st.builds(cmd.Record, data=payload, key=small_bytes, has_key=st.booleans())
stream_requests: dict[str, st.SearchStrategy[Any]] = {
    "CreateStream": st.builds(pb.CreateStreamRequest, name=text, retention=retention),
    "DeleteStream": st.builds(pb.DeleteStreamRequest, name=text.filter(lambda n: n != CANARY)),
    "ListStreams": st.just(pb.ListStreamsRequest()),
    "DescribeStream": st.builds(pb.DescribeStreamRequest, name=text),
    "PutRecord": st.builds(
        pb.PutRecordRequest,
        stream=text,
        data=payload,
        key=small_bytes,
        has_key=st.booleans(),
        producer_id=text,
        producer_sequence=u64,
    ),
    "PutRecords": st.builds(
        pb.PutRecordsRequest,
        stream=text,
        records=st.one_of(
            st.lists(record.filter(lambda r: len(r.data) < 4096), max_size=8),
            st.integers(501, 700).map(lambda n: [cmd.Record(data=b"r")] * n),
        ),
        producer_id=text,
        producer_sequence=u64,
    ),
    "GetIteratorIndex": st.builds(
        pb.GetIteratorIndexRequest,
        stream=st.one_of(text, st.just(CANARY)),
        position=enum_value,
        sequence=u64,
        timestamp_ms=i64,
    ),
    "GetRecords": st.builds(
        pb.GetRecordsRequest,
        stream=st.one_of(text, st.just(CANARY)),
        from_sequence=u64,
        limit=u32,
        max_bytes=u32,
        stale=st.booleans(),
    ),
}


@FUZZ
@given(data=st.data())
def test_streams_rpcs(fuzzed: Fuzzed, data: st.DataObject) -> None:
    rpc = data.draw(st.sampled_from(sorted(stream_requests)))
    request = data.draw(stream_requests[rpc])
    target = data.draw(st.sampled_from([fuzzed.leader, *fuzzed.cluster.node_ids]))
    before = fuzzed.streams_state()
    stub = pb_grpc.StreamsStub(fuzzed.cluster.channel(target))
    code = call(lambda: getattr(stub, rpc)(request, timeout=RPC_DEADLINE_S))
    if code in REFUSED:
        after = fuzzed.streams_state()
        assert after == before, f"failed {rpc} ({code.name}) changed the streams: {request}"
    canary = [s for s in fuzzed.streams_state() if s[0] == CANARY]
    assert canary and canary[0][1] == CANARY_RECORDS, f"{rpc} damaged the canary stream"
    fuzzed.alive()


# ---------------------------------------------------------------- Cluster and health


@FUZZ
@given(data=st.data())
def test_cluster_and_health_rpcs(fuzzed: Fuzzed, data: st.DataObject) -> None:
    cluster = fuzzed.cluster
    target = data.draw(st.sampled_from(cluster.node_ids))
    stub = cluster.cluster_stub(target)
    rpc = data.draw(st.sampled_from(["Status", "WatchStatus", "Transfer", "ReadLog", "Health"]))
    before = fuzzed.raft_state()
    if rpc == "Status":
        call(lambda: stub.Status(pb.StatusRequest(), timeout=RPC_DEADLINE_S))
    elif rpc == "WatchStatus":
        interval = data.draw(u32)

        def watch() -> None:
            stream = stub.WatchStatus(
                pb.WatchStatusRequest(interval_ms=interval), timeout=RPC_DEADLINE_S
            )
            next(iter(stream))
            stream.cancel()  # type: ignore[no-untyped-call]

        call(watch)
    elif rpc == "Transfer":
        to = data.draw(text.filter(lambda t: t not in cluster.node_ids and t != ""))
        code = call(
            lambda: stub.TransferLeadership(
                pb.TransferLeadershipRequest(to=to), timeout=RPC_DEADLINE_S
            )
        )
        assert code != grpc.StatusCode.OK, f"transfer to unknown node {to!r} succeeded"
        _assert_raft_unchanged(fuzzed, before, f"TransferLeadership to {to!r}")
    elif rpc == "ReadLog":
        count = data.draw(u32)
        call(lambda: stub.ReadLog(pb.ReadLogRequest(count=count), timeout=RPC_DEADLINE_S))
    else:
        service = data.draw(st.one_of(text, st.just("railyard.v1.Streams")))
        health = health_pb2_grpc.HealthStub(cluster.channel(target))
        code = call(
            lambda: health.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=RPC_DEADLINE_S
            )
        )
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND), code
    fuzzed.alive()


# ---------------------------------------------------------------- raw bytes


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SOCKET_TIMEOUT_S = 0.5


@FUZZ
@given(
    prefix=st.sampled_from(
        [b"", H2_PREFACE, H2_PREFACE[:10], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]
    ),
    garbage=st.binary(max_size=4096),
    half_close=st.booleans(),
)
def test_garbage_bytes_on_the_port(
    fuzzed: Fuzzed, prefix: bytes, garbage: bytes, half_close: bool
) -> None:
    host, port = fuzzed.cluster.endpoints[0].rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=SOCKET_TIMEOUT_S) as s,
        contextlib.suppress(OSError),
    ):
        s.sendall(prefix + garbage)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + SOCKET_TIMEOUT_S
        while time.monotonic() < deadline and s.recv(4096):
            pass
    fuzzed.alive()


@FUZZ
@given(
    prefix=st.sampled_from([b"", tcp.PREAMBLE, tcp.PREAMBLE[:5], H2_PREFACE]),
    garbage=st.binary(max_size=4096),
)
def test_garbage_bytes_on_the_peer_port(fuzzed: Fuzzed, prefix: bytes, garbage: bytes) -> None:
    before = fuzzed.raft_state()
    _exchange(fuzzed.cluster.peer_addresses["n1"], prefix + garbage)
    _assert_raft_unchanged(fuzzed, before, "garbage on the peer port")
    fuzzed.alive()


# ---------------------------------------------------------------- known snapshot bugs, pinned


def _snapshot_chunk(
    target: str, sender: str, *, message: bool, data: bytes, checksum: str, term: int = 0
) -> pb.SnapshotChunk:
    peer = pb.Peer(cluster=CLUSTER, node_id=sender)
    msg = pb.RaftMessage(
        type=pb.MESSAGE_TYPE_SNAPSHOT,
        to=target,
        sender=sender,
        term=term,
        snapshot=pb.SnapshotMeta(index=3, term=term, voters=["n1", "n2", "n3"]),
    )
    return pb.SnapshotChunk(
        message=msg if message else None, data=data, checksum=checksum, last=True, **{"from": peer}
    )


@pytest.mark.parametrize("sequence", [2**63, 2**64 - 1])
def test_a_producer_sequence_beyond_int64_is_refused_and_nothing_dies(
    fuzzed: Fuzzed, sequence: int
) -> None:
    """Found by test_streams_rpcs: such a put was committed, then every replica died applying it."""
    before = fuzzed.streams_state()
    stub = pb_grpc.StreamsStub(fuzzed.cluster.channel(fuzzed.leader))
    request = pb.PutRecordRequest(
        stream=CANARY, data=b"x", producer_id="p", producer_sequence=sequence
    )
    with pytest.raises(grpc.RpcError) as raised:
        stub.PutRecord(request, timeout=RPC_DEADLINE_S)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    assert "producer_sequence" in (raised.value.details() or "")
    fuzzed.alive()
    assert fuzzed.streams_state() == before


@pytest.mark.parametrize("case", ["no message", "bad checksum"])
def test_install_snapshot_refuses_malformed_chunks_properly(fuzzed_grpc: Fuzzed, case: str) -> None:
    chunk = _snapshot_chunk(
        "n1", "n2", message=case != "no message", data=b"garbage", checksum="0" * 64
    )
    stub = pb_grpc.RaftStub(fuzzed_grpc.cluster.channel("n1"))
    with pytest.raises(grpc.RpcError) as raised:
        stub.InstallSnapshot(iter([chunk]), timeout=RPC_DEADLINE_S)
    fuzzed_grpc.alive()
    assert raised.value.code() in REFUSED, raised.value.details()


def test_stale_snapshot_is_not_kept_and_node_restarts(tmp_path: Path) -> None:
    # Without a peer_address, to reach the gRPC InstallSnapshot.
    cluster = LocalCluster(tmp_path, name=CLUSTER, peer_tcp=False)
    try:
        cluster.start()
        leader = cluster.wait_for_leader(timeout_s=30)
        stub = cluster.streams_stub(leader)
        stub.CreateStream(pb.CreateStreamRequest(name=CANARY), timeout=RPC_DEADLINE_S)
        for i in range(CANARY_RECORDS):
            stub.PutRecord(
                pb.PutRecordRequest(stream=CANARY, data=b"%d" % i), timeout=RPC_DEADLINE_S
            )
        cluster.wait_converged(timeout_s=30)
        target = next(n for n in cluster.node_ids if n != leader)
        data = b"not a snapshot"
        chunk = _snapshot_chunk(
            target, leader, message=True, data=data, checksum=hashlib.sha256(data).hexdigest()
        )
        before = cluster.status(target)
        with contextlib.suppress(grpc.RpcError):
            pb_grpc.RaftStub(cluster.channel(target)).InstallSnapshot(
                iter([chunk]), timeout=RPC_DEADLINE_S
            )
        after = cluster.status(target)
        assert before is not None and after is not None
        assert after.snapshot_index == before.snapshot_index
        cluster.stop_node(target)
        cluster.start_node(target)
        cluster.wait_ready(target)
        cluster.wait_converged(timeout_s=30)
        records = cluster.streams_stub(target).GetRecords(
            pb.GetRecordsRequest(stream=CANARY, from_sequence=1, stale=True),
            timeout=RPC_DEADLINE_S,
        )
        assert [r.data for r in records.records] == [b"%d" % i for i in range(CANARY_RECORDS)]
    finally:
        cluster.stop()
