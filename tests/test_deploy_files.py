"""deploy/: the cluster files load with railyard's own validation and match their units."""

from __future__ import annotations

from pathlib import Path

from railyard.config import load_config

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def test_the_compose_cluster_binds_every_interface_and_advertises_service_names() -> None:
    cfg = load_config(DEPLOY / "docker" / "cluster.toml")
    assert cfg.node_ids == ("n1", "n2", "n3")
    compose = (DEPLOY / "docker" / "compose.yaml").read_text()
    for node in cfg.nodes:
        assert node.address == f"{node.id}:50051"
        assert node.bind_address == "0.0.0.0:50051"
        assert node.peer_bind_address == "0.0.0.0:51051"
        assert f'"--id", "{node.id}"' in compose
        assert f"{node.id}-data:/var/lib/railyard" in compose
    assert str(cfg.data_dir) == "/var/lib/railyard"


def test_the_systemd_cluster_has_tls_and_the_unit_runs_the_instance_id() -> None:
    cfg = load_config(DEPLOY / "systemd" / "cluster.toml")
    assert cfg.tls is not None and not cfg.insecure
    assert all(n.bind_address == "0.0.0.0:50051" for n in cfg.nodes)
    unit = (DEPLOY / "systemd" / "railyard@.service").read_text()
    assert "node start -c /etc/railyard/cluster.toml --id %i" in unit
    assert str(cfg.data_dir) == "/var/lib/railyard"
