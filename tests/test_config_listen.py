"""listen_address / peer_listen_address: what a node binds beside what others dial."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from railyard.config import ClusterConfig, ConfigError, load_config
from railyard.node.process import refuse_plaintext


def load_text(tmp_path: Path, text: str) -> ClusterConfig:
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    return load_config(path)


HOSTS_3 = """
[cluster]
insecure = true
[[nodes]]
id = "n1"
address = "rail-1:50051"
peer_address = "rail-1:51051"
listen_address = "0.0.0.0:50051"
peer_listen_address = "0.0.0.0:51051"
[[nodes]]
id = "n2"
address = "rail-2:50051"
peer_address = "rail-2:51051"
listen_address = "0.0.0.0:50051"
peer_listen_address = "0.0.0.0:51051"
[[nodes]]
id = "n3"
address = "10.0.0.3:50051"
"""


def test_nodes_on_other_machines_may_all_bind_the_same_wildcard_address(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, HOSTS_3)
    n1, n2, n3 = cfg.nodes
    assert (n1.address, n1.bind_address) == ("rail-1:50051", "0.0.0.0:50051")
    assert (n1.peer_address, n1.peer_bind_address) == ("rail-1:51051", "0.0.0.0:51051")
    assert n2.bind_address == "0.0.0.0:50051"
    # Without listen addresses a node binds what it advertises.
    assert (n3.listen_address, n3.bind_address, n3.peer_bind_address) == (
        None,
        "10.0.0.3:50051",
        None,
    )
    # Clients and peers dial the advertised addresses.
    assert cfg.endpoints == ["rail-1:50051", "rail-2:50051", "10.0.0.3:50051"]


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (
            'address = "127.0.0.1:7001"\nlisten_address = "0.0.0.0"\n',
            r"nodes\[0\]\.listen_address: expected \"host:port\"",
        ),
        (
            'address = "127.0.0.1:7001"\nlisten_address = 7001\n',
            r"nodes\[0\]\.listen_address: expected a string",
        ),
        (
            'address = "127.0.0.1:7001"\npeer_listen_address = "0.0.0.0:8001"\n',
            r"nodes\[0\]\.peer_listen_address: expected only beside a peer_address",
        ),
        (
            'address = "h:7001"\npeer_address = "h:8001"\n'
            'listen_address = "0.0.0.0:7001"\npeer_listen_address = "0.0.0.0:7001"\n',
            r"nodes\[0\]\.peer_listen_address: '0\.0\.0\.0:7001' is also what this node binds "
            r"for listen_address",
        ),
        (
            'address = "h:7001"\nmetrics_address = "0.0.0.0:9000"\n'
            'listen_address = "0.0.0.0:9000"\n',
            r"nodes\[0\]\.listen_address: '0\.0\.0\.0:9000' is also what this node binds "
            r"for metrics_address",
        ),
        (
            'address = "127.0.0.1:7001"\nlisten_adress = "0.0.0.0:7001"\n',
            r"nodes\[0\]\.listen_adress: unknown key",
        ),
    ],
)
def test_bad_listen_addresses_are_refused_naming_the_key(
    tmp_path: Path, node: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_text(tmp_path, f'[[nodes]]\nid = "n1"\n{node}')


def test_a_wildcard_listen_address_is_exposed_though_the_advertised_one_is_loopback(
    tmp_path: Path,
) -> None:
    cfg = load_text(
        tmp_path,
        '[[nodes]]\nid = "n1"\naddress = "127.0.0.1:7001"\nlisten_address = "0.0.0.0:7001"\n'
        '[[nodes]]\nid = "n2"\naddress = "127.0.0.1:7002"\npeer_address = "127.0.0.1:8002"\n'
        'peer_listen_address = "[::]:8002"\n'
        '[[nodes]]\nid = "n3"\naddress = "127.0.0.1:7003"\nlisten_address = "127.0.0.2:7003"\n',
    )
    assert cfg.exposed_addresses("n1") == ["0.0.0.0:7001"]
    assert cfg.exposed_addresses("n2") == ["[::]:8002"]
    assert cfg.exposed_addresses("n3") == []


def test_the_safe_default_refuses_plaintext_on_a_wildcard_listen_address(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = '[[nodes]]\nid = "n1"\naddress = "127.0.0.1:7001"\nlisten_address = "0.0.0.0:7001"\n'
    log = logging.getLogger("test-listen")
    with caplog.at_level(logging.ERROR, logger="test-listen"):
        assert refuse_plaintext(load_text(tmp_path, text), "n1", log) is True
    assert "0.0.0.0:7001 is not a loopback address" in caplog.text
    both = text + 'peer_address = "127.0.0.1:8001"\npeer_listen_address = "0.0.0.0:8001"\n'
    with caplog.at_level(logging.ERROR, logger="test-listen"):
        assert refuse_plaintext(load_text(tmp_path, both), "n1", log) is True
    assert "0.0.0.0:7001, 0.0.0.0:8001 are not loopback addresses" in caplog.text
    allowed = load_text(tmp_path, "[cluster]\ninsecure = true\n" + text)
    assert refuse_plaintext(allowed, "n1", log) is False
