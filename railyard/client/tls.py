"""What a client presents to a TLS cluster: the CA it trusts, its certificate and key.

Read from files once, when the client is made; a file that cannot be read
is a `TlsFilesError` naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from railyard.client.errors import RailyardError

__all__ = ["ClientTls", "TlsFilesError", "open_channel"]


class TlsFilesError(RailyardError):
    """A CA, certificate or key file is missing, unreadable or not PEM."""


@dataclass(frozen=True)
class ClientTls:
    """PEM bytes: the cluster CA, and the client's certificate and key (both or neither)."""

    ca_pem: bytes
    cert_pem: bytes | None = None
    key_pem: bytes | None = None

    @classmethod
    def from_files(
        cls, ca_file: Path, cert_file: Path | None = None, key_file: Path | None = None
    ) -> ClientTls:
        if (cert_file is None) != (key_file is None):
            missing = (
                "its key (--key, or --tls-key for put; RAILYARD_KEY)"
                if key_file is None
                else "its certificate (--cert; RAILYARD_CERT)"
            )
            raise TlsFilesError(f"a client certificate and its key go together: add {missing}")
        return cls(
            _read(ca_file, "CA certificate", b"CERTIFICATE"),
            _read(cert_file, "certificate", b"CERTIFICATE") if cert_file else None,
            _read(key_file, "key", b"PRIVATE KEY") if key_file else None,
        )

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem,
            private_key=self.key_pem,
            certificate_chain=self.cert_pem,
        )


def _read(path: Path, what: str, marker: bytes) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise TlsFilesError(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    if b"-----BEGIN " not in data or marker not in data:
        raise TlsFilesError(f"{path}: expected a PEM {what}")
    return data


def open_channel(
    endpoint: str,
    credentials: grpc.ChannelCredentials | None,
    options: Sequence[tuple[str, Any]],
) -> grpc.aio.Channel:
    """A channel to `endpoint`: TLS with `credentials`, plaintext without."""
    if credentials is None:
        return grpc.aio.insecure_channel(endpoint, options=options)
    return grpc.aio.secure_channel(endpoint, credentials, options=options)
