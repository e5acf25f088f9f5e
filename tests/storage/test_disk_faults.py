"""Disk faults: damaged files are refused or repaired, never silently believed.

The rule under test (Raft's safety rests on it: a node that forgets what it
acknowledged can elect a leader without a committed entry):

- the torn tail of the *last* write may be repaired (it was never
  acknowledged: synchronous=FULL acknowledges after the WAL fsync);
- any other damage makes the store refuse to open with an error naming the
  file; the node then refuses to start;
- never a silent change of committed data: opening succeeds only with the
  exact content written, or (log) that content minus the last write, or
  (state) the content as of an earlier apply, which the log re-applies.

Store-level cases run in-process over many offsets (a crash image: the
database, its -wal file and the log's tail marker copied while the writer is
open, as kill -9 leaves them); node-level cases check the same at start-up of a real node,
plus rejoining by snapshot after a wipe, a full disk and a failing fsync.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
import pytest

from railyard.node.driver.disk_space import DISK_CHECK_INTERVAL_S
from railyard.proto import commands_pb2 as cmd
from railyard.proto import railyard_pb2 as pb
from railyard.raft import Entry, EntryKind, HardState, Index, NodeId, Term
from railyard.storage import SqliteLogStore, StorageError
from railyard.streams import StreamsError, StreamsMachine
from tests.support.cluster import LocalCluster

CLUSTER = "disk"
NODE = "n1"
LOG_DB = "log.db"
STATE_DB = "state.db"
# Saves (log) / applies (state) in a crash image; half before a checkpoint
# moves them into the main file, half left in the WAL.
WRITES = 24
# Offsets tried per (file, damage) pair, beyond a few fixed ones (headers, ends).
OFFSETS_PER_FILE = 30
# Torn-tail offsets tried inside the last write's WAL frames.
TAIL_OFFSETS = 12
# Payload sizes: several entries per page and some overflow pages.
MIN_PAYLOAD = 50
MAX_PAYLOAD = 3000
SEED = 20261126

# Verdicts of one damaged store.
REFUSED = "refused"  # open raised an error naming the file
INTACT = "intact"  # opened with exactly the content written
REPAIRED = "repaired"  # opened without the last write (log) / at an earlier apply (state)
SILENT = "silent"  # opened with other content: committed data changed or lost
UNNAMED = "unnamed error"  # failed, but the error does not name the file


@dataclass(frozen=True)
class Image:
    """A crash image of one SQLite store and every state it went through."""

    files: dict[str, bytes]
    states: list[object]  # state after each write, oldest first
    last_write: tuple[int, int]  # byte range of the WAL the last write appended
    # Files as they were before the last write began (the log's tail marker):
    # what a crash *during* the last write leaves beside its torn WAL frames.
    before_last: dict[str, bytes] = field(default_factory=dict)

    def during_last_write(self) -> Image:
        """The image as a crash in the middle of the last write leaves it."""
        return replace(self, files={**self.files, **self.before_last})


@dataclass(frozen=True)
class Case:
    file: str
    damage: str  # "flip" | "truncate"
    offset: int

    def __str__(self) -> str:
        return f"{self.damage} {self.file} @{self.offset}"


def _wal(name: str) -> str:
    return f"{name}-wal"


def _tail(name: str) -> str:
    """The log store's tail marker (railyard/storage/tail_marker.py)."""
    return f"{name}.tail"


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _checkpoint(db: Path) -> None:
    """Move the WAL into the main file, as SQLite's auto-checkpoint eventually does."""
    conn = sqlite3.connect(db)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0, "checkpoint blocked"
    finally:
        conn.close()


def _snapshot_files(directory: Path, name: str) -> dict[str, bytes]:
    files = {name: (directory / name).read_bytes()}
    for extra in (_wal(name), _tail(name)):
        if (directory / extra).exists():
            files[extra] = (directory / extra).read_bytes()
    return files


# ---------------------------------------------------------------- the log store


LogState = tuple[HardState, tuple[Entry, ...]]


def _read_log(path: Path) -> LogState:
    store = SqliteLogStore.open(path, cluster=CLUSTER, node_id=NODE)
    try:
        entries = store.entries(store.first_index(), Index(store.last_index() + 1))
        return store.hard_state(), tuple(entries)
    finally:
        store.close()


