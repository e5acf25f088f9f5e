"""Cluster TOML -> validated, typed config.

A cluster file names the cluster, its timings and its nodes::

    [cluster]
    name = "local"
    data_dir = "data"             # relative to this file; node n1 uses <data_dir>/n1
    heartbeat_interval_ms = 100
    election_timeout_ms = 1000    # randomized in [t, 2t)
    snapshot_every = 10000
    auto_create_streams = true

    insecure = false              # true: may serve beyond loopback without [tls]

    [[nodes]]
    id = "n1"
    address = "127.0.0.1:50051"       # clients and the named RPCs (gRPC)
    peer_address = "127.0.0.1:51051"  # optional: Raft traffic from peers (TCP)
    metrics_address = "127.0.0.1:52051"  # optional: /metrics, /health, /ready (HTTP)
    kinesis_address = "127.0.0.1:4567"   # optional: a Kinesis-compatible endpoint (HTTP,
                                         # HTTPS with [tls])
    native_address = "127.0.0.1:53051"   # optional: single puts over framed TCP, a fraction
                                         # of a gRPC call's cost (TLS with [tls])
    listen_address = "0.0.0.0:50051"     # optional: what the node binds for `address`
    peer_listen_address = "0.0.0.0:51051"  # optional: what it binds for `peer_address`

    [tls]                                   # optional: mutual TLS everywhere
    ca_file = "certs/ca.pem"                # relative to this file
    cert_file = "certs/{id}.pem"            # {id} is the node id
    key_file = "certs/{id}.key"
    client_cert_file = "certs/client.pem"   # what the CLI and `top` present
    client_key_file = "certs/client.key"

    [limits]                       # optional: what one node (or the cluster) serves at most
    max_client_streams = 1024      # concurrent PutRecordStream + WatchStatus calls per node
    max_native_connections = 1024  # client connections to the native put port per node
    max_inflight_per_connection = 256  # puts proposed, not yet answered, per client connection
    max_get_records_bytes = 3145728    # bytes of records in one GetRecords answer (clipped)
    max_watch_subscribers = 64     # concurrent WatchStatus calls per node
    max_streams = 10000            # streams in the cluster (CreateStream and auto-create)

    [kinesis.credentials]              # optional: require SigV4 with these keys (required
                                       # with [tls] if any node has a kinesis_address)
    AKIDEXAMPLE = { secret_access_key = "...", role = "writer" }  # reader | writer | admin

``address`` and ``peer_address`` are what others dial (advertised: a
host name or an IP they can reach); ``listen_address`` and
``peer_listen_address``, when set, are what the node binds instead (e.g.
``0.0.0.0:50051`` behind NAT or in a container), as etcd's listen and
advertise URLs. Host names are resolved at each connect (gRPC's resolver,
``asyncio.open_connection`` for peer TCP), so a node that comes back on a
new IP under the same name is found again.

A node with a ``peer_address`` receives its peers' Raft messages as
length-prefixed frames over plain TCP there, which costs a fraction of a
gRPC stream message, snapshots included, and its ``address`` then serves
no Raft; a node without one receives them over gRPC (`Pipe`,
`InstallSnapshot`) on ``address``. A node with a
``metrics_address`` serves Prometheus metrics and health checks there over
HTTP; ``[cluster] metrics_max_streams`` bounds its per-stream gauges. A
node with a ``kinesis_address`` serves the Kinesis protocol there (HTTPS
with the node's certificate under ``[tls]``), answering only requests
signed by a key of ``[kinesis.credentials]`` when there are any. A node
with a ``native_address`` serves PutRecord there over railyard's own framed
TCP protocol (`node/api/native.py`), mutual TLS under ``[tls]`` with the
same roles as gRPC; clients find it in the node's Status.

A client beyond a ``[limits]`` value is refused with RESOURCE_EXHAUSTED
naming the key, and other clients go on being served. A GetRecords request
asking for more bytes than ``max_get_records_bytes`` is answered with at
most that many (plus at least one record, however large), its
``next_sequence`` saying where to go on. ``max_streams`` is checked by the
leader and again when the command is applied, against the value the leader
wrote into the command, so every replica reaches the same verdict.

Invariants of a loaded `ClusterConfig`:

- `data_dir` is absolute (a relative path is resolved against the file's
  directory; for the built-in default, which is configs/local.toml, against
  ./configs, so both put their data in ./data).
- Node ids are unique, and so are all addresses, peer, metrics, Kinesis and
  native addresses taken together; every address is ``host:port`` with a port in 1..65535; there
  is at least one node. Listen addresses are not in that set (nodes on
  different machines may all bind ``0.0.0.0:50051``), but a node's own
  addresses it binds differ from each other, and ``peer_listen_address``
  needs a ``peer_address``.
- With ``[tls]``: every path is absolute (relative ones are resolved
  against the file's directory), ``cert_file`` and ``key_file`` name each
  node's own files through ``{id}`` (no other placeholder) when there is
  more than one node, and the client's certificate and key come together.
  Whether the files exist is checked by whoever uses them: `railyard cert
  init` reads a file whose certificates do not exist yet. A node with a
  ``kinesis_address`` then needs ``[kinesis.credentials]``.
- ``2 * heartbeat_interval_ms <= election_timeout_ms``: a follower whose
  timeout is drawn from ``[t, 2t)`` then hears at least one heartbeat before
  its shortest possible timeout even when the previous one was lost, so a
  single dropped heartbeat never starts an election.

Every problem raises `ConfigError` with the message
``"<file>: <key>: <what is expected>"``. Soft problems (an even node count)
are collected in `ClusterConfig.warnings` for the caller to print.

This module reads files and nothing else: no network, no clocks.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_CLUSTER_TOML",
    "ClusterConfig",
    "ConfigError",
    "KinesisKey",
    "LimitsConfig",
    "NodeConfig",
    "TlsConfig",
    "default_config",
    "is_loopback_host",
    "load_config",
]

# Where a node with no data_dir in its file keeps its files (relative to the file).
DEFAULT_DATA_DIR = "data"
# A heartbeat every 100 ms costs little on a LAN and keeps followers well fed.
DEFAULT_HEARTBEAT_INTERVAL_MS = 100
# Ten heartbeats per election timeout, as etcd recommends.
DEFAULT_ELECTION_TIMEOUT_MS = 1000
# Snapshots every 10,000 applied entries keep restart replay short.
DEFAULT_SNAPSHOT_EVERY = 10_000
# A newcomer's `railyard put s hello` should just work.
DEFAULT_AUTO_CREATE_STREAMS = True
# Record and batch limits; the same figures as railyard.streams.Limits.
DEFAULT_MAX_RECORD_BYTES = 1 << 20
DEFAULT_MAX_BATCH_RECORDS = 500
DEFAULT_MAX_BATCH_BYTES = 5 << 20
# Per-stream gauges for the first 100 streams by name: a scrape stays small
# (two series a stream) however many streams a cluster holds.
DEFAULT_METRICS_MAX_STREAMS = 100

# [limits] defaults: generous for real clients, small enough that one client
# cannot take a node's memory or CPU. A node serves about this many producers
# and dashboards at once; each holds a call and a little state.
DEFAULT_MAX_CLIENT_STREAMS = 1024
DEFAULT_MAX_NATIVE_CONNECTIONS = 1024
# Four times the client's largest streaming window (producer.MAX_WINDOW, 64).
DEFAULT_MAX_INFLIGHT_PER_CONNECTION = 256
# Three 1 MiB records, well under gRPC's 4 MiB default a client receives.
DEFAULT_MAX_GET_RECORDS_BYTES = 3 << 20
# A dashboard per operator and a few monitors; each is one shared status.
DEFAULT_MAX_WATCH_SUBSCRIBERS = 64
# Every status lists every stream: with 20,000 of them, 50 watchers took a
# leader to 96 % CPU.
DEFAULT_MAX_STREAMS = 10_000
# A GetRecords answer must fit a gRPC message (64 MiB) with room to spare.
MAX_GET_RECORDS_BYTES_CEILING = 32 << 20

# Below 1 ms, timers in an asyncio loop stop meaning anything.
MIN_INTERVAL_MS = 1
# A heartbeat must fit at least this many times into the election timeout.
HEARTBEATS_PER_ELECTION_TIMEOUT = 2
# Node ids become directory names and log prefixes: keep them plain.
NODE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CLUSTER_NAME_PATTERN = NODE_ID_PATTERN
MAX_PORT = 65535
# The one placeholder of [tls] cert_file and key_file.
NODE_ID_PLACEHOLDER = "{id}"
BUILTIN_SOURCE = "<built-in local cluster>"
# The built-in cluster is configs/local.toml; its relative data_dir resolves
# as if the file were read from here, below the current directory.
LOCAL_CONFIG_DIR = "configs"

# The built-in cluster: exactly configs/local.toml.
DEFAULT_CLUSTER_TOML = (
    "[cluster]\n"
    'name = "local"                # nodes refuse peers from another cluster\n'
    'data_dir = "../data"          # relative to this file: the checkout\'s data/;'
    " node n1 keeps its files in data/n1\n"
    "heartbeat_interval_ms = 100\n"
    "election_timeout_ms = 1000    # randomized in [t, 2t)\n"
    "snapshot_every = 10000        # applied entries between snapshots\n"
    "auto_create_streams = true    # put into a missing stream creates it\n"
    "\n"
    "[[nodes]]\n"
    'id = "n1"\n'
    'address = "127.0.0.1:50051"\n'
    'peer_address = "127.0.0.1:51051"\n'
    'metrics_address = "127.0.0.1:52051"\n'
    'kinesis_address = "127.0.0.1:4567"\n'
    'native_address = "127.0.0.1:53051"\n'
    "[[nodes]]\n"
    'id = "n2"\n'
    'address = "127.0.0.1:50052"\n'
    'peer_address = "127.0.0.1:51052"\n'
    'metrics_address = "127.0.0.1:52052"\n'
    'kinesis_address = "127.0.0.1:4568"\n'
    'native_address = "127.0.0.1:53052"\n'
    "[[nodes]]\n"
    'id = "n3"\n'
    'address = "127.0.0.1:50053"\n'
    'peer_address = "127.0.0.1:51053"\n'
    'metrics_address = "127.0.0.1:52053"\n'
    'kinesis_address = "127.0.0.1:4569"\n'
    'native_address = "127.0.0.1:53053"\n'
)


class ConfigError(Exception):
    """A cluster file is unreadable or invalid; the message names file, key and fix."""


@dataclass(frozen=True)
class NodeConfig:
    """One member of the cluster: its id, the ``host:port`` it serves gRPC on,
    where it takes its peers' Raft messages over TCP (None: over gRPC), and
    where it serves metrics and health checks over HTTP (None: nowhere)."""

    id: str
    address: str
    peer_address: str | None = None
    metrics_address: str | None = None
    kinesis_address: str | None = None
    native_address: str | None = None
    # What the node binds, when it differs from what others dial.
    listen_address: str | None = None
    peer_listen_address: str | None = None

    @property
    def bind_address(self) -> str:
        """What the node listens on for gRPC: `listen_address`, else `address`."""
        return self.listen_address or self.address

    @property
    def peer_bind_address(self) -> str | None:
        """What it listens on for peer TCP: `peer_listen_address`, else `peer_address`."""
        return self.peer_listen_address or self.peer_address

    @property
    def host(self) -> str:
        return split_address(self.address)[0]

    @property
    def port(self) -> int:
        return split_address(self.address)[1]


KINESIS_ROLES = ("reader", "writer", "admin")


@dataclass(frozen=True)
class KinesisKey:
    """An access key the Kinesis endpoint accepts SigV4 signatures from, and its role."""

    access_key_id: str
    secret_access_key: str
    role: str


@dataclass(frozen=True)
class TlsConfig:
    """The ``[tls]`` table: the cluster CA, each node's certificate, the CLI's own.

    `cert_file` and `key_file` are absolute paths in which ``{id}`` stands
    for the node id.
    """

    ca_file: Path
    cert_file: str
    key_file: str
    client_cert_file: Path | None = None
    client_key_file: Path | None = None

    def node_cert_file(self, node_id: str) -> Path:
        return Path(self.cert_file.replace(NODE_ID_PLACEHOLDER, node_id))

    def node_key_file(self, node_id: str) -> Path:
        return Path(self.key_file.replace(NODE_ID_PLACEHOLDER, node_id))


@dataclass(frozen=True)
class LimitsConfig:
    """The ``[limits]`` table: what a node serves at once, and the cluster's streams."""

    max_client_streams: int = DEFAULT_MAX_CLIENT_STREAMS
    max_inflight_per_connection: int = DEFAULT_MAX_INFLIGHT_PER_CONNECTION
    max_get_records_bytes: int = DEFAULT_MAX_GET_RECORDS_BYTES
    max_watch_subscribers: int = DEFAULT_MAX_WATCH_SUBSCRIBERS
    max_streams: int = DEFAULT_MAX_STREAMS
    max_native_connections: int = DEFAULT_MAX_NATIVE_CONNECTIONS


