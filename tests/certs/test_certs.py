"""railyard.certs and `railyard cert`: what the certificates say, and the files written."""

from __future__ import annotations

import datetime
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner

from railyard.certs import (
    CertError,
    days_left,
    identity_of_pem,
    issue_client,
    issue_node,
    load_authority,
    new_authority,
)
from railyard.cli.app import app

CLUSTER = """
[cluster]
name = "secure"

[[nodes]]
id = "n1"
address = "127.0.0.1:7001"
peer_address = "127.0.0.1:8001"
[[nodes]]
id = "n2"
address = "db-2.internal:7002"
[[nodes]]
id = "n3"
address = "[::1]:7003"
"""


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_node_and_client_identities() -> None:
    ca = new_authority("c")
    node = identity_of_pem(issue_node(ca, "n1", ["127.0.0.1"]).cert_pem)
    assert (node.name, node.node, node.role) == ("n1", True, "node")
    reader = identity_of_pem(issue_client(ca, "n1", "reader").cert_pem)
    # A client named like a node is still a client: only the node URI counts.
    assert (reader.name, reader.node, reader.role) == ("n1", False, "reader")
    assert reader.may("reader")
    assert not reader.may("writer")
    assert identity_of_pem(issue_client(ca, "ops", "admin").cert_pem).may("writer")


def test_unknown_role_and_no_host_are_refused() -> None:
    ca = new_authority("c")
    with pytest.raises(CertError, match="--role: expected one of reader, writer, admin"):
        issue_client(ca, "x", "root")
    with pytest.raises(CertError, match="at least one host"):
        issue_node(ca, "n1", [])


def test_days_left_counts_down_to_expiry() -> None:
    ca = new_authority("c")
    issued = issue_client(ca, "x", "reader", days=30)
    assert days_left(issued.cert_pem) in (29, 30)
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    assert days_left(issue_client(ca, "x", "reader", now=past, days=1).cert_pem) < 0


def test_cert_init_writes_ca_nodes_and_admin_client(tmp_path: Path) -> None:
    cluster = tmp_path / "cluster.toml"
    cluster.write_text(CLUSTER)
    code, output = cli("cert", "init", "-c", str(cluster), "--days", "90")
    assert code == 0, output
    certs = tmp_path / "certs"
    names = {p.name for p in certs.iterdir()}
    assert names == {f"{n}.{e}" for n in ("ca", "n1", "n2", "n3", "client") for e in ("pem", "key")}
    for key in certs.glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    n2 = x509.load_pem_x509_certificate((certs / "n2.pem").read_bytes())
    sans = n2.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["db-2.internal"]
    n3 = x509.load_pem_x509_certificate((certs / "n3.pem").read_bytes())
    n3_sans = n3.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in n3_sans.get_values_for_type(x509.IPAddress)] == ["::1"]
    assert identity_of_pem((certs / "client.pem").read_bytes()).role == "admin"
    assert days_left((certs / "n1.pem").read_bytes()) in (89, 90)
    # Each certificate verifies against the CA (what a TLS handshake checks).
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    ctx.load_cert_chain(certs / "n1.pem", certs / "n1.key")


def test_cert_init_refuses_to_overwrite_and_writes_nothing(tmp_path: Path) -> None:
    cluster = tmp_path / "cluster.toml"
    cluster.write_text(CLUSTER)
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "n2.key").write_text("mine")
    code, output = cli("cert", "init", "-c", str(cluster))
    assert code == 1
    assert "n2.key: exists already" in output
    assert [p.name for p in (tmp_path / "certs").iterdir()] == ["n2.key"]


def test_cert_client_and_node_sign_with_the_same_ca(tmp_path: Path) -> None:
    cluster = tmp_path / "cluster.toml"
    cluster.write_text(CLUSTER)
    assert cli("cert", "init", "-c", str(cluster))[0] == 0
    certs = tmp_path / "certs"
    code, output = cli("cert", "client", "dash", "--role", "reader", "-c", str(cluster))
    assert code == 0, output
    assert identity_of_pem((certs / "dash.pem").read_bytes()).role == "reader"
    code, output = cli("cert", "node", "n4", "--host", "10.0.0.4", "--dir", str(certs))
    assert code == 0, output
    ca = load_authority(certs)
    for name in ("dash", "n4"):
        cert = x509.load_pem_x509_certificate((certs / f"{name}.pem").read_bytes())
        cert.verify_directly_issued_by(ca.cert)
    assert identity_of_pem((certs / "n4.pem").read_bytes()).name == "n4"


def test_cert_client_errors_are_one_line(tmp_path: Path) -> None:
    code, output = cli("cert", "client", "x", "--role", "root", "--dir", str(tmp_path))
    assert code == 1
    assert output.strip() == "error: --role: expected one of reader, writer, admin (got 'root')"
    code, output = cli("cert", "client", "x", "--role", "reader", "--dir", str(tmp_path))
    assert code == 1
    assert "ca.pem: not found; create the cluster's CA with `railyard cert init" in output
    assert len(output.strip().splitlines()) == 1


def test_client_tls_flags_that_do_not_fit_are_one_line_errors(tmp_path: Path) -> None:
    cluster = tmp_path / "cluster.toml"
    cluster.write_text(CLUSTER)
    assert cli("cert", "init", "-c", str(cluster))[0] == 0
    certs = tmp_path / "certs"
    endpoints = ["--endpoints", "127.0.0.1:1"]
    code, output = cli("status", *endpoints, "--cert", str(certs / "client.pem"))
    assert (code, output.strip()) == (
        1,
        "error: --cert/--key: a TLS client also needs the cluster's CA: add --cacert",
    )
    code, output = cli(
        "status", *endpoints, "--cacert", str(certs / "ca.pem"), "--cert", str(certs / "n1.pem")
    )
    assert code == 1
    assert "a client certificate and its key go together: add its key" in output
    code, output = cli("status", *endpoints, "--cacert", str(certs / "n1.key"))
    assert (code, output.strip()) == (
        1,
        f"error: {certs / 'n1.key'}: expected a PEM CA certificate",
    )


def test_cert_node_finds_the_ca_beside_the_cluster_file(tmp_path: Path) -> None:
    cluster = tmp_path / "cluster.toml"
    cluster.write_text(CLUSTER)
    assert cli("cert", "init", "-c", str(cluster))[0] == 0
    code, output = cli("cert", "node", "n4", "--host", "127.0.0.1", "-c", str(cluster))
    assert code == 0, output
    cert = x509.load_pem_x509_certificate((tmp_path / "certs" / "n4.pem").read_bytes())
    cert.verify_directly_issued_by(load_authority(tmp_path / "certs").cert)