def build_log_image(directory: Path) -> Image:
    rng = random.Random(SEED)
    path = directory / LOG_DB
    store = SqliteLogStore.open(path, cluster=CLUSTER, node_id=NODE)
    states: list[object] = []
    entries: list[Entry] = []
    wal_before = 0
    tail_before = b""
    try:
        for k in range(WRITES):
            if k == WRITES // 2:
                _checkpoint(path)
            term = Term(1 + k // 5)
            batch = [
                Entry(
                    term,
                    Index(len(entries) + i + 1),
                    EntryKind.NORMAL,
                    rng.randbytes(rng.randint(MIN_PAYLOAD, MAX_PAYLOAD)),
                )
                for i in range(rng.randint(1, 3))
            ]
            hard_state = HardState(term, NodeId("n2"), Index(len(entries)))
            wal_before = _size(directory / _wal(LOG_DB))
            tail_before = (directory / _tail(LOG_DB)).read_bytes() if k else b""
            store.save(hard_state, batch)
            entries += batch
            states.append((hard_state, tuple(entries)))
        files = _snapshot_files(directory, LOG_DB)
        wal_after = len(files[_wal(LOG_DB)])
    finally:
        store.close()
    assert _read_log(path) == states[-1]
    return Image(files, states, (wal_before, wal_after), {_tail(LOG_DB): tail_before})


# ---------------------------------------------------------------- the state machine


StateView = tuple[int, tuple[tuple[str, tuple[tuple[int, bytes], ...]], ...]]


def _read_state(path: Path) -> StateView:
    sm = StreamsMachine.open(path)
    try:
        streams = []
        for info in sm.list_streams():
            result = sm.read(info.name, 1, 1_000_000, 0)
            assert not isinstance(result, Exception)
            records = getattr(result, "records", [])
            streams.append((info.name, tuple((r.sequence, r.data) for r in records)))
        return sm.last_applied, tuple(streams)
    finally:
        sm.close()


def _append(stream: str, datas: list[bytes], producer: int, timestamp_ms: int) -> bytes:
    command = cmd.Command(
        append_records=cmd.AppendRecordsCommand(
            stream=stream,
            records=[cmd.Record(data=d) for d in datas],
            producer_id=f"p{producer}",
            producer_sequence=producer + 1,
            timestamp_ms=timestamp_ms,
            create_if_missing=True,
        )
    )
    return command.SerializeToString()


def build_state_image(directory: Path) -> Image:
    rng = random.Random(SEED + 1)
    path = directory / STATE_DB
    sm = StreamsMachine.open(path)
    states: list[object] = []
    index = 0
    wal_before = 0
    try:
        states.append(_read_state_open(sm))
        for k in range(WRITES):
            if k == WRITES // 2:
                _checkpoint(path)
            batch = []
            for _ in range(rng.randint(1, 3)):
                index += 1
                datas = [
                    rng.randbytes(rng.randint(MIN_PAYLOAD, MAX_PAYLOAD))
                    for _ in range(rng.randint(1, 3))
                ]
                batch.append((index, _append(f"s{index % 3}", datas, index, 1000 + index)))
            wal_before = _size(directory / _wal(STATE_DB))
            sm.apply(batch)
            states.append(_read_state_open(sm))
        files = _snapshot_files(directory, STATE_DB)
        wal_after = len(files.get(_wal(STATE_DB), b""))
    finally:
        sm.close()
    assert _read_state(path) == states[-1]
    return Image(files, states, (wal_before, wal_after))


def _read_state_open(sm: StreamsMachine) -> StateView:
    streams = []
    for info in sm.list_streams():
        result = sm.read(info.name, 1, 1_000_000, 0)
        records = getattr(result, "records", [])
        streams.append((info.name, tuple((r.sequence, r.data) for r in records)))
    return sm.last_applied, tuple(streams)


# ---------------------------------------------------------------- damage and verdicts


def damage(directory: Path, image: Image, case: Case) -> None:
    for name, content in image.files.items():
        (directory / name).write_bytes(content)
    target = directory / case.file
    data = bytearray(target.read_bytes())
    if case.damage == "flip":
        data[case.offset] ^= 0xFF
    else:
        del data[case.offset :]
    target.write_bytes(bytes(data))


def verdict(
    directory: Path,
    image: Image,
    case: Case,
    read: Callable[[Path], object],
    db_name: str,
    repaired_ok: Callable[[object], bool],
) -> str:
    case_dir = directory / f"{case.damage}-{case.file}-{case.offset}"
    case_dir.mkdir()
    try:
        damage(case_dir, image, case)
        try:
            state = read(case_dir / db_name)
        except (StorageError, StreamsError) as e:
            return REFUSED if db_name in str(e) else UNNAMED
        except Exception:
            return UNNAMED
        if state == image.states[-1]:
            return INTACT
        return REPAIRED if repaired_ok(state) else SILENT
    finally:
        shutil.rmtree(case_dir, ignore_errors=True)


def offsets(size: int, rng: random.Random, lo: int = 0, hi: int | None = None) -> list[int]:
    """A spread of offsets in [lo, hi): a random sample plus the edges and headers."""
    hi = size if hi is None else hi
    if hi <= lo:
        return []
    fixed = {lo, lo + 1, lo + 16, lo + 24, lo + 32, lo + 100, hi - 1, (lo + hi) // 2}
    picked = {o for o in fixed if lo <= o < hi}
    picked |= set(rng.sample(range(lo, hi), min(OFFSETS_PER_FILE, hi - lo)))
    return sorted(picked)


def run_cases(
    tmp_path: Path,
    image: Image,
    cases: list[Case],
    read: Callable[[Path], object],
    db_name: str,
    repaired_ok: Callable[[Case, object], bool],
) -> dict[Case, str]:
    results: dict[Case, str] = {}
    for case in cases:

        def ok(state: object, case: Case = case) -> bool:
            return repaired_ok(case, state)

        results[case] = verdict(tmp_path, image, case, read, db_name, ok)
    return results


def report(results: dict[Case, str]) -> str:
    table: dict[tuple[str, str], dict[str, int]] = {}
    for case, v in results.items():
        row = table.setdefault((case.file, case.damage), {})
        row[v] = row.get(v, 0) + 1
    lines = [f"  {f} {d}: {row}" for (f, d), row in sorted(table.items())]
    bad = [f"    {case}: {v}" for case, v in results.items() if v in (SILENT, UNNAMED)]
    return "\n".join(["verdicts per file and damage:", *lines, "bad cases:", *bad[:40]])


@pytest.fixture(scope="module")
def log_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    yield build_log_image(tmp_path_factory.mktemp("log-image"))


@pytest.fixture(scope="module")
def state_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    yield build_state_image(tmp_path_factory.mktemp("state-image"))


def _in_last_write(image: Image, case: Case) -> bool:
    lo, hi = image.last_write
    return case.file.endswith("-wal") and lo <= case.offset < hi


def test_crash_images_hold_data_in_both_files(log_image: Image, state_image: Image) -> None:
    for image, name in ((log_image, LOG_DB), (state_image, STATE_DB)):
        assert len(image.files[_wal(name)]) > image.last_write[0] > 0, name
        assert len(image.files[name]) > 4096, f"{name}: nothing checkpointed into the main file"
    marker = log_image.files[_tail(LOG_DB)]
    assert marker != log_image.during_last_write().files[_tail(LOG_DB)], "marker not updated"


def test_log_torn_tail_of_last_write_is_repaired(tmp_path: Path, log_image: Image) -> None:
    # A torn tail is only possible for a save that did not complete: the log's
    # tail marker still describes the save before it.
    log_image = log_image.during_last_write()
    lo, hi = log_image.last_write
    rng = random.Random(SEED)
    cases = [
        Case(_wal(LOG_DB), "truncate", o)
        for o in sorted({lo, hi - 1, *rng.sample(range(lo, hi), TAIL_OFFSETS)})
    ]
    results = run_cases(
        tmp_path,
        log_image,
        cases,
        _read_log,
        LOG_DB,
        lambda c, s: s == log_image.states[-2],
    )
    print(report(results))
    assert set(results.values()) <= {REPAIRED, REFUSED}, report(results)
    assert REPAIRED in results.values(), "a torn tail should be repaired, not refused"


def _damage_cases(image: Image, file: str, kind: str, rng: random.Random) -> list[Case]:
    size = len(image.files[file])
    # The WAL's torn-tail region is tested above; here: everything before it.
    hi = image.last_write[0] if file.endswith("-wal") else size
    return [Case(file, kind, o) for o in offsets(size, rng, 0, hi) if o > 0 or kind == "flip"]


@pytest.mark.parametrize(
    ("file", "kind"),
    [
        (LOG_DB, "flip"),
        (LOG_DB, "truncate"),
        (_wal(LOG_DB), "flip"),
        # docs/FINDINGS.md F3: SQLite takes a cut WAL for a shorter one; the tail marker tells.
        (_wal(LOG_DB), "truncate"),
        (_tail(LOG_DB), "flip"),
        (_tail(LOG_DB), "truncate"),
    ],
)
def test_log_damage_is_refused_never_silent(
    tmp_path: Path, log_image: Image, file: str, kind: str
) -> None:
    cases = _damage_cases(log_image, file, kind, random.Random(f"{SEED}{file}{kind}"))
    results = run_cases(
        tmp_path,
        log_image,
        cases,
        _read_log,
        LOG_DB,
        lambda c, s: _in_last_write(log_image, c) and s == log_image.states[-2],
    )
    print(report(results))
    assert not [c for c, v in results.items() if v in (SILENT, UNNAMED)], report(results)


def test_state_torn_tail_rolls_back_to_an_earlier_apply(tmp_path: Path, state_image: Image) -> None:
    lo, hi = state_image.last_write
    rng = random.Random(SEED)
    cases = [
        Case(_wal(STATE_DB), "truncate", o)
        for o in sorted({lo, hi - 1, *rng.sample(range(lo, hi), TAIL_OFFSETS)})
    ]
    results = run_cases(
        tmp_path,
        state_image,
        cases,
        _read_state,
        STATE_DB,
        lambda c, s: s in state_image.states,
    )
    print(report(results))
    assert set(results.values()) <= {REPAIRED, REFUSED}, report(results)


@pytest.mark.parametrize(
    ("file", "kind"),
    [
        (STATE_DB, "flip"),
        (STATE_DB, "truncate"),
        (_wal(STATE_DB), "flip"),
        (_wal(STATE_DB), "truncate"),
    ],
)
def test_state_damage_is_refused_never_silent(
    tmp_path: Path, state_image: Image, file: str, kind: str
) -> None:
    # The state database may lose applies (synchronous=NORMAL): the log
    # re-applies them. Any earlier applied state is therefore acceptable.
    cases = _damage_cases(state_image, file, kind, random.Random(f"{SEED}{file}{kind}"))
    results = run_cases(
        tmp_path,
        state_image,
        cases,
        _read_state,
        STATE_DB,
        lambda c, s: s in state_image.states,
    )
    print(report(results))
    assert not [c for c, v in results.items() if v in (SILENT, UNNAMED)], report(results)


# ---------------------------------------------------------------- a real node's data directory


NODE_LOG_DB = "raft.db"
NODE_STATE_DB = "streams.db"
STREAM = "s"
# Records written before the victim node is stopped; enough for several WAL pages.
NODE_RECORDS = 40
RECORD_BYTES = 2000
RPC_TIMEOUT_S = 10.0
# A node notices returned disk space within DISK_CHECK_INTERVAL_S; generous.
SPACE_NOTICED_S = 5.0
# A node that refuses its store exits at once; one that starts answers Status.
START_TIMEOUT_S = 20.0
# The scrub checks a few dozen records in its first step, right after the start.
SCRUB_FOUND_S = 30.0
CONVERGE_TIMEOUT_S = 30.0


@dataclass
class NodeImage:
    """A cluster, one node of which is down, and pristine copies of that node's data directory.

    "killed": taken after kill -9 (recent writes only in the -wal files);
    "stopped": taken after a clean stop (WAL checkpointed into the main files).
    """

    cluster: LocalCluster
    victim: str
    pristine: dict[str, Path]
    records: list[tuple[int, bytes]]

    def restore(self, kind: str) -> Path:
        data = self.cluster.data_dir(self.victim)
        shutil.rmtree(data)
        shutil.copytree(self.pristine[kind], data)
        return data

    def start_victim(self) -> tuple[bool, str]:
        """Start the victim; (started, what it logged during this start)."""
        offset = len(self.cluster.log(self.victim))
        self.cluster.start_node(self.victim)
        try:
            self.cluster.wait_ready(self.victim, START_TIMEOUT_S)
        except RuntimeError:
            return False, self.cluster.log(self.victim)[offset:]
        return True, self.cluster.log(self.victim)[offset:]

    def outcome(self, db: str) -> tuple[str, str]:
        """Start the victim on its (damaged) directory: what happened, and its log."""
        started, logged = self.start_victim()
        try:
            if not started:
                return (REFUSED if db in logged else UNNAMED), logged
            self.cluster.wait_converged(timeout_s=CONVERGE_TIMEOUT_S)
            intact = _stream_of(self.cluster, self.victim) == self.records
            return (INTACT if intact else SILENT), logged
        finally:
            self.cluster.kill(self.victim, signal.SIGKILL)


def _put_records(cluster: LocalCluster, leader: str, n: int, seed: int) -> list[tuple[int, bytes]]:
    rng = random.Random(seed)
    stub = cluster.streams_stub(leader)
    out = []
    for i in range(n):
        data = b"%06d" % i + rng.randbytes(RECORD_BYTES)
        response = stub.PutRecord(
            pb.PutRecordRequest(stream=STREAM, data=data), timeout=RPC_TIMEOUT_S
        )
        out.append((response.sequence, data))
    return out


def _stream_of(cluster: LocalCluster, node_id: str) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    stub = cluster.streams_stub(node_id)
    for _ in range(10_000):
        response = stub.GetRecords(
            pb.GetRecordsRequest(stream=STREAM, from_sequence=len(out) + 1, stale=True),
            timeout=RPC_TIMEOUT_S,
        )
        out += [(r.sequence, r.data) for r in response.records]
        if not response.records or response.behind_latest == 0:
            break
    return out


@pytest.fixture(scope="module")
def node_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeImage]:
    root = Path(tmp_path_factory.mktemp("node-image"))
    cluster = LocalCluster(root / "cluster")
    try:
        cluster.start()
        leader = cluster.wait_for_leader(timeout_s=CONVERGE_TIMEOUT_S)
        cluster.streams_stub(leader).CreateStream(
            pb.CreateStreamRequest(name=STREAM), timeout=RPC_TIMEOUT_S
        )
        records = _put_records(cluster, leader, NODE_RECORDS, SEED)
        cluster.wait_converged(timeout_s=CONVERGE_TIMEOUT_S)
        victim = next(n for n in cluster.node_ids if n != leader)
        cluster.kill(victim, signal.SIGKILL)
        killed = root / "killed"
        shutil.copytree(cluster.data_dir(victim), killed)
        assert (killed / _wal(NODE_LOG_DB)).stat().st_size > 0, "kill -9 should leave the WAL"
        cluster.start_node(victim)
        cluster.wait_ready(victim)
        cluster.wait_converged(timeout_s=CONVERGE_TIMEOUT_S)
        cluster.stop_node(victim)
        stopped = root / "stopped"
        shutil.copytree(cluster.data_dir(victim), stopped)
        yield NodeImage(cluster, victim, {"killed": killed, "stopped": stopped}, records)
    finally:
        cluster.stop()


def _garble_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[:16] = b"not sqlite, sorry"[:16]
    path.write_bytes(bytes(data))


def _truncate_to_one_byte(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1])


