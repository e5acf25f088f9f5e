"""Membership changes on a TLS cluster: a node issued with `railyard cert node`
joins and is promoted; a node whose certificate names another id cannot join."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.cluster.helpers import create_stream, read_all
from tests.cluster.test_membership import STREAM, add, cli, new_node, roles
from tests.support.cluster import HOST, LocalCluster, free_ports

CLI_TIMEOUT_S = 60.0


def issue(cluster: LocalCluster, node_id: str) -> None:
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "railyard",
            "cert",
            "node",
            node_id,
            "--host",
            HOST,
            "--dir",
            str(cluster.certs_dir),
        ],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    assert made.returncode == 0, made.stderr


def test_a_certified_node_joins_and_one_with_another_id_cannot(tmp_path: Path) -> None:
    with LocalCluster(tmp_path, tls=True) as cluster:
        leader = cluster.wait_for_leader()
        create_stream(cluster, leader, STREAM)
        issue(cluster, "n4")
        new_node(cluster, "n4")
        result = add(cluster, "n4", "--wait", "30s")
        assert result.returncode == 0, result.stderr + cluster.logs()[-6000:]
        assert roles(cluster)["n4"] == "voter"
        put = cli(cluster, "put", STREAM, "after joining")
        assert put.returncode == 0, put.stderr
        cluster.wait_converged()
        assert read_all(cluster, "n4", STREAM) == [b"after joining"]

        # n5's certificate files hold n6's certificate: n5 cannot pose as a node.
        issue(cluster, "n6")
        shutil.copy(cluster.certs_dir / "n6.pem", cluster.certs_dir / "n5.pem")
        shutil.copy(cluster.certs_dir / "n6.key", cluster.certs_dir / "n5.key")
        before = json.loads(cli(cluster, "member", "list", "-o", "json").stdout)
        port, peer_port = free_ports(2)
        started = subprocess.run(
            [
                sys.executable,
                "-m",
                "railyard",
                "node",
                "start",
                "-c",
                str(cluster.config_path),
                "--id",
                "n5",
                "--join",
                "--address",
                f"{HOST}:{port}",
                "--peer-address",
                f"{HOST}:{peer_port}",
            ],
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
        )
        assert started.returncode == 1
        assert "names node n6, not node n5" in started.stderr
        after = json.loads(cli(cluster, "member", "list", "-o", "json").stdout)
        assert [m["id"] for m in after["members"]] == [m["id"] for m in before["members"]]
