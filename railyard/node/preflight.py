"""Checks before a node opens anything: what it may serve, and where it can listen.

Both run before the data directory is opened (or created), so a node that
must not or cannot start stops with one line and leaves nothing behind.
"""

from __future__ import annotations

import errno
import logging
import socket

from railyard.config import ClusterConfig, NodeConfig, split_address


def refuse_plaintext(config: ClusterConfig, node_id: str, log: logging.Logger) -> bool:
    """The safe default: no plaintext beyond loopback unless the file says insecure = true.

    True when the node must not start (logged); warns when it starts insecure.
    """
    refusal = config.plaintext_refusal(node_id)
    if refusal is not None:
        log.error("%s", refusal)
        return True
    if config.tls is not None:
        return False
    exposed = config.exposed_addresses(node_id)
    if config.insecure:
        log.warning(
            "INSECURE: serving without TLS (insecure = true in %s): anyone who reaches %s can "
            "read, write and impersonate nodes",
            config.source_name,
            ", ".join(exposed) or "this node's addresses",
        )
    return False


def port_taken(address: str) -> OSError | None:
    """Why `address` cannot be listened on now (None: it can), found by binding it.

    Checked before anything else, so a node that cannot listen stops with one
    line (no gRPC error log of its own) and creates no data directory.
    """
    host, port = split_address(address)
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As a listening server does: a port in TIME_WAIT is free to use.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc
    return None


def ports_free(me: NodeConfig, log: logging.Logger) -> bool:
    """False, after one line naming the address, when the node cannot listen on one."""
    for where, address in (
        ("", me.bind_address),
        ("peer_address ", me.peer_bind_address),
        ("native_address ", me.native_address),
    ):
        taken = None if address is None else port_taken(address)
        if taken is not None:
            hint = "; is the port in use?" if taken.errno == errno.EADDRINUSE else ""
            log.error("cannot listen on %s%s (%s)%s", where, address, taken.strerror or taken, hint)
            return False
    return True