def _flip_first_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))


def _flip_a_record_byte(path: Path) -> None:
    """Flip one byte inside the stored payload of record 10 (found by its unique bytes)."""
    data = bytearray(path.read_bytes())
    marker = b"%06d" % 10
    at = data.find(marker)
    assert at >= 0, f"record 10 not found in {path.name}"
    data[at + len(marker) + 1] ^= 0xFF
    path.write_bytes(bytes(data))


def _cut_wal_in_half(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


NODE_DAMAGE: dict[str, tuple[str, str, Callable[[Path], None]]] = {
    # name: (image, file, damage)
    "log header garbled": ("stopped", NODE_LOG_DB, _garble_header),
    "state header garbled": ("stopped", NODE_STATE_DB, _garble_header),
    "log header garbled, page 1 in WAL": ("killed", NODE_LOG_DB, _garble_header),
    "state record byte flipped": ("stopped", NODE_STATE_DB, _flip_a_record_byte),
    "log cut to one byte": ("stopped", NODE_LOG_DB, _truncate_to_one_byte),
    "log WAL header flipped": ("killed", _wal(NODE_LOG_DB), _flip_first_byte),
    "log WAL cut in half": ("killed", _wal(NODE_LOG_DB), _cut_wal_in_half),
    "state WAL cut in half": ("killed", _wal(NODE_STATE_DB), _cut_wal_in_half),
}
UNNAMED_REFUSAL = (
    "refused via InvariantViolation 'commit index N beyond last index M', not naming raft.db"
)


@pytest.mark.parametrize(
    "case",
    [
        "log header garbled",
        "state header garbled",
        "log header garbled, page 1 in WAL",
        "state WAL cut in half",
        "log cut to one byte",
        "log WAL header flipped",
        "log WAL cut in half",
    ],
)
def test_damaged_node_refuses_or_holds_every_record(node_image: NodeImage, case: str) -> None:
    """Refused with a message naming the file, or started with every record intact."""
    image, file, spoil = NODE_DAMAGE[case]
    spoil(node_image.restore(image) / file)
    db = file.removesuffix("-wal")
    outcome, logged = node_image.outcome(db)
    why = next((line for line in logged.splitlines() if db in line), "")
    print(f"{case}: {outcome} {why[-300:]}")
    assert outcome in (REFUSED, INTACT), f"{case}: {outcome}:\n{logged[-3000:]}"


def test_a_flipped_record_byte_stops_the_node_soon_after_its_start(node_image: NodeImage) -> None:
    """A start reads only the ends of each stream, so a record damaged in the middle
    does not refuse it; the background scrub finds it within a bounded time, and the
    node stops by itself, naming the file and the record, before any client read it."""
    image, file, spoil = NODE_DAMAGE["state record byte flipped"]
    spoil(node_image.restore(image) / file)
    cluster, victim = node_image.cluster, node_image.victim
    offset = len(cluster.log(victim))
    proc = cluster.start_node(victim)
    try:
        code = proc.wait(timeout=SCRUB_FOUND_S)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        cluster.kill(victim, signal.SIGKILL)
    logged = cluster.log(victim)[offset:]
    assert code is not None, f"still running {SCRUB_FOUND_S} s after its start:\n{logged[-3000:]}"
    assert "opened " in logged, f"refused at start, not found by the scrub:\n{logged[-3000:]}"
    fatal = [line for line in logged.splitlines() if "fatal" in line]
    assert code != 0 and len(fatal) == 1, logged[-3000:]
    # Record 11 holds the marker b"000010" (`_flip_a_record_byte`).
    assert file in fatal[0] and "record 11 of 's'" in fatal[0], fatal[0]


@pytest.mark.parametrize("image", ["killed", "stopped"])
def test_pristine_images_restart_with_every_record(node_image: NodeImage, image: str) -> None:
    """Control for the cases above: the undamaged copies start and hold every record."""
    node_image.restore(image)
    outcome, logged = node_image.outcome(NODE_LOG_DB)
    assert outcome == INTACT, logged[-3000:]


# ---------------------------------------------------------------- wiped store, full disk, bad fsync


# Snapshot often so that a wiped node cannot catch up from the log alone.
SNAPSHOT_EVERY = 20
REJOIN_RECORDS = 70
# A lagging node installs the snapshot within a second or two on loopback.
REJOIN_TIMEOUT_S = 12.0


def test_wiped_node_rejoins_by_snapshot(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, snapshot_every=SNAPSHOT_EVERY)
    try:
        cluster.start()
        leader = cluster.wait_for_leader(timeout_s=CONVERGE_TIMEOUT_S)
        cluster.streams_stub(leader).CreateStream(
            pb.CreateStreamRequest(name=STREAM), timeout=RPC_TIMEOUT_S
        )
        records = _put_records(cluster, leader, REJOIN_RECORDS, SEED)
        cluster.wait_converged(timeout_s=CONVERGE_TIMEOUT_S)
        leader_status = cluster.status(leader)
        assert leader_status is not None and leader_status.snapshot_index > 0, "no snapshot taken"
        victim = next(n for n in cluster.node_ids if n != leader)
        cluster.stop_node(victim)
        shutil.rmtree(cluster.data_dir(victim))
        cluster.start_node(victim)
        cluster.wait_ready(victim)
        # NB: the leader still believes the wiped node's match index; it finds
        # out (and sends the snapshot) when the next append is rejected.
        more = _put_records(cluster, cluster.wait_for_leader(), 5, SEED + 1)
        cluster.wait_converged(timeout_s=REJOIN_TIMEOUT_S)
        status = cluster.status(victim)
        assert status is not None and status.snapshots_installed >= 1, status
        assert _stream_of(cluster, victim) == _stream_of(cluster, leader)
        assert [d for _, d in _stream_of(cluster, victim)] == [d for _, d in records + more]
    finally:
        cluster.stop()


# Each node's data directory gets a tmpfs this small: a few dozen records fill it.
TMPFS_SIZE = "3m"
TMPFS_GROWN = "64m"
FILL_RECORD_BYTES = 20_000
FILL_ATTEMPTS = 400
# Consecutive failed puts after which the disk is taken to be full.
FULL_AFTER_FAILURES = 5


@dataclass
class FullDisk:
    cluster: LocalCluster
    acked: list[tuple[int, bytes]]
    codes: list[str]


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root/CAP_SYS_ADMIN): {done.stderr.strip()}")


