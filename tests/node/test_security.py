"""node/security.py: loading a node's TLS files, reloading them, the expiry warning."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from railyard.certs import CertError, issue_client, issue_node, new_authority, save, save_authority
from railyard.config import TlsConfig
from railyard.node.security import NodeTls


def tls_config(directory: Path) -> TlsConfig:
    return TlsConfig(
        ca_file=directory / "ca.pem",
        cert_file=str(directory / "{id}.pem"),
        key_file=str(directory / "{id}.key"),
    )


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    ca = new_authority("c")
    save_authority(tmp_path, ca)
    save(tmp_path, "n1", issue_node(ca, "n1", ["127.0.0.1"]))
    save(tmp_path, "n2", issue_node(ca, "n2", ["127.0.0.1"]))
    save(tmp_path, "reader", issue_client(ca, "n3", "reader"))
    return tmp_path


LOG = logging.getLogger("test")


def test_a_node_starts_only_with_its_own_certificate(certs: Path) -> None:
    assert NodeTls(tls_config(certs), "n1", LOG).days_left() in (364, 365)
    # n3's files are a client's certificate named n3: not a node's.
    (certs / "reader.pem").rename(certs / "n3.pem")
    (certs / "reader.key").rename(certs / "n3.key")
    with pytest.raises(CertError, match=r"n3\.pem: names client n3 \(reader\), not node n3"):
        NodeTls(tls_config(certs), "n3", LOG)
    with pytest.raises(CertError, match=r"n4\.pem: cannot read the certificate"):
        NodeTls(tls_config(certs), "n4", LOG)


def test_a_key_of_another_certificate_is_refused(certs: Path) -> None:
    (certs / "n1.key").write_bytes((certs / "n2.key").read_bytes())
    with pytest.raises(CertError, match="cannot be used with"):
        NodeTls(tls_config(certs), "n1", LOG)


def test_a_failed_reload_keeps_the_files_in_use(
    certs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tls = NodeTls(tls_config(certs), "n1", LOG)
    before = tls.material
    (certs / "n1.pem").write_bytes((certs / "n2.pem").read_bytes())
    with caplog.at_level(logging.ERROR):
        assert tls.reload() is False
    assert "certificates not reloaded" in caplog.text
    assert tls.material == before
    (certs / "n1.pem").write_bytes(before.cert_pem)
    assert tls.reload() is True
    assert tls.material.generation == before.generation + 1


def test_a_node_warns_within_30_days_of_expiry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = new_authority("c")
    save_authority(tmp_path, ca)
    save(tmp_path, "n1", issue_node(ca, "n1", ["127.0.0.1"], days=10))
    tls = NodeTls(tls_config(tmp_path), "n1", LOG)
    with caplog.at_level(logging.WARNING):
        tls.warn_if_expiring()
    assert "expires in 9 days" in caplog.text or "expires in 10 days" in caplog.text
