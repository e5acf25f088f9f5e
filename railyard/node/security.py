"""A node's TLS: its certificate and the cluster CA, for every connection it makes or takes.

With ``[tls]`` in the cluster file every connection is TLS 1.2 or later
(1.3 when both ends have it) with both ends authenticated by the cluster
CA: the client address (gRPC), the peer address (TCP frames), and the
channels this node opens to its peers (Raft, snapshots, forwarded writes),
on which it presents its own certificate.

`NodeTls` holds the files' contents. `reload()` (on SIGHUP) reads them
again; from then on new connections use them: the gRPC server asks for
them on every handshake (`grpc.dynamic_ssl_server_credentials`), the TCP
listener and dialler make each connection from the current `SSLContext`.
A reload that fails (a missing file, a key that does not match, a
certificate of another node) is logged and changes nothing.

NB: channels to peers that are already open keep the credentials they were
made with until they reconnect through a new channel (a restart); only
what is accepted and dialled over TCP uses new files at once.

Who is on the other end is read from the verified certificate
(`railyard.certs`): `peer_node_id` for a TCP connection, `identity_of` for
a gRPC call. The checks themselves (which identity may do what) are made
by the wings that know the request.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc

from railyard.certs import (
    CertError,
    Identity,
    days_left,
    describe_peercert,
    identity_of_pem,
    node_id_of_peercert,
)
from railyard.config import TlsConfig

__all__ = [
    "EXPIRY_WARNING_DAYS",
    "NodeTls",
    "TlsMaterial",
    "identity_of",
    "peer_node_id",
]

# A node warns this long before its certificate expires (and `status` shows it).
EXPIRY_WARNING_DAYS = 30
# What gRPC's auth context calls the verified client certificate.
PEM_CERT_KEY = "x509_pem_cert"


@dataclass(frozen=True)
class TlsMaterial:
    """One read of the files: the CA, this node's certificate and key (PEM)."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    generation: int


