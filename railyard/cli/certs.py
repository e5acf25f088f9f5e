"""`railyard cert init|client|node`: make a cluster's certificates.

`init` makes the CA and every certificate a cluster file needs; `client`
and `node` sign one more with that CA. Nothing is overwritten: a command
that would replace a file fails before writing anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from railyard.certs import (
    DEFAULT_CERT_DAYS,
    ROLES,
    issue_client,
    issue_node,
    load_authority,
    new_authority,
    refuse_existing,
    save,
    save_authority,
)
from railyard.cli.common import errors_end_cleanly, examples, fail
from railyard.config import ClusterConfig, load_config, split_address

# Where certificates go by default: beside the cluster file, as [tls] expects.
DEFAULT_CERT_DIR = "certs"
# The certificate `railyard cert init` makes for the CLI and `top`.
DEFAULT_CLIENT_NAME = "client"
DEFAULT_CLIENT_ROLE = "admin"

cert_app = typer.Typer(
    name="cert",
    help="Create the certificates of a TLS cluster (CA, nodes, clients).",
    no_args_is_help=True,
    rich_markup_mode=None,
)

DirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="Directory of the CA and the certificates. Default: certs/ beside the "
        "cluster file (./certs without -c).",
        show_default=False,
        file_okay=False,
    ),
]
DaysOption = Annotated[
    int,
    typer.Option("--days", min=1, help="Days the node and client certificates are valid."),
]


def _directory(directory: Path | None, config: ClusterConfig | None) -> Path:
    if directory is not None:
        return directory
    if config is not None and config.source is not None:
        return config.source.parent / DEFAULT_CERT_DIR
    return Path(DEFAULT_CERT_DIR)


def node_hosts(config: ClusterConfig, node_id: str) -> list[str]:
    """The hosts a node is dialled at (its address and peer address), for its SANs."""
    node = config.node(node_id)
    addresses = [node.address, *([node.peer_address] if node.peer_address else [])]
    return list(dict.fromkeys(split_address(a)[0] for a in addresses))


@cert_app.command(
    "init",
    epilog=examples(
        "railyard cert init -c cluster.toml",
        "railyard cert init -c cluster.toml --dir /etc/railyard/certs --days 90",
    ),
)
def init(
    config: Annotated[
        Path,
        typer.Option(
            "--config", "-c", help="Cluster file whose nodes get certificates.", dir_okay=False
        ),
    ],
    directory: DirOption = None,
    days: DaysOption = DEFAULT_CERT_DAYS,
) -> None:
    """Create a CA, a certificate for every node of the file, and an admin client's.

    Writes ca.pem/ca.key, <id>.pem/<id>.key per node (SANs from its hosts)
    and client.pem/client.key (role admin). Keys are mode 0600.
    """
    with errors_end_cleanly():
        cluster = load_config(config)
        where = _directory(directory, cluster)
        names = ["ca", *cluster.node_ids, DEFAULT_CLIENT_NAME]
        refuse_existing([where / f"{n}.{ext}" for n in names for ext in ("pem", "key")])
        authority = new_authority(cluster.name)
        written = [save_authority(where, authority)]
        for node_id in cluster.node_ids:
            issued = issue_node(authority, node_id, node_hosts(cluster, node_id), days=days)
            written.append(save(where, node_id, issued))
        client = issue_client(authority, DEFAULT_CLIENT_NAME, DEFAULT_CLIENT_ROLE, days=days)
        written.append(save(where, DEFAULT_CLIENT_NAME, client))
        for cert_path, key_path in written:
            print(f"wrote {cert_path} and {key_path}")
        if cluster.tls is None:
            print(
                f"add a [tls] table to {config} to use them (see the README, 'Securing a cluster')"
            )


@cert_app.command(
    "client",
    epilog=examples(
        "railyard cert client dashboards --role reader -c cluster.toml",
        "railyard cert client ingest --role writer --dir certs",
    ),
)
def client(
    name: Annotated[str, typer.Argument(help="Client name (file names NAME.pem, NAME.key).")],
    role: Annotated[
        str,
        typer.Option(
            "--role", help=f"What the client may do: {', '.join(ROLES)}.", show_default=False
        ),
    ],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="Cluster file (finds certs/ beside it).", dir_okay=False
        ),
    ] = None,
    directory: DirOption = None,
    days: DaysOption = DEFAULT_CERT_DAYS,
) -> None:
    """Sign a client certificate NAME.pem (and NAME.key) carrying ROLE with the cluster CA."""
    with errors_end_cleanly():
        if role not in ROLES:
            fail(f"--role: expected one of {', '.join(ROLES)} (got {role!r})")
        _check_name(name, "NAME")
        cluster = load_config(config) if config is not None else None
        where = _directory(directory, cluster)
        issued = issue_client(load_authority(where), name, role, days=days)
        cert_path, key_path = save(where, name, issued)
        print(f"wrote {cert_path} and {key_path} (role {role})")


@cert_app.command(
    "node",
    epilog=examples(
        "railyard cert node n4 --host 127.0.0.1 -c configs/tls.toml",
        "railyard cert node n4 --host 10.0.0.4 --host n4.internal --dir certs",
    ),
)
def node(
    node_id: Annotated[str, typer.Argument(metavar="ID", help="The new node's id.")],
    hosts: Annotated[
        list[str],
        typer.Option(
            "--host",
            metavar="HOST",
            help="A name or address clients and peers dial it at (repeat).",
            show_default=False,
        ),
    ],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="Cluster file (finds certs/ beside it).", dir_okay=False
        ),
    ] = None,
    directory: DirOption = None,
    days: DaysOption = DEFAULT_CERT_DAYS,
) -> None:
    """Sign a certificate for a node added later (ID.pem and ID.key)."""
    with errors_end_cleanly():
        _check_name(node_id, "ID")
        cluster = load_config(config) if config is not None else None
        where = _directory(directory, cluster)
        issued = issue_node(load_authority(where), node_id, hosts, days=days)
        cert_path, key_path = save(where, node_id, issued)
        print(f"wrote {cert_path} and {key_path}")


def _check_name(name: str, what: str) -> None:
    if not name or "/" in name or name.startswith(".") or any(c.isspace() for c in name):
        fail(f"{what}: expected a plain name usable as a file name (got {name!r})")
