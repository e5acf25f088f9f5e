"""Membership changes on real node processes: grow, shrink, replace, restart.

Nodes are added with `railyard node start --join --address ...` (ids not in
the cluster file) and changed with `railyard member ...`, as an operator
would; a bounded producer writes meanwhile, and every acknowledged record is
read back exactly once, in order, from the survivors.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from railyard.proto import railyard_pb2 as pb
from tests.cluster.helpers import create_stream, put_exactly_once, read_all
from tests.support.cluster import HOST, LocalCluster, free_ports, render_config

CLI_TIMEOUT_S = 60.0
# Ids the producer may ask; updated as members come and go.
STREAM = "orders"


def cli(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "railyard", *args, "-c", str(cluster.config_path)],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )


def new_node(cluster: LocalCluster, node_id: str, config: Path | None = None) -> tuple[str, str]:
    """Ports for a node the cluster file does not list, started with --join
    (with `config` in place of the cluster's file when given)."""
    port, peer_port = free_ports(2)
    address, peer_address = f"{HOST}:{port}", f"{HOST}:{peer_port}"
    cluster.addresses[node_id] = address
    cluster.node_ids.append(node_id)
    cluster.node_args[node_id] = [
        *(["-c", str(config)] if config is not None else []),
        "--join",
        "--address",
        address,
        "--peer-address",
        peer_address,
    ]
    cluster.start_node(node_id)
    cluster.wait_ready(node_id)
    return address, peer_address


def add(cluster: LocalCluster, node_id: str, *extra: str) -> subprocess.CompletedProcess[str]:
    address = cluster.addresses[node_id]
    peer_address = cluster.node_args[node_id][-1]
    return cli(
        cluster,
        "member",
        "add",
        node_id,
        "--address",
        address,
        "--peer-address",
        peer_address,
        *extra,
    )


def members(cluster: LocalCluster) -> dict[str, object]:
    result = cli(cluster, "member", "list", "-o", "json")
    assert result.returncode == 0, result.stderr
    doc: dict[str, object] = json.loads(result.stdout)
    return doc


def roles(cluster: LocalCluster) -> dict[str, str]:
    listed = members(cluster)["members"]
    assert isinstance(listed, list)
    return {m["id"]: m["role"] for m in listed}


class Producer:
    """Writes numbered records with one producer id (exactly once) until stopped or `limit`."""

    def __init__(self, cluster: LocalCluster, among: list[str], limit: int = 4000) -> None:
        self.cluster = cluster
        self.among = among
        self.limit = limit
        self.acked: list[bytes] = []
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Producer:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for i in range(self.limit):
                if self._stop.is_set():
                    return
                data = f"r{i}".encode()
                put_exactly_once(
                    self.cluster, STREAM, data, "membership-producer", i + 1, among=self.among
                )
                self.acked.append(data)
                time.sleep(0.005)
        except BaseException as exc:  # reported by stop()
            self.failure = exc

    def wait_for(self, count: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        start = len(self.acked)
        while len(self.acked) < start + count and time.monotonic() < deadline:
            assert self.failure is None, self.failure
            time.sleep(0.02)
        assert len(self.acked) >= start + count, f"only {len(self.acked) - start} acks"

    def stop(self) -> list[bytes]:
        self._stop.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the producer did not stop"
        assert self.failure is None, self.failure
        return self.acked


def test_grow_to_five_lose_two_originals_and_remove_them(tmp_path: Path) -> None:
    with LocalCluster(tmp_path) as cluster:
        cluster.wait_for_leader()
        create_stream(cluster, "n1", STREAM)
        among = list(cluster.node_ids)
        producer = Producer(cluster, among).start()
        producer.wait_for(20)
        # n5 is given a file that lists none of the running nodes: it answers
        # the leader at the addresses the leader's messages carry.
        stale = tmp_path / "stale.toml"
        stale.write_text(
            render_config(cluster.cluster_table, [("n0", f"{HOST}:{free_ports(1)[0]}")])
        )
        for node_id, config in (("n4", None), ("n5", stale)):
            new_node(cluster, node_id, config)
            result = add(cluster, node_id, "--wait", "30s", "-o", "json")
            assert result.returncode == 0, result.stderr + cluster.logs()[-6000:]
            doc = json.loads(result.stdout)
            assert doc["changed"] is True
            among.append(node_id)
            producer.wait_for(10)
        assert roles(cluster) == {n: "voter" for n in ("n1", "n2", "n3", "n4", "n5")}
        listing = members(cluster)
        assert set(listing) == {"config_index", "members"}
        for member in listing["members"]:  # type: ignore[union-attr]
            assert set(member) == {
                "id",
                "address",
                "peer_address",
                "role",
                "reachable",
                "match_index",
            }
        # Two of the original voters die: 3 of 5 remain, a quorum.
        for node_id in ("n1", "n2"):
            cluster.kill(node_id, signal.SIGKILL)
            among.remove(node_id)
        producer.wait_for(20, timeout_s=60)
        # Removing a dead voter is safe here (n3, n4, n5 remain a quorum).
        for node_id in ("n1", "n2"):
            result = cli(cluster, "member", "remove", node_id)
            assert result.returncode == 0, result.stderr
            assert "removed" in result.stdout
        producer.wait_for(20)
        acked = producer.stop()
        assert roles(cluster) == {"n3": "voter", "n4": "voter", "n5": "voter"}
        cluster.wait_converged(among=["n3", "n4", "n5"])
        for node_id in ("n3", "n4", "n5"):
            assert read_all(cluster, node_id, STREAM) == acked


def test_remove_the_leader_moves_leadership_and_it_goes_quiet(tmp_path: Path) -> None:
    with LocalCluster(tmp_path) as cluster:
        leader = cluster.wait_for_leader()
        create_stream(cluster, leader, STREAM)
        others = [n for n in cluster.node_ids if n != leader]
        producer = Producer(cluster, list(cluster.node_ids)).start()
        producer.wait_for(20)
        result = cli(cluster, "member", "remove", leader)
        assert result.returncode == 0, result.stderr + cluster.logs()[-6000:]
        producer.among[:] = others
        new_leader = cluster.wait_for_leader(among=others, exclude=leader)
        assert new_leader in others
        producer.wait_for(20)
        terms = {n: cluster.status(n).term for n in others}  # type: ignore[union-attr]
        # A few election timeouts: the removed node must not push terms up.
        time.sleep(2.0)
        after = {n: cluster.status(n).term for n in others}  # type: ignore[union-attr]
        assert after == terms, (terms, after, cluster.log(leader)[-3000:])
        removed = cluster.status(leader)
        assert removed is not None and removed.role != pb.ROLE_LEADER
        acked = producer.stop()
        cluster.wait_converged(among=others)
        for node_id in others:
            assert read_all(cluster, node_id, STREAM) == acked


def test_whole_cluster_kill_and_restart_keeps_the_configuration(tmp_path: Path) -> None:
    with LocalCluster(tmp_path, snapshot_every=50) as cluster:
        cluster.wait_for_leader()
        create_stream(cluster, "n1", STREAM)
        new_node(cluster, "n4")
        assert add(cluster, "n4", "--wait", "30s").returncode == 0
        result = cli(cluster, "member", "remove", "n1")
        assert result.returncode == 0, result.stderr
        survivors = ["n2", "n3", "n4"]
        acked = [
            put_exactly_once(cluster, STREAM, f"x{i}".encode(), "restart", i + 1, among=survivors)
            for i in range(120)  # past snapshot_every: the configuration is in a snapshot
        ]
        assert len(acked) == 120
        for node_id in cluster.node_ids:
            cluster.kill(node_id, signal.SIGKILL)
        # The file still lists n1, n2, n3 and not n4: the stores decide.
        for node_id in survivors:
            cluster.start_node(node_id)
        for node_id in survivors:
            cluster.wait_ready(node_id)
        cluster.wait_for_leader(among=survivors)
        assert roles(cluster) == {"n2": "voter", "n3": "voter", "n4": "voter"}
        for node_id in survivors:
            assert "the store's configuration" in cluster.log(node_id)
        cluster.wait_converged(among=survivors)
        for node_id in survivors:
            assert read_all(cluster, node_id, STREAM) == [f"x{i}".encode() for i in range(120)]


def test_replace_a_wiped_node_on_a_new_address_under_load(tmp_path: Path) -> None:
    with LocalCluster(tmp_path) as cluster:
        leader = cluster.wait_for_leader()
        create_stream(cluster, leader, STREAM)
        failed = next(n for n in cluster.node_ids if n != leader)
        among = list(cluster.node_ids)
        producer = Producer(cluster, among).start()
        producer.wait_for(20)
        # The machine is lost: process and disk.
        cluster.kill(failed, signal.SIGKILL)
        shutil.rmtree(cluster.data_dir(failed))
        among.remove(failed)
        result = cli(cluster, "member", "remove", failed)
        assert result.returncode == 0, result.stderr
        producer.wait_for(10)
        new_node(cluster, "n4")
        result = add(cluster, "n4", "--wait", "30s")
        assert result.returncode == 0, result.stderr + cluster.logs()[-6000:]
        among.append("n4")
        producer.wait_for(20)
        acked = producer.stop()
        survivors = [n for n in ("n1", "n2", "n3", "n4") if n != failed]
        assert roles(cluster) == dict.fromkeys(survivors, "voter")
        cluster.wait_converged(among=survivors)
        for node_id in survivors:
            assert read_all(cluster, node_id, STREAM) == acked
        # A client that knows only one live node still finds every member.
        status = subprocess.run(
            [
                sys.executable,
                "-m",
                "railyard",
                "status",
                "-o",
                "json",
                "--endpoints",
                cluster.addresses["n4"],
            ],
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
        )
        assert status.returncode == 0, status.stderr
        doc = json.loads(status.stdout)
        assert {n["id"] for n in doc["nodes"]} == set(survivors)
        assert doc["leader"] in survivors