@dataclass(frozen=True)
class ClusterConfig:
    """A validated cluster file (see the module docstring for the invariants)."""

    name: str
    data_dir: Path
    heartbeat_interval_ms: int
    election_timeout_ms: int
    snapshot_every: int
    auto_create_streams: bool
    nodes: tuple[NodeConfig, ...]
    source: Path | None = None
    warnings: tuple[str, ...] = ()
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    max_batch_records: int = DEFAULT_MAX_BATCH_RECORDS
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    tls: TlsConfig | None = None
    insecure: bool = False

    def exposed_addresses(self, node_id: str) -> list[str]:
        """Node `node_id`'s addresses, advertised or bound, that are not loopback
        (reachable from elsewhere: binding 0.0.0.0 serves every interface)."""
        node = self.node(node_id)
        addresses = [
            node.address,
            *([node.peer_address] if node.peer_address else []),
            *([node.kinesis_address] if node.kinesis_address else []),
            *([node.native_address] if node.native_address else []),
            *([node.listen_address] if node.listen_address else []),
            *([node.peer_listen_address] if node.peer_listen_address else []),
        ]
        return [a for a in addresses if not is_loopback_host(split_address(a)[0])]

    def plaintext_refusal(self, node_id: str) -> str | None:
        """Why node `node_id` must not start as the file stands (None: it may).

        The safe default: no plaintext beyond loopback unless the file says
        insecure = true.
        """
        exposed = self.exposed_addresses(node_id)
        if self.tls is not None or not exposed or self.insecure:
            return None
        return (
            f"cannot start: {', '.join(exposed)} "
            f"{'is not a loopback address' if len(exposed) == 1 else 'are not loopback addresses'}"
            f" and {self.source_name} has no [tls] table: anyone who reaches it could read and "
            "write; secure the cluster (`railyard cert init -c FILE`, README 'Securing a "
            "cluster') or set insecure = true in [cluster]"
        )

    metrics_max_streams: int = DEFAULT_METRICS_MAX_STREAMS
    # Empty: the Kinesis endpoints serve every request without checking signatures.
    kinesis_credentials: tuple[KinesisKey, ...] = ()
    limits: LimitsConfig = LimitsConfig()

    @property
    def node_ids(self) -> tuple[str, ...]:
        return tuple(n.id for n in self.nodes)

    @property
    def endpoints(self) -> list[str]:
        return [n.address for n in self.nodes]

    def node(self, node_id: str) -> NodeConfig:
        """The node named `node_id`; ConfigError naming the file's ids otherwise."""
        for n in self.nodes:
            if n.id == node_id:
                return n
        ids = ", ".join(self.node_ids)
        raise ConfigError(
            f"{self.source_name}: nodes: no node with id {node_id!r}; this file has: {ids}"
        )

    def node_data_dir(self, node_id: str) -> Path:
        """Where node `node_id` keeps its files: ``<data_dir>/<id>``."""
        return self.data_dir / self.node(node_id).id

    @property
    def source_name(self) -> str:
        return str(self.source) if self.source is not None else BUILTIN_SOURCE


