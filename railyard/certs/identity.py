"""Who a certificate speaks for, and what it may do.

A certificate names either a node (URI SAN ``railyard://node/<id>``) or a
client (URI SAN ``railyard://client/<name>``, its role in the subject's OU).
Only the URI counts for a node: a client certificate whose CN happens to be
a node id is still a client.

Roles are ordered: ``reader`` < ``writer`` < ``admin``; a role may do what
the roles below it may. A node may do everything (a follower forwards
its clients' requests, already checked, with its own certificate).
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

NODE_URI_PREFIX = "railyard://node/"
CLIENT_URI_PREFIX = "railyard://client/"
NODE_OU = "node"
READER, WRITER, ADMIN = "reader", "writer", "admin"
ROLES = (READER, WRITER, ADMIN)
NODE = "node"
_RANK = {READER: 1, WRITER: 2, ADMIN: 3, NODE: 4}
# Identities parsed per connection; a cluster has few distinct certificates.
IDENTITY_CACHE_SIZE = 256
SECONDS_PER_DAY = 86400


class CertError(Exception):
    """A certificate cannot be issued, read or used; the message names the file or option."""


@dataclass(frozen=True)
class Identity:
    """What a verified certificate says: a node id, or a client name and its role."""

    name: str
    node: bool
    role: str | None  # reader/writer/admin for a client with one; "node" for a node

    def may(self, needed: str) -> bool:
        """Whether this identity may do what `needed` (a role) may."""
        return self.role is not None and _RANK.get(self.role, 0) >= _RANK[needed]

    def describe(self) -> str:
        if self.node:
            return f"node {self.name}"
        return f"client {self.name} ({self.role or 'no role'})"


def identity_of(uris: Iterable[str], common_name: str, ou: str | None) -> Identity:
    """The identity of a certificate with these URI SANs, CN and OU."""
    for uri in uris:
        if uri.startswith(NODE_URI_PREFIX):
            return Identity(uri.removeprefix(NODE_URI_PREFIX), node=True, role=NODE)
    role = ou if ou in ROLES else None
    for uri in uris:
        if uri.startswith(CLIENT_URI_PREFIX):
            return Identity(uri.removeprefix(CLIENT_URI_PREFIX), node=False, role=role)
    return Identity(common_name, node=False, role=role)


@functools.lru_cache(maxsize=IDENTITY_CACHE_SIZE)
def identity_of_pem(pem: bytes) -> Identity:
    """The identity of a PEM certificate (one already verified by the TLS handshake)."""
    cert = x509.load_pem_x509_certificate(pem)
    return identity_of_cert(cert)


def identity_of_cert(cert: x509.Certificate) -> Identity:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    return identity_of(uris, _attribute(cert, NameOID.COMMON_NAME) or "", _ou(cert))


def node_id_of_peercert(peercert: dict[str, object] | None) -> str | None:
    """The node id in a verified peer certificate as `ssl` reports it (`getpeercert()`)."""
    if not peercert:
        return None
    sans = peercert.get("subjectAltName", ())
    if not isinstance(sans, tuple):
        return None
    for kind, value in sans:
        if kind == "URI" and isinstance(value, str) and value.startswith(NODE_URI_PREFIX):
            return value.removeprefix(NODE_URI_PREFIX)
    return None


def describe_peercert(peercert: dict[str, object] | None) -> str:
    """A short name for a verified certificate that is not a node's (for a log line)."""
    if not peercert:
        return "no certificate"
    for rdn in peercert.get("subject", ()):  # type: ignore[attr-defined]
        for key, value in rdn:
            if key == "commonName":
                return f"certificate {value!r}"
    return "a certificate without a name"


def _attribute(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> str | None:
    values = cert.subject.get_attributes_for_oid(oid)
    if not values:
        return None
    value = values[0].value
    return value.decode() if isinstance(value, bytes) else value


def _ou(cert: x509.Certificate) -> str | None:
    return _attribute(cert, NameOID.ORGANIZATIONAL_UNIT_NAME)


def days_left(pem: bytes, now: datetime.datetime | None = None) -> int:
    """Whole days until the first certificate in `pem` expires (negative once expired)."""
    moment = now or datetime.datetime.now(datetime.UTC)
    return int((expires_at(pem) - moment).total_seconds() // SECONDS_PER_DAY)


@functools.lru_cache(maxsize=IDENTITY_CACHE_SIZE)
def expires_at(pem: bytes) -> datetime.datetime:
    """When the first certificate in `pem` expires (UTC)."""
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc
