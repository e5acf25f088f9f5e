"""A LocalCluster whose peer links run through the fault-injecting proxies of `netem`.

Each node gets its own cluster file: its own address and peer_address are
real (it listens there), every other node's address and peer_address are
proxies of the directed link (self, other), so faults on that link reach
gRPC and raw-TCP peer traffic alike. Clients use the real addresses (`endpoints`), so faults
touch node-to-node traffic only; a client that is handed a proxied leader
address in a hint has it mapped back to the real one (`FaultClient`).

Process faults live here too: kill -9 (LocalCluster.kill), SIGSTOP/SIGCONT
pauses, restarts. Invariant: `stop()` resumes paused nodes first, so a
SIGTERM is never left pending on a stopped process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import grpc

from railyard.client import RailyardClient
from railyard.proto import railyard_pb2 as pb
from tests.faults.netem import Network
from tests.support.cluster import LocalCluster, render_config

# Reads of a whole stream page through it this many records at a time.
PAGE_RECORDS = 1000
# One page from loopback; generous because nodes share two cores with others.
READ_DEADLINE_S = 10.0
# Read this many recent log entries to compare logs (the short runs stay below it).
READLOG_COUNT = 100_000


class ProxiedCluster(LocalCluster):
    """Real node processes; peer traffic through `net`; pause/resume on top of kill/restart."""

    def __init__(self, tmp_path: Path, net: Network, n: int = 3, **kwargs: Any) -> None:
        super().__init__(tmp_path, n, **kwargs)
        self.net = net
        self.paused: set[str] = set()
        # proxy address -> real address, for clients handed a proxied leader
        # hint. Hints name `address` only, so peer_address proxies stay out.
        self.real_address: dict[str, str] = {}
        # (a, b) -> the proxy a dials for b's address / b's peer_address.
        self.link_address: dict[tuple[str, str], str] = {}
        self.link_peer_address: dict[tuple[str, str], str] = {}
        for a in self.node_ids:
            for b in self.node_ids:
                if a != b:
                    proxy = net.add_link(a, b, self.addresses[b])
                    self.link_address[(a, b)] = proxy
                    self.real_address[proxy] = self.addresses[b]
                    if b in self.peer_addresses:
                        self.link_peer_address[(a, b)] = net.add_link(a, b, self.peer_addresses[b])
        self.write_node_configs()

    def node_config_path(self, node_id: str) -> Path:
        return self.root / f"{self.config_path.stem}-{node_id}.toml"

    def write_node_configs(self) -> None:
        for me in self.node_ids:
            nodes = [
                (nid, self.addresses[nid] if nid == me else self.link_address[(me, nid)])
                for nid in self.node_ids
            ]
            peers = {
                nid: real if nid == me else self.link_peer_address[(me, nid)]
                for nid, real in self.peer_addresses.items()
            }
            self.node_config_path(me).write_text(render_config(self.cluster_table, nodes, peers))

    def start_node(self, node_id: str) -> subprocess.Popen[bytes]:
        # LocalCluster starts every node from `config_path`; point it at this
        # node's own view for the duration of the call.
        shared = self.config_path
        self.config_path = self.node_config_path(node_id)
        try:
            return super().start_node(node_id)
        finally:
            self.config_path = shared

    # ------------------------------------------------------------ process faults

    def pause(self, node_id: str) -> None:
        pid = self.pid(node_id)
        if pid is not None:
            os.kill(pid, signal.SIGSTOP)
            self.paused.add(node_id)

    def resume(self, node_id: str) -> None:
        pid = self.pid(node_id)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.paused.discard(node_id)

    def resume_all(self) -> None:
        for nid in list(self.paused):
            self.resume(nid)

    def restart(self, node_id: str) -> None:
        self.start_node(node_id)
        self.wait_ready(node_id)

    def running(self) -> list[str]:
        return [nid for nid in self.node_ids if self.pid(nid) is not None]

    def stop(self) -> None:
        self.resume_all()
        super().stop()

    # ------------------------------------------------------------ inspection

    def read_stream(self, node_id: str, stream: str) -> list[tuple[int, bytes]]:
        """The whole stream as this node has applied it (stale reads, paged)."""
        stub = self.streams_stub(node_id)
        out: list[tuple[int, bytes]] = []
        next_sequence = 1
        for _ in range(1_000_000 // PAGE_RECORDS + 1):
            request = pb.GetRecordsRequest(
                stream=stream, from_sequence=next_sequence, limit=PAGE_RECORDS, stale=True
            )
            response = stub.GetRecords(request, timeout=READ_DEADLINE_S)
            out += [(r.sequence, r.data) for r in response.records]
            if not response.records or response.behind_latest == 0:
                return out
            next_sequence = response.records[-1].sequence + 1
        raise AssertionError(f"{node_id}: stream {stream!r} did not end after paging")

    def read_log(self, node_id: str) -> list[pb.LogEntryInfo]:
        stub = self.cluster_stub(node_id)
        response = stub.ReadLog(pb.ReadLogRequest(count=READLOG_COUNT), timeout=READ_DEADLINE_S)
        return list(response.entries)

    def safe_status(self, node_id: str) -> pb.NodeStatus | None:
        if node_id in self.paused:
            return None
        try:
            return self.status(node_id)
        except grpc.RpcError:
            return None


class FaultClient(RailyardClient):
    """A RailyardClient that maps proxied leader hints back to the node's real address.

    Nodes name the leader by the address in their own cluster file, which
    here is a peer-link proxy; without the mapping, client traffic would
    share the fate of a peer link the nemesis is cutting.
    """

    def __init__(self, endpoints: list[str], real_address: dict[str, str], **kw: Any) -> None:
        super().__init__(endpoints, **kw)
        self._real = real_address

    def _channel(self, endpoint: str) -> grpc.aio.Channel:
        return super()._channel(self._real.get(endpoint, endpoint))
