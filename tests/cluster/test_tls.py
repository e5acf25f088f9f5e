"""A TLS cluster made by `railyard cert init`: what works, what is refused, rotation.

One 3-node cluster (Raft over TCP peer addresses) serves every test of the
module; the certificates beyond `cert init`'s are made with `railyard cert
client` and, for one from another CA, a second `cert init`. Every refusal is
checked three ways: the client's one-line error, a line in the node's log,
and nothing changed in the cluster.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from railyard.certs import issue_client, load_authority, save
from railyard.client import ClientTls, PermissionDenied, RailyardClient
from railyard.node.peers import tcp
from railyard.node.peers.codec import envelope, message_to_pb
from railyard.proto import railyard_pb2 as pb
from railyard.proto import railyard_pb2_grpc as pb_grpc
from railyard.raft import Message, MessageType, NodeId, Term
from railyard.tui import ClientSource, DashboardApp
from tests.support.cluster import LocalCluster, render_config
from tests.tui.test_live import INTERVAL_S, SIZE, column, wait_for

pytestmark = pytest.mark.timeout(120)

CLI_TIMEOUT_S = 30.0
STREAM = "secure"
# A refused client gives up after the client's 2 s; the log line follows at once.
LOG_WAIT_S = 10.0
# The forged messages' term: no election of the test's life comes near it.
FORGED_TERM = 99
WAIT_S = 5.0


def railyard(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "railyard", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("tls")
    c = LocalCluster(root, name="secure", tls=True, native=True)
    certs = c.certs_dir
    for name, role in (("alice", "reader"), ("bob", "writer")):
        made = railyard("cert", "client", name, "--role", role, "-c", str(c.config_path))
        assert made.returncode == 0, made.stderr
    # A certificate from another CA: a second cluster's `cert init`.
    other = root / "other"
    other.mkdir()
    (other / "other.toml").write_text(c.config_path.read_text())
    assert railyard("cert", "init", "-c", str(other / "other.toml")).returncode == 0
    # An expired one, signed by the right CA (`railyard cert` never makes one).
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    save(certs, "expired", issue_client(load_authority(certs), "old", "admin", now=past, days=1))
    try:
        c.start()
        c.wait_for_leader()
        yield c
    finally:
        c.stop()


def tls_flags(cluster: LocalCluster, name: str, key_flag: str = "--key") -> list[str]:
    """Endpoints and certificate flags (`put` names its TLS key --tls-key)."""
    certs = cluster.certs_dir
    return [
        "--endpoints",
        ",".join(cluster.endpoints),
        "--cacert",
        str(certs / "ca.pem"),
        "--cert",
        str(certs / f"{name}.pem"),
        key_flag,
        str(certs / f"{name}.key"),
    ]


def record_count(cluster: LocalCluster) -> int:
    stub = cluster.streams_stub(cluster.wait_for_leader())
    try:
        info = stub.DescribeStream(pb.DescribeStreamRequest(name=STREAM), timeout=WAIT_S)
    except grpc.RpcError as exc:
        if exc.code() is grpc.StatusCode.NOT_FOUND:
            return 0
        raise
    return int(info.stream.record_count)


def wait_for_log(cluster: LocalCluster, text: str, since: dict[str, int]) -> str:
    """The first new log line of any node containing `text` (fails after LOG_WAIT_S)."""
    deadline = time.monotonic() + LOG_WAIT_S
    while time.monotonic() < deadline:
        for nid in cluster.node_ids:
            for line in cluster.log(nid)[since[nid] :].splitlines():
                if text in line:
                    return line
        time.sleep(0.1)
    raise AssertionError(f"no node logged {text!r}:\n{cluster.logs()[-3000:]}")


def log_sizes(cluster: LocalCluster) -> dict[str, int]:
    return {nid: len(cluster.log(nid)) for nid in cluster.node_ids}


# ------------------------------------------------------------------ what works


def test_put_get_status_and_force_election_with_the_files_client_certificate(
    cluster: LocalCluster,
) -> None:
    config = ["-c", str(cluster.config_path)]
    put = railyard("put", STREAM, "over tls", *config)
    assert put.returncode == 0, put.stderr
    got = railyard("get", STREAM, "--from-start", *config)
    assert got.returncode == 0, got.stderr
    assert "over tls" in got.stdout
    status = railyard("status", "-o", "json", *config)
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["security"] == "tls"
    assert all(n["tls"] and n["cert_days_left"] in (364, 365) for n in doc["nodes"])
    assert "mutual TLS" in railyard("status", *config).stdout
    before = cluster.wait_for_leader()
    moved = railyard("force-election", *config)
    assert moved.returncode == 0, moved.stderr
    assert cluster.wait_for_leader(exclude=before) != before


def test_env_variables_name_the_certificates(cluster: LocalCluster) -> None:
    certs = cluster.certs_dir
    env = {
        "RAILYARD_CACERT": str(certs / "ca.pem"),
        "RAILYARD_CERT": str(certs / "alice.pem"),
        "RAILYARD_KEY": str(certs / "alice.key"),
    }
    listed = railyard("stream", "list", "--endpoints", cluster.endpoints[0], env=env)
    assert listed.returncode == 0, listed.stderr


async def test_top_shows_the_tls_cluster_to_a_reader(cluster: LocalCluster) -> None:
    certs = cluster.certs_dir
    tls = ClientTls.from_files(certs / "ca.pem", certs / "alice.pem", certs / "alice.key")
    async with RailyardClient(cluster.endpoints, tls=tls) as client:
        app = DashboardApp(ClientSource(client, cluster.endpoints), INTERVAL_S)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: column(app, "state") == ["up"] * 3, "three nodes up")
            header = str(app.query_one("#summary").render())
            assert "TLS" in header
            assert "INSECURE" not in header


# ------------------------------------------------------------------ refused


REFUSALS = [
    # (name, client flags, the client's line, the node's line)
    (
        "plaintext client",
        lambda c: ["--endpoints", ",".join(c.endpoints)],
        "they serve TLS and this client does not",
        "WRONG_VERSION_NUMBER",
    ),
    (
        "TLS without a client certificate",
        lambda c: ["--endpoints", ",".join(c.endpoints), "--cacert", str(c.certs_dir / "ca.pem")],
        "refused this client's certificate",
        "PEER_DID_NOT_RETURN_A_CERTIFICATE",
    ),
    (
        "a certificate from another CA",
        lambda c: [
            "--endpoints",
            ",".join(c.endpoints),
            "--cacert",
            str(c.certs_dir / "ca.pem"),
            "--cert",
            str(c.root / "other" / "certs" / "client.pem"),
            "--tls-key",
            str(c.root / "other" / "certs" / "client.key"),
        ],
        "refused this client's certificate",
        "unable to get local issuer certificate",
    ),
    (
        "an expired certificate",
        lambda c: tls_flags(c, "expired", "--tls-key"),
        "refused this client's certificate",
        "certificate has expired",
    ),
]


@pytest.mark.parametrize(
    ("flags", "client_says", "node_says"),
    [r[1:] for r in REFUSALS],
    ids=[r[0] for r in REFUSALS],
)
def test_refused_at_the_handshake(
    cluster: LocalCluster, flags: object, client_says: str, node_says: str
) -> None:
    count = record_count(cluster)
    since = log_sizes(cluster)
    result = railyard("put", STREAM, "forged", *flags(cluster))  # type: ignore[operator]
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert client_says in result.stderr
    wait_for_log(cluster, node_says, since)
    assert record_count(cluster) == count


@pytest.mark.parametrize(
    ("who", "command", "client_says"),
    [
        (
            "alice",
            ["put", STREAM, "x"],
            "PutRecordStream needs the writer role; client alice has reader",
        ),
        ("alice", ["stream", "create", "mine"], "CreateStream needs the writer role"),
        ("bob", ["force-election"], "TransferLeadership needs the admin role; client bob has"),
        ("bob", ["stream", "delete", STREAM], "DeleteStream needs the admin role"),
    ],
)
def test_a_role_does_only_what_it_may(
    cluster: LocalCluster, who: str, command: list[str], client_says: str
) -> None:
    railyard("put", STREAM, "exists", "-c", str(cluster.config_path))
    count, leader = record_count(cluster), cluster.wait_for_leader()
    since = log_sizes(cluster)
    key_flag = "--tls-key" if command[0] == "put" else "--key"
    result = railyard(*command, *tls_flags(cluster, who, key_flag))
    assert result.returncode == 1
    assert result.stderr == f"error: {client_says}" + result.stderr.split(client_says, 1)[1]
    assert result.stderr.count("\n") == 1, result.stderr
    wait_for_log(cluster, f"from client {who}", since)
    assert record_count(cluster) == count
    assert cluster.wait_for_leader() == leader


def test_a_writer_puts_and_a_reader_reads(cluster: LocalCluster) -> None:
    put = railyard("put", STREAM, "by bob", *tls_flags(cluster, "bob", "--tls-key"))
    assert put.returncode == 0, put.stderr
    got = railyard("get", STREAM, "--from-start", *tls_flags(cluster, "alice"))
    assert got.returncode == 0, got.stderr
    assert "by bob" in got.stdout


def native_client(cluster: LocalCluster, name: str) -> RailyardClient:
    certs = cluster.certs_dir
    tls = ClientTls.from_files(certs / "ca.pem", certs / f"{name}.pem", certs / f"{name}.key")
    return RailyardClient(cluster.endpoints, tls=tls, coalesce=False, transport="native")


def test_the_native_port_is_mutual_tls_with_the_roles_of_grpc(cluster: LocalCluster) -> None:
    count = record_count(cluster)

    async def go() -> None:
        async with native_client(cluster, "bob") as bob:
            await bob.put(STREAM, b"bob, natively")
            assert bob.puts_by_transport == {"grpc": 0, "native": 1}
        async with native_client(cluster, "alice") as alice:
            with pytest.raises(PermissionDenied, match="PutRecord needs the writer role"):
                await alice.put(STREAM, b"alice may not")

    asyncio.run(go())
    assert record_count(cluster) == count + 1
    # Without a client certificate the handshake is refused: no answer, nothing applied.
    leader = cluster.wait_for_leader()
    host, _, port = cluster.native_addresses[leader].rpartition(":")
    context = ssl.create_default_context(cafile=str(cluster.certs_dir / "ca.pem"))
    context.check_hostname = False
    with (
        socket.create_connection((host, int(port)), timeout=WAIT_S) as raw,
        pytest.raises((ssl.SSLError, ConnectionError)),
        context.wrap_socket(raw) as tls,
    ):
        tls.sendall(b"RAILYARD-NATIVE/1\n")
        if not tls.recv(1):
            raise ConnectionResetError("closed without an answer")
    assert record_count(cluster) == count + 1


# ------------------------------------------------------------------ peers


def forged_frame(cluster: LocalCluster, sender: str, to: str) -> bytes:
    """An AppendEntries-style heartbeat from `sender` far ahead in term."""
    message = message_to_pb(
        Message(
            type=MessageType.HEARTBEAT, to=NodeId(to), sender=NodeId(sender), term=Term(FORGED_TERM)
        )
    )
    peer = pb.Peer(cluster="secure", node_id=sender)
    return tcp.frame(envelope(peer, [message]).SerializeToString())


async def peer_exchange(cluster: LocalCluster, target: str, cert: str, data: bytes) -> bytes:
    """Connect to `target`'s peer port presenting certificate `cert`; what comes back."""
    ctx = ssl.create_default_context(cafile=str(cluster.certs_dir / "ca.pem"))
    ctx.check_hostname = False
    ctx.load_cert_chain(cluster.certs_dir / f"{cert}.pem", cluster.certs_dir / f"{cert}.key")
    host, port = cluster.peer_addresses[target].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port), ssl=ctx)
    writer.write(data)
    try:
        async with asyncio.timeout(WAIT_S):
            return await reader.read()
    finally:
        writer.transport.abort()


