"""A local cluster of real node processes for tests.

`LocalCluster` writes a cluster file in the shape of `configs/local.toml`
(free ports on 127.0.0.1, data under the test's tmp dir, short timings),
starts one process per node and stops them by pid. Every node gets a
`peer_address` (Raft over plain TCP) unless `peer_tcp=False`, which keeps
peer traffic on the gRPC Pipe stream of `address`. Each node's stderr goes
to `<tmp>/logs/<id>.log` so a failing test can show it (`.log(id)`).

Everything here is bounded in time: every wait has a deadline, every gRPC
call a short one.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc

from railyard.proto import railyard_pb2 as pb
from railyard.proto import railyard_pb2_grpc as pb_grpc
from tests.support.proxy import LinkProxy

HOST = "127.0.0.1"
# A status call goes to loopback; a node that does not answer in this long is
# treated as unreachable.
STATUS_DEADLINE_S = 1.0
# A node asked to stop (SIGTERM) gets this long before it is killed.
STOP_GRACE_S = 10.0
# Test ports are drawn from this many ports just below the ephemeral range
# (Linux: 32768-60999; IANA's 49152-65535 elsewhere), never below the floor.
PORT_SPAN = 12000
PORT_FLOOR = 10000
DEFAULT_EPHEMERAL_LOW = 32768
DEFAULT_EPHEMERAL_HIGH = 60999
# How long `start()` waits for every node to answer a Status call.
READY_TIMEOUT_S = 20.0
POLL_INTERVAL_S = 0.05
# `railyard cert init` makes a few keys: well under a second.
CERT_INIT_TIMEOUT_S = 30.0
# The README's [tls] table (paths relative to the cluster file).
TLS_TABLE = """
[tls]
ca_file = "certs/ca.pem"
cert_file = "certs/{id}.pem"
key_file = "certs/{id}.key"
client_cert_file = "certs/client.pem"
client_key_file = "certs/client.key"
"""


def free_ports(n: int) -> list[int]:
    """n distinct TCP ports on 127.0.0.1, free now, outside the kernel's ephemeral range.

    A port taken with bind(0) and released comes from the range the kernel
    also hands to outgoing connections and to other bind(0) calls (the test
    proxies): one of those could take it before the node binds it. Ports
    below the range are never handed out that way.
    """
    low, _ = _ephemeral_range()
    candidates = list(range(max(PORT_FLOOR, low - PORT_SPAN), low))
    random.shuffle(candidates)
    ports: list[int] = []
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue  # in use (another test, another process)
        ports.append(port)
        if len(ports) == n:
            return ports
    raise RuntimeError(f"no {n} free ports below the ephemeral range")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL_LOW, DEFAULT_EPHEMERAL_HIGH


def node_command(config_path: Path, node_id: str) -> list[str]:
    """The command line that runs one node in the foreground."""
    if importlib.util.find_spec("railyard.__main__") is not None:
        base = [sys.executable, "-m", "railyard", "node", "start"]
    else:
        base = [sys.executable, "-m", "railyard.node"]
    return [*base, "-c", str(config_path), "--id", node_id]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        text = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{text}"'
    raise TypeError(f"cannot write {value!r} as TOML")


def render_config(
    cluster: Mapping[str, Any],
    nodes: list[tuple[str, str]],
    peer_addresses: Mapping[str, str] | None = None,
    metrics_addresses: Mapping[str, str] | None = None,
    kinesis_addresses: Mapping[str, str] | None = None,
    native_addresses: Mapping[str, str] | None = None,
) -> str:
    """The cluster file text: a [cluster] table and one [[nodes]] per node.

    `nodes` lists (id, address); a node named in `peer_addresses` also gets
    that `peer_address`, one named in `metrics_addresses` that `metrics_address`,
    one in `kinesis_addresses` that `kinesis_address`, and one in
    `native_addresses` that `native_address`.
    """
    peers = peer_addresses or {}
    metrics = metrics_addresses or {}
    kinesis = kinesis_addresses or {}
    lines = ["[cluster]"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in cluster.items()]
    for node_id, address in nodes:
        lines += ["", "[[nodes]]", f"id = {_toml_value(node_id)}"]
        lines.append(f"address = {_toml_value(address)}")
        if node_id in peers:
            lines.append(f"peer_address = {_toml_value(peers[node_id])}")
        if node_id in metrics:
            lines.append(f"metrics_address = {_toml_value(metrics[node_id])}")
        if node_id in kinesis:
            lines.append(f"kinesis_address = {_toml_value(kinesis[node_id])}")
        if node_id in (native_addresses or {}):
            lines.append(f"native_address = {_toml_value((native_addresses or {})[node_id])}")
    return "\n".join(lines) + "\n"


class LocalCluster:
    """Real node processes on 127.0.0.1 under `tmp_path`.

    `extra` adds (or overrides) keys of the [cluster] table. `env` adds
    environment variables to every node process (`node_env` per node).
    `proxy=True` routes node-to-node traffic through a `LinkProxy`.
    `peer_tcp=False` writes no peer_address, so peers talk over gRPC Pipe.
    `tls=True` adds the [tls] table of the README and makes its certificates
    with `railyard cert init` (under `<tmp>/certs`); the cluster's own
    channels then present the admin client certificate it made.
    `metrics=True` gives every node a `metrics_address` (`metrics_addresses`).
    `log_format` is passed to every node's `--log-format` when set.
    `kinesis=True` gives every node a `kinesis_address` (`kinesis_url(node)`);
    `kinesis_keys` (access key id -> (secret, role)) become `[kinesis.credentials]`.
    `native=True` gives every node a `native_address` (`native_addresses`).
    """

    def __init__(
        self,
        tmp_path: Path,
        n: int = 3,
        *,
        name: str = "test",
        heartbeat_interval_ms: int = 50,
        election_timeout_ms: int = 500,
        snapshot_every: int = 10000,
        extra: dict[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        log_level: str = "info",
        proxy: bool = False,
        peer_tcp: bool = True,
        tls: bool = False,
        metrics: bool = False,
        log_format: str | None = None,
        kinesis: bool = False,
        kinesis_keys: Mapping[str, tuple[str, str]] | None = None,
        native: bool = False,
    ) -> None:
        self.root = Path(tmp_path)
        self.tls = tls
        self.kinesis_keys = dict(kinesis_keys or {})
        self.certs_dir = self.root / "certs"
        self.node_ids = [f"n{i + 1}" for i in range(n)]
        all_ports = free_ports(n * (1 + peer_tcp + metrics + kinesis + native))
        native_ports = all_ports[len(all_ports) - n :] if native else []
        all_ports = all_ports[: len(all_ports) - len(native_ports)]
        ports = all_ports[: 2 * n if peer_tcp else n]
        metrics_ports = all_ports[len(ports) : len(ports) + (n if metrics else 0)]
        kinesis_ports = all_ports[len(ports) + len(metrics_ports) :]
        self.metrics_addresses: dict[str, str] = {
            nid: f"{HOST}:{port}" for nid, port in zip(self.node_ids, metrics_ports, strict=False)
        }
        self.addresses = {
            nid: f"{HOST}:{port}" for nid, port in zip(self.node_ids, ports[:n], strict=True)
        }
        # Empty with peer_tcp=False: no node has a peer_address then.
        self.peer_addresses: dict[str, str] = {
            nid: f"{HOST}:{port}" for nid, port in zip(self.node_ids, ports[n:], strict=False)
        }
        self.kinesis_addresses: dict[str, str] = (
            {nid: f"{HOST}:{port}" for nid, port in zip(self.node_ids, kinesis_ports, strict=True)}
            if kinesis
            else {}
        )
        self.native_addresses: dict[str, str] = (
            {nid: f"{HOST}:{port}" for nid, port in zip(self.node_ids, native_ports, strict=True)}
            if native
            else {}
        )
        self.endpoints = [self.addresses[nid] for nid in self.node_ids]
        self.config_path = self.root / f"{name}.toml"
        self.log_dir = self.root / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_level = log_level
        self.log_format = log_format
        self.env: dict[str, str] = dict(env or {})
        self.node_env: dict[str, dict[str, str]] = {nid: {} for nid in self.node_ids}
        # More arguments of `node start` per node (e.g. --join for a node being added).
        self.node_args: dict[str, list[str]] = {}
        self.cluster_table: dict[str, Any] = {
            "name": name,
            "data_dir": str(self.root / "data"),
            "heartbeat_interval_ms": heartbeat_interval_ms,
            "election_timeout_ms": election_timeout_ms,
            "snapshot_every": snapshot_every,
            "auto_create_streams": True,
        }
        self.cluster_table.update(extra or {})
        self.write_config()
        if tls:
            subprocess.run(
                [sys.executable, "-m", "railyard", "cert", "init", "-c", str(self.config_path)],
                check=True,
                capture_output=True,
                timeout=CERT_INIT_TIMEOUT_S,
            )
        # With proxy=True every node's outgoing peer traffic (gRPC and raw TCP
        # to peer_address alike) goes through a LinkProxy, so the test can cut
        # links (`cluster.proxy.isolate("n1")`).
        self.proxy: LinkProxy | None = None
        if proxy:
            self.proxy = LinkProxy(self.addresses, self.peer_addresses)
            for nid in self.node_ids:
                self.node_env[nid].update(self.proxy.env_for(nid))
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._channels: dict[str, grpc.Channel] = {}

    # ------------------------------------------------------------ config

    def write_config(self) -> None:
        nodes = [(nid, self.addresses[nid]) for nid in self.node_ids]
        text = render_config(
            self.cluster_table,
            nodes,
            self.peer_addresses,
            self.metrics_addresses,
            self.kinesis_addresses,
            self.native_addresses,
        )
        if self.kinesis_keys:
            text += "\n[kinesis.credentials]\n" + "".join(
                f"{_toml_value(key)} = {{ secret_access_key = {_toml_value(secret)}, "
                f"role = {_toml_value(role)} }}\n"
                for key, (secret, role) in self.kinesis_keys.items()
            )
        self.config_path.write_text(text + (TLS_TABLE if self.tls else ""))

    def kinesis_url(self, node_id: str) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.kinesis_addresses[node_id]}"

    def data_dir(self, node_id: str) -> Path:
        return Path(self.cluster_table["data_dir"]) / node_id

    # ------------------------------------------------------------ processes

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> LocalCluster:
        for nid in self.node_ids:
            self.start_node(nid)
        for nid in self.node_ids:
            self.wait_ready(nid, timeout_s)
        return self

    def start_node(self, node_id: str) -> subprocess.Popen[bytes]:
        if node_id in self._procs and self._procs[node_id].poll() is None:
            raise RuntimeError(f"{node_id} is already running (pid {self._procs[node_id].pid})")
        env = {**os.environ, **self.env, **self.node_env.get(node_id, {})}
        env.setdefault("PYTHONUNBUFFERED", "1")
        log = open(self.log_dir / f"{node_id}.log", "ab")  # noqa: SIM115 - owned by the child
        command = [*node_command(self.config_path, node_id), "--log-level", self.log_level]
        command += self.node_args.get(node_id, [])
        if self.log_format is not None:
            command += ["--log-format", self.log_format]
        try:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
            )
        finally:
            log.close()
        self._procs[node_id] = proc
        return proc

    def wait_ready(self, node_id: str, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Wait until the node answers Status; fail with its log if it exits."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            proc = self._procs.get(node_id)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(
                    f"{node_id} exited with {proc.returncode}:\n{self.log(node_id)[-4000:]}"
                )
            status = self.status(node_id)
            if status is not None:
                if (status.node_id, status.cluster) != (node_id, self.cluster_table["name"]):
                    raise RuntimeError(
                        f"{self.addresses[node_id]} is served by node {status.node_id!r} of "
                        f"cluster {status.cluster!r}, not {node_id}: a port collision"
                    )
                return
            time.sleep(POLL_INTERVAL_S)
        raise TimeoutError(f"{node_id} not ready after {timeout_s}s:\n{self.log(node_id)[-4000:]}")

    def pid(self, node_id: str) -> int | None:
        proc = self._procs.get(node_id)
        if proc is None or proc.poll() is not None:
            return None
        return proc.pid

    def process(self, node_id: str) -> subprocess.Popen[bytes] | None:
        return self._procs.get(node_id)

    def kill(self, node_id: str, sig: int = signal.SIGKILL, timeout_s: float = STOP_GRACE_S) -> int:
        """Send `sig` to the node and wait for it to exit; returns its exit code."""
        proc = self._procs.get(node_id)
        if proc is None:
            raise KeyError(f"{node_id} was never started")
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout_s)
        self._drop_channel(node_id)
        return proc.returncode

    def stop_node(self, node_id: str) -> int:
        """SIGTERM, then SIGKILL after a grace period; returns the exit code."""
        return self.kill(node_id, signal.SIGTERM)

    def stop(self) -> None:
        """Stop every node this cluster started (SIGTERM all, then wait, then SIGKILL)."""
        for proc in self._procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self._procs.values():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_GRACE_S)
        for nid in list(self._channels):
            self._drop_channel(nid)
        if self.proxy is not None:
            self.proxy.close()
            self.proxy = None

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self, node_id: str) -> str:
        path = self.log_dir / f"{node_id}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        """Every node's log, headed by its id (for assertion messages)."""
        return "\n".join(f"===== {nid}\n{self.log(nid)}" for nid in self.node_ids)

    # ------------------------------------------------------------ gRPC

    def channel(self, node_id: str) -> grpc.Channel:
        if node_id not in self._channels:
            address = self.addresses[node_id]
            self._channels[node_id] = (
                grpc.secure_channel(address, self.credentials("client"))
                if self.tls
                else grpc.insecure_channel(address)
            )
        return self._channels[node_id]

    def credentials(self, name: str, ca: Path | None = None) -> grpc.ChannelCredentials:
        """TLS credentials presenting certificate `name` (from `certs_dir`)."""
        return grpc.ssl_channel_credentials(
            root_certificates=(ca or self.certs_dir / "ca.pem").read_bytes(),
            private_key=(self.certs_dir / f"{name}.key").read_bytes(),
            certificate_chain=(self.certs_dir / f"{name}.pem").read_bytes(),
        )

    def _drop_channel(self, node_id: str) -> None:
        ch = self._channels.pop(node_id, None)
        if ch is not None:
            ch.close()

    def cluster_stub(self, node_id: str) -> pb_grpc.ClusterStub:
        return pb_grpc.ClusterStub(self.channel(node_id))

    def streams_stub(self, node_id: str) -> pb_grpc.StreamsStub:
        return pb_grpc.StreamsStub(self.channel(node_id))

    def status(self, node_id: str) -> pb.NodeStatus | None:
        """The node's own view, or None when it does not answer quickly."""
        try:
            status: pb.NodeStatus = self.cluster_stub(node_id).Status(
                pb.StatusRequest(), timeout=STATUS_DEADLINE_S
            )
        except grpc.RpcError:
            return None
        return status

    def statuses(self) -> dict[str, pb.NodeStatus | None]:
        return {nid: self.status(nid) for nid in self.node_ids}

    def leader(self, among: list[str] | None = None) -> str | None:
        """The leader a majority of the (given) nodes agree on, if any.

        A node must say it is leader, and a majority of the cluster must name
        it, so a deposed leader that has not noticed yet is not returned.
        """
        ids = among if among is not None else self.node_ids
        statuses = {nid: self.status(nid) for nid in ids}
        majority = len(self.node_ids) // 2 + 1
        for nid, st in statuses.items():
            if st is None or st.role != pb.ROLE_LEADER:
                continue
            agree = sum(
                1
                for s in statuses.values()
                if s is not None and s.leader_id == nid and s.term == st.term
            )
            if agree >= majority:
                return nid
        return None

    def wait_for_leader(
        self, timeout_s: float = 10, among: list[str] | None = None, exclude: str | None = None
    ) -> str:
        """The leader id once a majority agrees on one (optionally not `exclude`)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            leader = self.leader(among)
            if leader is not None and leader != exclude:
                return leader
            time.sleep(POLL_INTERVAL_S)
        raise TimeoutError(f"no leader after {timeout_s}s:\n{self.logs()[-8000:]}")

    def wait_converged(
        self, timeout_s: float = 15, among: list[str] | None = None, min_applied: int = 0
    ) -> dict[str, pb.NodeStatus]:
        """Wait until the nodes report the same commit and applied index (>= min_applied)."""
        ids = among if among is not None else self.node_ids
        deadline = time.monotonic() + timeout_s
        last: dict[str, pb.NodeStatus | None] = {}
        while time.monotonic() < deadline:
            last = {nid: self.status(nid) for nid in ids}
            ok = [s for s in last.values() if s is not None]
            if len(ok) == len(ids):
                commits = {s.commit_index for s in ok}
                applied = {s.applied_index for s in ok}
                if len(commits) == 1 and applied == commits and min(applied) >= min_applied:
                    return {nid: s for nid, s in last.items() if s is not None}
            time.sleep(POLL_INTERVAL_S)
        summary = {
            nid: None if s is None else (s.role, s.term, s.commit_index, s.applied_index)
            for nid, s in last.items()
        }
        raise TimeoutError(f"not converged after {timeout_s}s: {summary}")
