"""Issuing a cluster's certificates: one CA, a certificate per node, client certificates.

What a certificate says is what the nodes check (`railyard.certs.identity`):

- a node's certificate names its id in a URI SAN ``railyard://node/<id>``
  (and in its CN), carries its hosts as DNS/IP SANs (clients check the
  address they dial against them) and may serve and dial (both extended key
  usages: a node is a client of its peers);
- a client's certificate names it in a URI SAN ``railyard://client/<name>``
  and its role in the subject's OU, and may only dial (clientAuth): it has
  no node URI, so no node ever takes it for a peer.

Keys are ECDSA P-256 (fast handshakes, small certificates) and are written
with mode 0600; a file that exists already is never overwritten.

This module knows files and cryptography only: no network, no config.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from railyard.certs.identity import CLIENT_URI_PREFIX, NODE_OU, NODE_URI_PREFIX, ROLES, CertError

# A CA outlives the certificates it signs: re-issuing a node's certificate
# must not mean re-issuing every other one.
DEFAULT_CA_DAYS = 3650
DEFAULT_CERT_DAYS = 365
# Clocks of a cluster's hosts differ by seconds; a certificate valid from
# "now" could be refused by a host a little behind.
BACKDATE = datetime.timedelta(minutes=5)
KEY_FILE_MODE = 0o600
CA_NAME = "ca"
CA_COMMON_NAME = "railyard cluster CA"


@dataclass(frozen=True)
class Issued:
    """A certificate and its key as PEM bytes."""

    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class Authority:
    """A CA's certificate and key, loaded to sign with."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _validity(
    days: int, now: datetime.datetime | None
) -> tuple[datetime.datetime, datetime.datetime]:
    if days < 1:
        raise CertError(f"--days: expected at least 1 (got {days})")
    start = (now or datetime.datetime.now(datetime.UTC)) - BACKDATE
    return start, start + BACKDATE + datetime.timedelta(days=days)


def new_authority(
    cluster: str, *, days: int = DEFAULT_CA_DAYS, now: datetime.datetime | None = None
) -> Authority:
    """A self-signed CA for cluster `cluster`."""
    key = _new_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster),
        ]
    )
    not_before, not_after = _validity(days, now)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(cert, key)


def _leaf(
    authority: Authority,
    subject: x509.Name,
    sans: list[x509.GeneralName],
    usages: list[x509.ObjectIdentifier],
    not_before: datetime.datetime,
    not_after: datetime.datetime,
) -> Issued:
    key = _new_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(authority.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()),
            critical=False,
        )
        .sign(authority.key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def host_name(host: str) -> x509.GeneralName:
    """An IP SAN for an address (``[v6]`` brackets allowed), a DNS SAN for a name."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return x509.DNSName(host)


def issue_node(
    authority: Authority,
    node_id: str,
    hosts: Sequence[str],
    *,
    days: int = DEFAULT_CERT_DAYS,
    now: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> Issued:
    """Node `node_id`'s certificate, valid for each of `hosts` (names or addresses)."""
    if not hosts:
        raise CertError(f"node {node_id}: expected at least one host (--host) for its SANs")
    start, end = _validity(days, now)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(NODE_URI_PREFIX + node_id)]
    for host in dict.fromkeys(hosts):
        names.append(host_name(host))
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, node_id),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, NODE_OU),
        ]
    )
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    return _leaf(authority, subject, names, usages, start, not_after or end)


def issue_client(
    authority: Authority,
    name: str,
    role: str,
    *,
    days: int = DEFAULT_CERT_DAYS,
    now: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> Issued:
    """A client certificate for `name` carrying `role` (reader, writer or admin)."""
    if role not in ROLES:
        raise CertError(f"--role: expected one of {', '.join(ROLES)} (got {role!r})")
    start, end = _validity(days, now)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
        ]
    )
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(CLIENT_URI_PREFIX + name)]
    return _leaf(
        authority, subject, names, [ExtendedKeyUsageOID.CLIENT_AUTH], start, not_after or end
    )


# ---------------------------------------------------------------- files


def write_new(path: Path, data: bytes, *, secret: bool) -> None:
    """Write a file that must not exist yet; a key gets mode 0600 from its creation on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = KEY_FILE_MODE if secret else 0o644
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise CertError(f"{path}: exists already; remove it or choose another --dir") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    if secret:
        os.chmod(path, KEY_FILE_MODE)  # a umask cannot have widened it, but be exact


def refuse_existing(paths: Sequence[Path]) -> None:
    """Fail before writing anything when any of `paths` exists (no half-made set)."""
    for path in paths:
        if path.exists():
            raise CertError(f"{path}: exists already; remove it or choose another --dir")


def save(directory: Path, name: str, issued: Issued) -> tuple[Path, Path]:
    """`<name>.pem` and `<name>.key` in `directory`; their paths."""
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    refuse_existing([cert_path, key_path])
    write_new(cert_path, issued.cert_pem, secret=False)
    write_new(key_path, issued.key_pem, secret=True)
    return cert_path, key_path


def save_authority(directory: Path, authority: Authority) -> tuple[Path, Path]:
    return save(directory, CA_NAME, Issued(authority.cert_pem, _key_pem(authority.key)))


def load_authority(directory: Path) -> Authority:
    """The CA in `directory` (``ca.pem`` and ``ca.key``), to sign more certificates."""
    cert_path, key_path = directory / f"{CA_NAME}.pem", directory / f"{CA_NAME}.key"
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError as e:
        raise CertError(
            f"{e.filename}: not found; create the cluster's CA with `railyard cert init -c FILE`"
            " or pass --dir DIR where ca.pem and ca.key are"
        ) from None
    except ValueError as e:
        raise CertError(
            f"{directory}: ca.pem or ca.key is not a PEM certificate/key ({e})"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{key_path}: expected the ECDSA key written by `railyard cert init`")
    return Authority(cert, key)