class NodeTls:
    """This node's TLS files, loaded and reloadable; see the module docstring."""

    def __init__(self, config: TlsConfig, node_id: str, log: logging.Logger) -> None:
        self.config = config
        self.node_id = node_id
        self.log = log
        # The gRPC server's fetcher runs on gRPC's own threads.
        self._lock = threading.Lock()
        self._material = self._read(generation=1)
        self._served_generation = 0
        self._contexts: dict[tuple[int, bool], ssl.SSLContext] = {}
        self._https: ssl.SSLContext | None = None

    # ------------------------------------------------------------ loading

    @property
    def material(self) -> TlsMaterial:
        with self._lock:
            return self._material

    def _read(self, generation: int) -> TlsMaterial:
        """Read and check the files; CertError naming the file otherwise."""
        ca = _read(self.config.ca_file, "CA certificate")
        cert_file = self.config.node_cert_file(self.node_id)
        key_file = self.config.node_key_file(self.node_id)
        cert, key = _read(cert_file, "certificate"), _read(key_file, "key")
        try:
            identity = identity_of_pem(cert)
        except ValueError as exc:
            raise CertError(f"{cert_file}: not a PEM certificate ({exc})") from None
        if not identity.node or identity.name != self.node_id:
            raise CertError(
                f"{cert_file}: names {identity.describe()}, not node {self.node_id}; "
                f"issue one with `railyard cert node {self.node_id} --host ...`"
            )
        try:  # the key must belong to the certificate, and both verify against the CA
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert_file, key_file)
            ctx.load_verify_locations(cadata=ca.decode())
        except (ssl.SSLError, ValueError) as exc:
            raise CertError(
                f"{cert_file}, {key_file}: cannot be used with {self.config.ca_file} ({exc})"
            ) from None
        return TlsMaterial(ca, cert, key, generation)

    def reload(self) -> bool:
        """Read the files again; True when they are now in use (new connections only)."""
        try:
            material = self._read(self.material.generation + 1)
        except (CertError, OSError) as exc:
            self.log.error("certificates not reloaded, still using the previous ones: %s", exc)
            return False
        with self._lock:
            self._material = material
            self._contexts.clear()
            if self._https is not None:
                # The HTTPS server holds this context: new handshakes get the new files.
                self._https.load_cert_chain(
                    self.config.node_cert_file(self.node_id),
                    self.config.node_key_file(self.node_id),
                )
        self.log.info(
            "certificates reloaded from %s (expires in %d days)",
            self.config.node_cert_file(self.node_id),
            self.days_left(),
        )
        return True

    def days_left(self) -> int:
        return days_left(self.material.cert_pem)

    def warn_if_expiring(self) -> None:
        left = self.days_left()
        if left < 0:
            self.log.error("certificate %s has expired", self.config.node_cert_file(self.node_id))
        elif left <= EXPIRY_WARNING_DAYS:
            self.log.warning(
                "certificate %s expires in %d days; issue a new one and send SIGHUP",
                self.config.node_cert_file(self.node_id),
                left,
            )

    # ------------------------------------------------------------ gRPC

    def server_credentials(self) -> grpc.ServerCredentials:
        """Mutual TLS for the gRPC server, asking for the current files on each handshake."""
        material = self.material
        self._served_generation = material.generation
        return grpc.dynamic_ssl_server_credentials(
            _server_configuration(material),
            # gRPC takes None for "unchanged"; its stubs do not say so.
            cast(Callable[[], grpc.ServerCertificateConfiguration], self._fetch_configuration),
            require_client_authentication=True,
        )

    def _fetch_configuration(self) -> grpc.ServerCertificateConfiguration | None:
        # Called by gRPC before each handshake: None keeps what it has.
        material = self.material
        if material.generation == self._served_generation:
            return None
        self._served_generation = material.generation
        return _server_configuration(material)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """What this node presents when it dials a peer's gRPC address: its own certificate."""
        material = self.material
        return grpc.ssl_channel_credentials(
            root_certificates=material.ca_pem,
            private_key=material.key_pem,
            certificate_chain=material.cert_pem,
        )

    # ------------------------------------------------------------ TCP

    def server_context(self) -> ssl.SSLContext:
        """For accepting a peer's TCP connection: it must show a CA-signed certificate."""
        return self._context(server=True)

    def client_context(self) -> ssl.SSLContext:
        """For dialling a peer over TCP; the caller checks the node id it presents."""
        return self._context(server=False)

    def https_context(self) -> ssl.SSLContext:
        """For the Kinesis endpoint: this node's certificate, no client certificate asked.

        Its callers prove who they are by SigV4 signatures, not certificates;
        they verify the node with the cluster CA. `reload` updates it in place.
        """
        with self._lock:
            if self._https is None:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.minimum_version = ssl.TLSVersion.TLSv1_2
                ctx.load_cert_chain(
                    self.config.node_cert_file(self.node_id),
                    self.config.node_key_file(self.node_id),
                )
                self._https = ctx
            return self._https

    def _context(self, *, server: bool) -> ssl.SSLContext:
        with self._lock:
            material = self._material
            key = (material.generation, server)
            ctx = self._contexts.get(key)
            if ctx is None:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
                ctx.minimum_version = ssl.TLSVersion.TLSv1_2
                # Identity is the node id in the certificate, not a host name:
                # a peer is reached at whatever address the file gives.
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_REQUIRED
                ctx.load_verify_locations(cadata=material.ca_pem.decode())
                ctx.load_cert_chain(
                    self.config.node_cert_file(self.node_id),
                    self.config.node_key_file(self.node_id),
                )
                self._contexts[key] = ctx
            return ctx


def _server_configuration(material: TlsMaterial) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(material.key_pem, material.cert_pem)], root_certificates=material.ca_pem
    )


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CertError(
            f"{path}: cannot read the {what} ({exc.strerror or exc}); "
            "create the cluster's certificates with `railyard cert init -c FILE`"
        ) from None


def peer_node_id(peercert: Mapping[str, Any] | None) -> tuple[str | None, str]:
    """(node id, description) of a TCP peer's verified certificate; id None if not a node's."""
    cert = dict(peercert) if peercert else None
    node_id = node_id_of_peercert(cert)
    return node_id, (f"node {node_id}" if node_id else describe_peercert(cert))


def identity_of(context: Any) -> Identity | None:
    """Who made a gRPC call, from its verified client certificate; None without TLS."""
    auth = context.auth_context()
    pems = auth.get(PEM_CERT_KEY) if auth else None
    if not pems:
        return None
    return identity_of_pem(bytes(pems[0]))
