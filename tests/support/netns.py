"""Nodes in separate Linux network namespaces, one address each, on a private bridge.

`NetnsCluster` makes a bridge in the test's own namespace (10.a.b.1/24) and,
per node, a namespace with a veth pair into the bridge and its own address
10.a.b.(10+k); the node binds ``0.0.0.0`` there (`listen_address`) and
advertises that address, as a node on its own host would. The test process
reaches every node through the bridge; nodes reach each other the same way.

Made to be grown: `add_host(node_id)` gives a new node a namespace and an
address, `write_config(...)` rewrites the cluster file (and can leave a node
out of it), `start_node(node_id, *args)` passes extra arguments (such as
``--join``), `cli(...)` runs any `railyard` command against the cluster. A
test that adds a member uses those four.

Needs root (CAP_NET_ADMIN) and `ip`; `unavailable_reason()` says what is
missing so the test can skip. `close()` stops every node it started by pid
and deletes every namespace, veth and the bridge it made.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc

from railyard.proto import railyard_pb2 as pb
from railyard.proto import railyard_pb2_grpc as pb_grpc

API_PORT = 50051
PEER_PORT = 51051
IP_TIMEOUT_S = 10.0
STOP_GRACE_S = 10.0
STATUS_DEADLINE_S = 1.0
READY_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.1
CLI_TIMEOUT_S = 60.0
FIRST_HOST = 10


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=check
    )


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here (None: they can)."""
    if sys.platform != "linux":
        return f"network namespaces are Linux only (this is {sys.platform})"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "making network namespaces needs root (CAP_NET_ADMIN)"
    probe = f"ryprobe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


class NetnsCluster:
    """See the module docstring."""

    def __init__(self, root: Path, node_ids: list[str], name: str = "netns") -> None:
        self.root = Path(root)
        self.name = name
        self.tag = f"{random.randrange(16**4):04x}"
        self.subnet = f"10.{random.randrange(200, 250)}.{random.randrange(1, 255)}"
        self.bridge = f"rb{self.tag}"
        self.config_path = self.root / f"{name}.toml"
        self.log_dir = self.root / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.hosts: dict[str, str] = {}  # node id -> its namespace's address
        self.namespaces: dict[str, str] = {}  # node id -> namespace name
        self.links: dict[str, str] = {}  # node id -> its veth's end on the bridge
        self._next_host = FIRST_HOST
        self._links = itertools.count()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._channels: dict[str, grpc.Channel] = {}
        self._made_bridge = False
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            self._made_bridge = True
            _ip("addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for node_id in node_ids:
                self.add_host(node_id)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ hosts

    def add_host(self, node_id: str, address: str | None = None) -> str:
        """A namespace for `node_id` with its own address (`address`, or the next free one)."""
        k = next(self._links)
        namespace = f"ry{self.tag}{node_id}"[:15]
        host = address or f"{self.subnet}.{self._next_host}"
        self._next_host += 1
        outer, inner = f"rv{self.tag}{k}{node_id}"[:15], f"rp{self.tag}{k}{node_id}"[:15]
        _ip("netns", "add", namespace)
        self.namespaces[node_id] = namespace
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        self.links[node_id] = outer
        _ip("link", "set", inner, "netns", namespace)
        _ip("link", "set", outer, "master", self.bridge)
        _ip("link", "set", outer, "up")
        _ip("-n", namespace, "addr", "add", f"{host}/24", "dev", inner)
        _ip("-n", namespace, "link", "set", inner, "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        self.hosts[node_id] = host
        return host

    def remove_host(self, node_id: str) -> None:
        """Delete the node's namespace (its veth goes with it): the machine is gone."""
        namespace = self.namespaces.pop(node_id)
        # The pair goes with the namespace, but only once the kernel has
        # cleaned it up, later: delete it now so nothing outlives the test.
        outer = self.links.pop(node_id, None)
        if outer is not None:
            _ip("link", "del", outer, check=False)
        _ip("netns", "del", namespace, check=False)

    # ------------------------------------------------------------ config

    def address(self, node_id: str) -> str:
        return f"{self.hosts[node_id]}:{API_PORT}"

    def peer_address(self, node_id: str) -> str:
        return f"{self.hosts[node_id]}:{PEER_PORT}"

    def write_config(self, node_ids: list[str] | None = None) -> None:
        """The cluster file: each node binds 0.0.0.0 and advertises its namespace's address."""
        lines = [
            "[cluster]",
            f'name = "{self.name}"',
            f'data_dir = "{self.root / "data"}"',
            "heartbeat_interval_ms = 50",
            "election_timeout_ms = 500",
            "# Plaintext between namespaces of one test, on a bridge only this host sees.",
            "insecure = true",
        ]
        for node_id in node_ids if node_ids is not None else list(self.hosts):
            lines += [
                "",
                "[[nodes]]",
                f'id = "{node_id}"',
                f'address = "{self.address(node_id)}"',
                f'peer_address = "{self.peer_address(node_id)}"',
                f'listen_address = "0.0.0.0:{API_PORT}"',
                f'peer_listen_address = "0.0.0.0:{PEER_PORT}"',
            ]
        self.config_path.write_text("\n".join(lines) + "\n")

    # ------------------------------------------------------------ processes

    def start_node(self, node_id: str, *args: str) -> subprocess.Popen[bytes]:
        command = [
            "ip",
            "netns",
            "exec",
            self.namespaces[node_id],
            sys.executable,
            "-m",
            "railyard",
            "node",
            "start",
            "-c",
            str(self.config_path),
            "--id",
            node_id,
            *args,
        ]
        log = open(self.log_dir / f"{node_id}.log", "ab")  # noqa: SIM115 - owned by the child
        try:
            # `ip netns exec` execs the command: the pid is the node's own.
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )
        finally:
            log.close()
        self._procs[node_id] = proc
        return proc

    def stop_node(self, node_id: str) -> int:
        """SIGTERM the node by pid, SIGKILL after a grace period; its exit code."""
        proc = self._procs[node_id]
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_GRACE_S)
        self._drop_channel(node_id)
        return proc.returncode

    def log(self, node_id: str) -> str:
        path = self.log_dir / f"{node_id}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # ------------------------------------------------------------ status

    def status(self, node_id: str) -> pb.NodeStatus | None:
        if node_id not in self._channels:
            self._channels[node_id] = grpc.insecure_channel(self.address(node_id))
        try:
            status: pb.NodeStatus = pb_grpc.ClusterStub(self._channels[node_id]).Status(
                pb.StatusRequest(), timeout=STATUS_DEADLINE_S
            )
            return status
        except grpc.RpcError:
            return None

    def wait_ready(self, node_id: str, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            proc = self._procs[node_id]
            if proc.poll() is not None:
                raise RuntimeError(f"{node_id} exited with {proc.returncode}:\n{self.log(node_id)}")
            if self.status(node_id) is not None:
                return
            time.sleep(POLL_INTERVAL_S)
        raise TimeoutError(f"{node_id} not ready after {timeout_s}s:\n{self.log(node_id)[-4000:]}")

    def wait_for_leader(self, timeout_s: float = READY_TIMEOUT_S) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for node_id in self.hosts:
                status = self.status(node_id)
                if status is not None and status.role == pb.ROLE_LEADER:
                    return node_id
            time.sleep(POLL_INTERVAL_S)
        raise TimeoutError(f"no leader after {timeout_s}s")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`railyard ARGS -c <cluster file>`, from the test's own namespace."""
        return subprocess.run(
            [sys.executable, "-m", "railyard", *args, "-c", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
        )

    # ------------------------------------------------------------ teardown

    def _drop_channel(self, node_id: str) -> None:
        channel = self._channels.pop(node_id, None)
        if channel is not None:
            channel.close()

    def close(self) -> None:
        for node_id in list(self._procs):
            self.stop_node(node_id)
        for node_id in list(self._channels):
            self._drop_channel(node_id)
        for node_id in list(self.namespaces):
            self.remove_host(node_id)
        if self._made_bridge:
            _ip("link", "del", self.bridge, check=False)
            self._made_bridge = False