def _remount(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def _fill(cluster: LocalCluster) -> FullDisk:
    """Put records through any node until puts keep failing; what was acknowledged."""
    acked: list[tuple[int, bytes]] = []
    codes: list[str] = []
    failures = 0
    for i in range(FILL_ATTEMPTS):
        data = b"%06d" % i + b"x" * FILL_RECORD_BYTES
        node = cluster.node_ids[i % len(cluster.node_ids)]
        try:
            response = cluster.streams_stub(node).PutRecord(
                pb.PutRecordRequest(stream=STREAM, data=data), timeout=RPC_TIMEOUT_S
            )
        except grpc.RpcError as e:
            codes.append(e.code().name)
            failures += 1
            if failures >= FULL_AFTER_FAILURES:
                break
            continue
        failures = 0
        acked.append((response.sequence, data))
    return FullDisk(cluster, acked, codes)


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[FullDisk]:
    cluster = LocalCluster(tmp_path)
    mounts: list[Path] = []
    try:
        for nid in cluster.node_ids:
            _mount_tmpfs(cluster.data_dir(nid), TMPFS_SIZE)
            mounts.append(cluster.data_dir(nid))
        cluster.start()
        leader = cluster.wait_for_leader(timeout_s=CONVERGE_TIMEOUT_S)
        cluster.streams_stub(leader).CreateStream(
            pb.CreateStreamRequest(name=STREAM), timeout=RPC_TIMEOUT_S
        )
        full = _fill(cluster)
        print(f"disk full after {len(full.acked)} acknowledged puts; errors: {full.codes}")
        assert full.codes, "the disk never filled up"
        yield full
    finally:
        cluster.stop()
        for path in mounts:
            subprocess.run(["umount", "-l", str(path)], check=False)


def _full_disk_shortfalls(full: FullDisk) -> list[str]:
    """How the cluster fell short of "refuse writes clearly, keep serving reads" on a full disk."""
    cluster = full.cluster
    shortfalls = []
    unclear = set(full.codes) - {"RESOURCE_EXHAUSTED"}
    if unclear:
        shortfalls.append(f"writes failed with {sorted(unclear)}, not RESOURCE_EXHAUSTED")
    for nid in cluster.node_ids:
        if cluster.status(nid) is None:
            shortfalls.append(f"{nid} stopped serving")
            continue
        try:
            held = _stream_of(cluster, nid)
        except grpc.RpcError as e:
            shortfalls.append(f"{nid} refused a read: {e.code().name}")
            continue
        if held[: len(full.acked)] != full.acked:
            shortfalls.append(f"{nid} does not serve every acknowledged record")
    return shortfalls


def test_full_disk_refuses_writes_serves_reads_and_loses_nothing(full_disk: FullDisk) -> None:
    """On a full disk: writes refused clearly, reads served; once space returns, nothing lost."""
    cluster = full_disk.cluster
    shortfalls = _full_disk_shortfalls(full_disk)
    for nid in cluster.node_ids:
        _remount(cluster.data_dir(nid), TMPFS_GROWN)
    for nid in cluster.node_ids:
        # A node that hit the full disk may still be on its way out: finish it.
        if cluster.status(nid) is None:
            cluster.kill(nid, signal.SIGKILL)
            cluster.start_node(nid)
            cluster.wait_ready(nid)
    leader = cluster.wait_for_leader(timeout_s=CONVERGE_TIMEOUT_S)
    # A node looks at its free space every DISK_CHECK_INTERVAL_S: for that
    # long after the disk grew it may still refuse, as a full disk.
    deadline = time.monotonic() + SPACE_NOTICED_S
    while True:
        try:
            _put_records(cluster, leader, 1, SEED)
            break
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
                raise
            time.sleep(DISK_CHECK_INTERVAL_S)
    cluster.wait_converged(timeout_s=CONVERGE_TIMEOUT_S)
    streams = {nid: _stream_of(cluster, nid) for nid in cluster.node_ids}
    reference = streams[cluster.node_ids[0]]
    assert all(s == reference for s in streams.values()), "nodes disagree after the disk filled"
    held = dict(reference)
    lost = [seq for seq, data in full_disk.acked if held.get(seq) != data]
    assert not lost, f"acknowledged records lost or changed: {lost}"
    assert not shortfalls, f"a full disk must not stop the nodes: {shortfalls}"


# An LD_PRELOAD shim makes fsync/fdatasync fail with EIO while a trigger file exists:
# the fault is injected by the dynamic loader, the node's code is unchanged.
FSYNC_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

static int armed(void) {
    const char *trigger = getenv("RAILYARD_TEST_FSYNC_EIO_WHILE");
    return trigger != NULL && access(trigger, F_OK) == 0;
}

int fsync(int fd) {
    static int (*real)(int) = NULL;
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    if (armed()) { errno = EIO; return -1; }
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int) = NULL;
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    if (armed()) { errno = EIO; return -1; }
    return real(fd);
}
"""
FSYNC_FAILED_WORDS = ("fsync", "disk i/o error", "i/o error", "ioerr", "disk error")
EXIT_TIMEOUT_S = 15.0


def _build_shim(directory: Path) -> Path:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler to build the fsync-failure shim")
    source = directory / "failsync.c"
    source.write_text(FSYNC_SHIM)
    library = directory / "failsync.so"
    subprocess.run(
        [gcc, "-shared", "-fPIC", "-O1", "-o", str(library), str(source), "-ldl"], check=True
    )
    return library


def test_failed_fsync_is_fatal_and_loses_nothing_acknowledged(tmp_path: Path) -> None:
    shim = _build_shim(tmp_path)
    trigger = tmp_path / "fail-fsync-now"
    cluster = LocalCluster(tmp_path / "cluster")
    victim = cluster.node_ids[0]
    cluster.node_env[victim] = {
        "LD_PRELOAD": str(shim),
        "RAILYARD_TEST_FSYNC_EIO_WHILE": str(trigger),
    }
    try:
        cluster.start()
        leader = cluster.wait_for_leader(timeout_s=CONVERGE_TIMEOUT_S)
        if leader != victim:
            cluster.cluster_stub(leader).TransferLeadership(
                pb.TransferLeadershipRequest(to=victim), timeout=RPC_TIMEOUT_S * 3
            )
            leader = cluster.wait_for_leader(timeout_s=CONVERGE_TIMEOUT_S)
        assert leader == victim, "could not move leadership to the node with the failing disk"
        cluster.streams_stub(leader).CreateStream(
            pb.CreateStreamRequest(name=STREAM), timeout=RPC_TIMEOUT_S
        )
        acked = _put_records(cluster, leader, 10, SEED)
        trigger.touch()
        with contextlib.suppress(grpc.RpcError):
            cluster.streams_stub(victim).PutRecord(
                pb.PutRecordRequest(stream=STREAM, data=b"during the failure"),
                timeout=RPC_TIMEOUT_S,
            )
        process = cluster.process(victim)
        assert process is not None
        try:
            code = process.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{victim} kept running after fsync failed:\n{cluster.log(victim)[-3000:]}")
        assert code != 0, f"{victim} exited with 0 after a failed fsync"
        lines = cluster.log(victim).replace(str(tmp_path), "<tmp>").lower().splitlines()
        complaints = [line for line in lines if "fatal" in line or "error" in line]
        says_why = any(w in line for line in complaints for w in FSYNC_FAILED_WORDS)
        trigger.unlink()
        cluster.start_node(victim)
        cluster.wait_ready(victim)
        cluster.wait_for_leader(timeout_s=CONVERGE_TIMEOUT_S)
        cluster.wait_converged(timeout_s=CONVERGE_TIMEOUT_S)
        for nid in cluster.node_ids:
            held = dict(_stream_of(cluster, nid))
            assert all(held.get(seq) == data for seq, data in acked), f"{nid} lost records"
        assert says_why, f"the exit message must say the disk failed: {complaints}"
    finally:
        trigger.unlink(missing_ok=True)
        cluster.stop()