def load_config(path: Path) -> ClusterConfig:
    """Read and validate the cluster file at `path`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: file not found; pass an existing cluster file with -c FILE"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the file ({e})") from None
    absolute = path.resolve()
    return parse_config(text, source=absolute, base_dir=absolute.parent)


def default_config() -> ClusterConfig:
    """The built-in local 3-node cluster: configs/local.toml as read from ./configs.

    So from a checkout's top directory, `railyard node start` and
    `railyard node start -c configs/local.toml` are one cluster with one
    data location, ./data (a node started the other way finds its data).
    """
    return parse_config(DEFAULT_CLUSTER_TOML, source=None, base_dir=Path.cwd() / LOCAL_CONFIG_DIR)


def parse_config(text: str, *, source: Path | None, base_dir: Path) -> ClusterConfig:
    """Validate TOML `text`; relative data_dir is resolved against `base_dir`."""
    where = str(source) if source is not None else BUILTIN_SOURCE
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: not valid TOML ({e})") from None
    return _Validator(where, base_dir).cluster_config(doc, source)


@dataclass
class _Validator:
    """Checks one parsed document, producing messages that name `where`."""

    where: str
    base_dir: Path
    warnings: list[str] = field(default_factory=list)

    def fail(self, key: str, expected: str) -> ConfigError:
        return ConfigError(f"{self.where}: {key}: {expected}")

    def cluster_config(self, doc: Mapping[str, Any], source: Path | None) -> ClusterConfig:
        self.reject_unknown(doc, "", {"cluster", "nodes", "tls", "kinesis", "limits"})
        cluster = doc.get("cluster", {})
        if not isinstance(cluster, dict):
            raise self.fail("cluster", "expected a [cluster] table")
        self.reject_unknown(cluster, "cluster.", _CLUSTER_KEYS)
        name = self.string(cluster, "cluster.name", "local")
        if not CLUSTER_NAME_PATTERN.match(name):
            raise self.fail(
                "cluster.name", f"expected letters, digits, '_', '.', '-' (got {name!r})"
            )
        data_dir = Path(self.string(cluster, "cluster.data_dir", DEFAULT_DATA_DIR))
        if not str(data_dir):
            raise self.fail("cluster.data_dir", "expected a non-empty path")
        heartbeat = self.integer(
            cluster, "cluster.heartbeat_interval_ms", DEFAULT_HEARTBEAT_INTERVAL_MS, MIN_INTERVAL_MS
        )
        election = self.integer(
            cluster, "cluster.election_timeout_ms", DEFAULT_ELECTION_TIMEOUT_MS, MIN_INTERVAL_MS
        )
        if heartbeat * HEARTBEATS_PER_ELECTION_TIMEOUT > election:
            raise self.fail(
                "cluster.heartbeat_interval_ms",
                f"expected at most half of election_timeout_ms ({election} ms), so a lost "
                f"heartbeat does not start an election (got {heartbeat} ms)",
            )
        nodes = self.nodes(doc.get("nodes"))
        tls = self.tls(doc["tls"], len(nodes)) if "tls" in doc else None
        credentials = self.kinesis_credentials(doc.get("kinesis", {}))
        if tls is not None and not credentials:
            serving = [n.id for n in nodes if n.kinesis_address is not None]
            if serving:
                # Without keys the endpoint would serve anyone, around the
                # certificates' roles.
                raise self.fail(
                    "kinesis.credentials",
                    "expected at least one access key: with [tls] the Kinesis endpoint of "
                    f"{', '.join(serving)} accepts only SigV4-signed requests",
                )
        return ClusterConfig(
            name=name,
            data_dir=(self.base_dir / data_dir).resolve(),
            heartbeat_interval_ms=heartbeat,
            election_timeout_ms=election,
            snapshot_every=self.integer(
                cluster, "cluster.snapshot_every", DEFAULT_SNAPSHOT_EVERY, 1
            ),
            auto_create_streams=self.boolean(
                cluster, "cluster.auto_create_streams", DEFAULT_AUTO_CREATE_STREAMS
            ),
            nodes=nodes,
            source=source,
            warnings=tuple(self.warnings),
            max_record_bytes=self.integer(
                cluster, "cluster.max_record_bytes", DEFAULT_MAX_RECORD_BYTES, 1
            ),
            max_batch_records=self.integer(
                cluster, "cluster.max_batch_records", DEFAULT_MAX_BATCH_RECORDS, 1
            ),
            max_batch_bytes=self.integer(
                cluster, "cluster.max_batch_bytes", DEFAULT_MAX_BATCH_BYTES, 1
            ),
            tls=tls,
            insecure=self.boolean(cluster, "cluster.insecure", False),
            metrics_max_streams=self.integer(
                cluster, "cluster.metrics_max_streams", DEFAULT_METRICS_MAX_STREAMS, 0
            ),
            kinesis_credentials=credentials,
            limits=self.limits(doc.get("limits", {})),
        )

    def limits(self, table: object) -> LimitsConfig:
        if not isinstance(table, dict):
            raise self.fail("limits", "expected a [limits] table")
        self.reject_unknown(table, "limits.", _LIMITS_KEYS)
        read_bytes = self.integer(
            table, "limits.max_get_records_bytes", DEFAULT_MAX_GET_RECORDS_BYTES, 1
        )
        if read_bytes > MAX_GET_RECORDS_BYTES_CEILING:
            raise self.fail(
                "limits.max_get_records_bytes",
                f"expected at most {MAX_GET_RECORDS_BYTES_CEILING} bytes, so an answer fits "
                f"a gRPC message (got {read_bytes})",
            )
        return LimitsConfig(
            max_client_streams=self.integer(
                table, "limits.max_client_streams", DEFAULT_MAX_CLIENT_STREAMS, 1
            ),
            max_native_connections=self.integer(
                table, "limits.max_native_connections", DEFAULT_MAX_NATIVE_CONNECTIONS, 1
            ),
            max_inflight_per_connection=self.integer(
                table,
                "limits.max_inflight_per_connection",
                DEFAULT_MAX_INFLIGHT_PER_CONNECTION,
                1,
            ),
            max_get_records_bytes=read_bytes,
            max_watch_subscribers=self.integer(
                table, "limits.max_watch_subscribers", DEFAULT_MAX_WATCH_SUBSCRIBERS, 1
            ),
            max_streams=self.integer(table, "limits.max_streams", DEFAULT_MAX_STREAMS, 1),
        )

    def tls(self, table: object, node_count: int) -> TlsConfig:
        if not isinstance(table, dict):
            raise self.fail("tls", "expected a [tls] table")
        self.reject_unknown(table, "tls.", _TLS_KEYS)
        paths: dict[str, str] = {}
        for key in ("ca_file", "cert_file", "key_file", "client_cert_file", "client_key_file"):
            if key not in table and key.startswith("client_"):
                continue
            text = self.string(table, f"tls.{key}", None)
            if not text:
                raise self.fail(f"tls.{key}", "expected a non-empty path")
            paths[key] = str(self.base_dir / text)
        for key in ("cert_file", "key_file"):
            raw = str(table[key])
            rest = raw.replace(NODE_ID_PLACEHOLDER, "")
            if "{" in rest or "}" in rest:
                raise self.fail(
                    f"tls.{key}", f"expected {{id}} as the only placeholder (got {raw!r})"
                )
            if node_count > 1 and NODE_ID_PLACEHOLDER not in raw:
                raise self.fail(
                    f"tls.{key}",
                    f"expected {{id}} in the path, so each node has its own (got {table[key]!r})",
                )
        if ("client_cert_file" in paths) != ("client_key_file" in paths):
            raise self.fail(
                "tls.client_key_file" if "client_cert_file" in paths else "tls.client_cert_file",
                "expected client_cert_file and client_key_file together",
            )
        client_cert = paths.get("client_cert_file")
        client_key = paths.get("client_key_file")
        return TlsConfig(
            ca_file=Path(paths["ca_file"]),
            cert_file=paths["cert_file"],
            key_file=paths["key_file"],
            client_cert_file=Path(client_cert) if client_cert else None,
            client_key_file=Path(client_key) if client_key else None,
        )

    def kinesis_credentials(self, kinesis: object) -> tuple[KinesisKey, ...]:
        if not isinstance(kinesis, dict):
            raise self.fail("kinesis", "expected a [kinesis] table")
        self.reject_unknown(kinesis, "kinesis.", {"credentials"})
        credentials = kinesis.get("credentials", {})
        if not isinstance(credentials, dict):
            raise self.fail("kinesis.credentials", "expected a [kinesis.credentials] table")
        keys = []
        for key_id, entry in credentials.items():
            key = f"kinesis.credentials.{key_id}"
            if not isinstance(entry, dict):
                raise self.fail(
                    key, 'expected { secret_access_key = "...", role = "reader|writer|admin" }'
                )
            self.reject_unknown(entry, f"{key}.", {"secret_access_key", "role"})
            secret = self.string(entry, f"{key}.secret_access_key", None)
            if not secret:
                raise self.fail(f"{key}.secret_access_key", "expected a non-empty string")
            role = self.string(entry, f"{key}.role", None)
            if role not in KINESIS_ROLES:
                raise self.fail(
                    f"{key}.role", f"expected one of {', '.join(KINESIS_ROLES)} (got {role!r})"
                )
            keys.append(KinesisKey(key_id, secret, role))
        return tuple(keys)

    def nodes(self, raw: object) -> tuple[NodeConfig, ...]:
        if raw is None or raw == []:
            raise self.fail(
                "nodes", 'expected at least one [[nodes]] table with id and address = "host:port"'
            )
        if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
            raise self.fail("nodes", "expected [[nodes]] tables (an array of tables)")
        nodes: list[NodeConfig] = []
        ids: set[str] = set()
        addresses: dict[tuple[str, int], str] = {}
        for i, table in enumerate(raw):
            key = f"nodes[{i}]"
            self.reject_unknown(
                table,
                f"{key}.",
                {
                    "id",
                    "address",
                    "peer_address",
                    "metrics_address",
                    "kinesis_address",
                    "native_address",
                    "listen_address",
                    "peer_listen_address",
                },
            )
            node_id = self.string(table, f"{key}.id", None)
            if not NODE_ID_PATTERN.match(node_id):
                raise self.fail(
                    f"{key}.id",
                    f"expected 1-64 letters, digits, '_', '.', '-' (got {node_id!r})",
                )
            if node_id in ids:
                raise self.fail(f"{key}.id", f"duplicate node id {node_id!r}; ids must be unique")
            address = self.address(table, f"{key}.address", addresses, node_id)
            peer_address = (
                self.address(table, f"{key}.peer_address", addresses, node_id)
                if "peer_address" in table
                else None
            )
            metrics_address = (
                self.address(table, f"{key}.metrics_address", addresses, node_id)
                if "metrics_address" in table
                else None
            )
            kinesis_address = (
                self.address(table, f"{key}.kinesis_address", addresses, node_id)
                if "kinesis_address" in table
                else None
            )
            native_address = (
                self.address(table, f"{key}.native_address", addresses, node_id)
                if "native_address" in table
                else None
            )
            listen_address, peer_listen_address = self.listen_addresses(
                table,
                key,
                address,
                peer_address,
                {
                    "metrics_address": metrics_address,
                    "kinesis_address": kinesis_address,
                    "native_address": native_address,
                },
            )
            ids.add(node_id)
            nodes.append(
                NodeConfig(
                    id=node_id,
                    address=address,
                    peer_address=peer_address,
                    metrics_address=metrics_address,
                    kinesis_address=kinesis_address,
                    native_address=native_address,
                    listen_address=listen_address,
                    peer_listen_address=peer_listen_address,
                )
            )
        if len(nodes) % 2 == 0:
            self.warnings.append(
                f"{self.where}: nodes: {len(nodes)} nodes tolerate no more failures than "
                f"{len(nodes) - 1}; an odd number of nodes is recommended"
            )
        return tuple(nodes)

    def listen_addresses(
        self,
        table: Mapping[str, Any],
        key: str,
        address: str,
        peer_address: str | None,
        others: Mapping[str, str | None],
    ) -> tuple[str | None, str | None]:
        """The node's listen_address and peer_listen_address (None where not set).

        Only one node's own binds are compared: nodes on other machines may
        all listen on ``0.0.0.0:50051``. `others` are its other bound
        addresses by key (metrics, Kinesis).
        """
        listen = self.optional_address(table, f"{key}.listen_address")
        peer_listen = self.optional_address(table, f"{key}.peer_listen_address")
        if peer_listen is not None and peer_address is None:
            raise self.fail(
                f"{key}.peer_listen_address",
                "expected only beside a peer_address (the address peers dial)",
            )
        binds = {
            "listen_address" if listen else "address": listen or address,
            "peer_listen_address" if peer_listen else "peer_address": peer_listen or peer_address,
            **others,
        }
        seen: dict[tuple[str, int], str] = {}
        for name, bound in binds.items():
            if bound is None:
                continue
            host_port = split_address(bound)
            if host_port in seen:
                # The advertised ones are unique already: one of the two is a listen address.
                blamed = name if "listen" in name else seen[host_port]
                other = seen[host_port] if blamed == name else name
                raise self.fail(
                    f"{key}.{blamed}",
                    f"{bound!r} is also what this node binds for {other}; "
                    "each needs its own host:port",
                )
            seen[host_port] = name
        return listen, peer_listen

    def optional_address(self, table: Mapping[str, Any], key: str) -> str | None:
        """A ``host:port`` at `key` if the table has it, else None."""
        if key.rsplit(".", 1)[-1] not in table:
            return None
        address = self.string(table, key, None)
        try:
            split_address(address)
        except ValueError as e:
            raise self.fail(key, str(e)) from None
        return address

    def address(
        self, table: Mapping[str, Any], key: str, taken: dict[tuple[str, int], str], node_id: str
    ) -> str:
        """A ``host:port`` that no other address of the file uses (recorded in `taken`)."""
        address = self.string(table, key, None)
        try:
            host_port = split_address(address)
        except ValueError as e:
            raise self.fail(key, str(e)) from None
        if host_port in taken:
            raise self.fail(
                key,
                f"duplicate address {address!r} (also used by node {taken[host_port]!r}); "
                "each address, peer_address, metrics_address, kinesis_address and "
                "native_address needs its own host:port",
            )
        taken[host_port] = node_id
        return address

    def reject_unknown(self, table: Mapping[str, Any], prefix: str, known: set[str]) -> None:
        for key in table:
            if key not in known:
                expected = ", ".join(sorted(known))
                raise self.fail(f"{prefix}{key}", f"unknown key; expected one of: {expected}")

    def string(self, table: Mapping[str, Any], key: str, default: str | None) -> str:
        value = table.get(key.rsplit(".", 1)[-1], default)
        if value is None:
            raise self.fail(key, "missing; expected a string")
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string (got {value!r})")
        return value

    def integer(self, table: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
        value = table.get(key.rsplit(".", 1)[-1], default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected an integer (got {value!r})")
        if value < minimum:
            raise self.fail(key, f"expected an integer >= {minimum} (got {value})")
        return value

    def boolean(self, table: Mapping[str, Any], key: str, default: bool) -> bool:
        value = table.get(key.rsplit(".", 1)[-1], default)
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false (got {value!r})")
        return value


_CLUSTER_KEYS = {
    "name",
    "data_dir",
    "heartbeat_interval_ms",
    "election_timeout_ms",
    "snapshot_every",
    "auto_create_streams",
    "max_record_bytes",
    "max_batch_records",
    "max_batch_bytes",
    "insecure",
    "metrics_max_streams",
}
_LIMITS_KEYS = {
    "max_client_streams",
    "max_native_connections",
    "max_inflight_per_connection",
    "max_get_records_bytes",
    "max_watch_subscribers",
    "max_streams",
}
_TLS_KEYS = {"ca_file", "cert_file", "key_file", "client_cert_file", "client_key_file"}


def is_loopback_host(host: str) -> bool:
    """Whether `host` (a name or an address, ``[v6]`` allowed) is this machine only."""
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6]:port"``) -> (host, port); ValueError says what is expected."""
    expected = f'expected "host:port" with a port in 1..{MAX_PORT} (got {address!r})'
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(expected)
    if host.startswith("["):
        if not host.endswith("]") or len(host) < 3:
            raise ValueError(expected)
    elif ":" in host or any(c.isspace() for c in host) or "/" in host:
        raise ValueError(expected)
    port = int(port_text)
    if not 1 <= port <= MAX_PORT:
        raise ValueError(expected)
    return host, port