def refusal_text(answer: bytes) -> str:
    (size,) = struct.unpack(">I", answer[:4])
    return answer[4 : 4 + size].decode()


def forged_term_taken(cluster: LocalCluster) -> bool:
    """Whether any node moved to the forged term (an election under load may move it less)."""
    statuses = [cluster.status(nid) for nid in cluster.node_ids]
    return any(st is not None and st.term >= FORGED_TERM for st in statuses)


async def test_a_client_certificate_cannot_act_as_a_peer(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    target = next(n for n in cluster.node_ids if n != leader)
    since = log_sizes(cluster)
    frame = forged_frame(cluster, leader, target)
    answer = await peer_exchange(cluster, target, "client", tcp.PREAMBLE + frame)
    assert "certificate 'client' is not a node's" in refusal_text(answer)
    wait_for_log(cluster, "certificate 'client' is not a node's", since)
    # The client address serves no Raft when the node has a peer_address.
    channel = grpc.secure_channel(cluster.addresses[target], cluster.credentials("client"))
    with channel, pytest.raises(grpc.RpcError) as info:
        request = pb.RaftEnvelope.FromString(frame[4:])
        pb_grpc.RaftStub(channel).AppendEntries(request, timeout=WAIT_S)
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert not forged_term_taken(cluster)


async def test_a_node_certificate_must_name_the_frames_sender(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    target, other = (n for n in cluster.node_ids if n != leader)
    since = log_sizes(cluster)
    # `other` holds a real node certificate and claims to be the leader.
    answer = await peer_exchange(
        cluster, target, other, tcp.PREAMBLE + forged_frame(cluster, leader, target)
    )
    expected = f"envelope from {leader!r} on a connection authenticated as node {other!r}"
    assert refusal_text(answer) == expected
    wait_for_log(cluster, expected, since)
    # The client address serves no Raft when the node has a peer_address.
    channel = grpc.secure_channel(cluster.addresses[target], cluster.credentials(other))
    with channel, pytest.raises(grpc.RpcError) as info:
        request = pb.RaftEnvelope.FromString(forged_frame(cluster, leader, target)[4:])
        pb_grpc.RaftStub(channel).AppendEntries(request, timeout=WAIT_S)
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert not forged_term_taken(cluster)


# ------------------------------------------------------------------ rotation


def served_certificate(address: str, ca: Path, cert: Path, key: Path) -> bytes:
    """The DER certificate a fresh TLS connection to `address` is shown."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    ctx.load_cert_chain(cert, key)
    host, port = address.rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=WAIT_S) as raw,
        ctx.wrap_socket(raw) as conn,
    ):
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_sighup_makes_new_connections_use_replaced_files(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    certs = cluster.certs_dir
    node = cluster.node_ids[0]
    pid = cluster.pid(node)
    assert pid is not None
    client = (certs / "ca.pem", certs / "client.pem", certs / "client.key")
    peer = (certs / "ca.pem", certs / "n2.pem", certs / "n2.key")
    old = served_certificate(cluster.addresses[node], *client)
    # A new certificate for the node, made aside and moved over the old files.
    shutil.copy(certs / "ca.pem", tmp_path / "ca.pem")
    shutil.copy(certs / "ca.key", tmp_path / "ca.key")
    made = railyard("cert", "node", node, "--host", "127.0.0.1", "--dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    os.replace(tmp_path / f"{node}.pem", certs / f"{node}.pem")
    os.replace(tmp_path / f"{node}.key", certs / f"{node}.key")
    since = log_sizes(cluster)
    os.kill(pid, signal.SIGHUP)
    wait_for_log(cluster, "certificates reloaded", since)
    new = (certs / f"{node}.pem").read_bytes()
    new_der = ssl.PEM_cert_to_DER_cert(new.decode())
    assert new_der != old
    assert served_certificate(cluster.addresses[node], *client) == new_der
    assert served_certificate(cluster.peer_addresses[node], *peer) == new_der
    assert served_certificate(cluster.native_addresses[node], *client) == new_der
    assert cluster.pid(node) == pid
    put = railyard("put", STREAM, "after rotation", "-c", str(cluster.config_path))
    assert put.returncode == 0, put.stderr


# ------------------------------------------------------------------ safe default


def exposed_config(tmp_path: Path, insecure: bool) -> Path:
    """A one-node file whose address is a host name (not loopback by name) of this machine."""
    name = socket.gethostname()
    if socket.gethostbyname(name) != "127.0.0.1":
        pytest.skip(f"{name} does not resolve to 127.0.0.1: the node must not listen beyond it")
    from tests.support.cluster import free_ports

    (port,) = free_ports(1)
    table = {"name": "exposed", "data_dir": str(tmp_path / "data"), "insecure": insecure}
    path = tmp_path / "exposed.toml"
    path.write_text(render_config(table, [("n1", f"{name}:{port}")]))
    return path


def test_a_node_off_loopback_refuses_plaintext(tmp_path: Path) -> None:
    path = exposed_config(tmp_path, insecure=False)
    result = railyard("node", "start", "-c", str(path), "--id", "n1")
    assert result.returncode == 1
    assert "is not a loopback address" in result.stderr
    assert "has no [tls] table" in result.stderr
    assert not (tmp_path / "data" / "n1").exists()


def test_starting_every_node_refuses_plaintext_once_and_starts_none(tmp_path: Path) -> None:
    path = exposed_config(tmp_path, insecure=False)
    result = railyard("node", "start", "-c", str(path))
    assert result.returncode == 1
    assert result.stderr.count("has no [tls] table") == 1, result.stderr
    assert "n1: cannot start" in result.stderr
    assert "started n1" not in result.stdout + result.stderr  # the supervisor started no child
    assert not (tmp_path / "data" / "n1").exists()


def test_insecure_true_overrides_it_with_a_warning_and_status_says_so(tmp_path: Path) -> None:
    path = exposed_config(tmp_path, insecure=True)
    log = tmp_path / "n1.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "railyard", "node", "start", "-c", str(path), "--id", "n1"],
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 20
        status = None
        while status is None and time.monotonic() < deadline:
            result = railyard("status", "-o", "json", "-c", str(path))
            if result.returncode == 0:
                status = json.loads(result.stdout)
            else:
                time.sleep(0.2)
        assert status is not None, log.read_text()
        assert status["security"] == "insecure"
        assert "INSECURE" in railyard("status", "-c", str(path)).stdout
        assert "INSECURE: serving without TLS" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=15)
