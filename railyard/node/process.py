"""One node process: open the data directory, build the core, serve gRPC.

`run_node` is the whole life of a node in the foreground:

1. open and reconcile the data directory and build the Raft core from it
   (`recovery.py`);
2. serve Raft, Streams, Cluster, health and reflection on the node's
   address, /metrics, /health and /ready on its `metrics_address` (if it
   has one; `monitoring.py`), the Kinesis protocol on its `kinesis_address`
   (if it has one, on the same loop), and run the driver, the peer links and
   the ticker in one TaskGroup;
3. with ``[tls]`` in the file, serve every address over mutual TLS,
   authorize each client call by its certificate's role
   (`api/authorization.py`) and reload the certificate files on SIGHUP; a
   node that would serve a non-loopback address in plaintext refuses to
   start unless the file says ``insecure = true``; the Kinesis endpoint
   then speaks HTTPS with the node's certificate (its callers sign with
   `[kinesis.credentials]` keys instead of presenting certificates);
4. on SIGTERM/SIGINT stop accepting calls, let the write in progress
   finish, close the stores, release the lock and return 0. A storage error
   stops the node with a non-zero exit code instead, logging one line per
   failure with its cause (which names the file); a data directory that
   cannot be used at start-up is one "cannot start: <file>: ..." line.

Every log line names the node ("n1 became leader term=3"); with
`log_format="json"` each is a JSON object (`observability/logs.py`).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
from typing import cast

import grpc
from aiohttp import web
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from railyard.certs import CertError
from railyard.config import ClusterConfig, ConfigError, NodeConfig, split_address
from railyard.node.api.authorization import AuthorizationInterceptor
from railyard.node.api.cluster_service import WATCH_STATUS_METHOD, ClusterService
from railyard.node.api.context import NodeContext
from railyard.node.api.decoding import TolerantRegistration
from railyard.node.api.kinesis_backend import start_kinesis_endpoint
from railyard.node.api.streams_service import StreamsService
from railyard.node.driver import Driver, FatalError
from railyard.node.driver.catch_up import (
    CATCH_UP_POLL_S,
    clear_when_caught_up,
)
from railyard.node.grpc_options import SERVER_OPTIONS
from railyard.node.monitoring import Monitor
from railyard.node.observability import (
    MetricsEndpoint,
    NodeMetrics,
    configure_logging,
    event,
)
from railyard.node.observability.grpc_metrics import GrpcMetricsInterceptor
from railyard.node.peers import tcp
from railyard.node.peers.inbound import RaftService
from railyard.node.peers.links import PeerLink, Transport
from railyard.node.peers.tcp import PeerListener
from railyard.node.recovery import LOG_FILE, STATE_FILE, LogBehindState, limits_of, open_state
from railyard.node.security import NodeTls
from railyard.proto import railyard_pb2 as pb
from railyard.proto import railyard_pb2_grpc as pb_grpc
from railyard.raft import (
    Index,
    Member,
    Membership,
    NodeId,
    RaftError,
)
from railyard.storage import StorageError
from railyard.streams import StreamsError

# Causes quoted in a fatal error's line (each names what failed).
MAX_CAUSES = 4
# A certificate's expiry is looked at this often (it warns within 30 days).
EXPIRY_CHECK_INTERVAL_S = 24 * 3600
# In-flight calls get this long to finish when the node stops.
STOP_GRACE_S = 0.5
EXIT_OK = 0
EXIT_FAILED = 1


async def _watch_expiry(tls: NodeTls) -> None:
    """Warn, once a day, while the certificate is within EXPIRY_WARNING_DAYS of expiring."""
    while True:
        tls.warn_if_expiring()
        await asyncio.sleep(EXPIRY_CHECK_INTERVAL_S)


def refuse_plaintext(config: ClusterConfig, node_id: str, log: logging.Logger) -> bool:
    """The safe default: no plaintext beyond loopback unless the file says insecure = true.

    True when the node must not start (logged); warns when it starts insecure.
    """
    if config.tls is not None:
        return False
    exposed = config.exposed_addresses(node_id)
    if exposed and not config.insecure:
        log.error(
            "cannot start: %s %s and %s has no [tls] table: anyone "
            "who reaches it could read and write; secure the cluster (`railyard cert init -c "
            "FILE`, README 'Securing a cluster') or set insecure = true in [cluster]",
            ", ".join(exposed),
            "is not a loopback address" if len(exposed) == 1 else "are not loopback addresses",
            config.source_name,
        )
        return True
    if config.insecure:
        log.warning(
            "INSECURE: serving without TLS (insecure = true in %s): anyone who reaches %s can "
            "read, write and impersonate nodes",
            config.source_name,
            ", ".join(exposed) or "this node's addresses",
        )
    return False


def member_addresses(
    members: tuple[Member, ...], config: ClusterConfig
) -> dict[NodeId, tuple[str, str | None]]:
    """Where to reach each member: the addresses its configuration holds, else
    (a configuration known by ids only, from an old store) the cluster file's."""
    out: dict[NodeId, tuple[str, str | None]] = {}
    for member in members:
        if member.address:
            out[member.node_id] = (member.address, member.peer_address or None)
            continue
        try:
            node = config.node(member.node_id)
        except ConfigError:
            out[member.node_id] = ("", None)
            continue
        out[member.node_id] = (node.address, node.peer_address)
    return out


def describe_membership(membership: Membership) -> str:
    voters = ", ".join(membership.voter_ids) or "none"
    learners = ", ".join(membership.learner_ids)
    return f"{voters}" + (f"; learners {learners}" if learners else "")


def note_file_differs(
    config: ClusterConfig, membership: Membership, index: Index, log: logging.Logger
) -> None:
    """One line when the store's configuration, which wins, is not the file's list."""
    if index == 0 or not membership.voters:
        return
    in_file = sorted(config.node_ids)
    if sorted(membership.voter_ids + membership.learner_ids) != in_file:
        log.info(
            "the store's configuration (index %d: %s) is in force; %s lists %s",
            index,
            describe_membership(membership),
            config.source_name,
            ", ".join(in_file),
        )


class _Stop(Exception):
    """Raised inside the TaskGroup to end every task on a signal."""


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
    for where, address in (("", me.bind_address), ("peer_address ", me.peer_bind_address)):
        taken = None if address is None else port_taken(address)
        if taken is not None:
            hint = "; is the port in use?" if taken.errno == errno.EADDRINUSE else ""
            log.error("cannot listen on %s%s (%s)%s", where, address, taken.strerror or taken, hint)
            return False
    return True


async def serve(
    config: ClusterConfig,
    node_id: NodeId,
    log: logging.Logger,
    tls: NodeTls | None = None,
    *,
    join: bool = False,
) -> int:
    me = config.node(node_id)
    # Before a data directory is created for a node that could not start; an
    # existing one is locked first, so a second node on it is told whose it is.
    if not config.node_data_dir(node_id).exists() and not ports_free(me, log):
        return EXIT_FAILED
    state = await asyncio.to_thread(lambda: open_state(config, node_id, log, join=join))
    if not ports_free(me, log):
        state.close()
        return EXIT_FAILED
    core_status = state.core.status()
    note_file_differs(config, core_status.membership, core_status.membership_index, log)
    local = pb.Peer(
        cluster=config.name,
        node_id=node_id,
        address=me.address,
        peer_address=me.peer_address or "",
    )
    initial = core_status.membership
    metrics = NodeMetrics(
        peers=[p for p in initial.voter_ids + initial.learner_ids if p != node_id],
        enabled=me.metrics_address is not None,
        data_dir=config.node_data_dir(node_id),
        log_file=LOG_FILE,
        state_file=STATE_FILE,
        max_streams=config.metrics_max_streams,
        node_id=node_id,
        cluster=config.name,
    )

    # The links report to the driver built next (they call back only once
    # running), and the driver sends through the links.
    def make_link(peer_id: NodeId, address: str, peer_address: str | None) -> PeerLink:
        metrics.add_peer(peer_id)
        return PeerLink(
            local=local,
            peer_id=peer_id,
            address=address,
            snapshots=state.snapshots,
            on_unreachable=lambda p: driver.post(lambda: driver.core.report_unreachable(p)),
            on_snapshot_done=lambda p, ok: driver.post(lambda: driver.core.report_snapshot(p, ok)),
            log=log,
            on_refused=lambda p: driver.post(lambda: driver.leader_refuses_connections(p)),
            peer_address=peer_address,
            tls=tls,
            metrics=metrics,
        )

    transport = Transport([], make_link)
    driver = Driver(
        node_id=node_id,
        core=state.core,
        log_store=state.log_store,
        snapshots=state.snapshots,
        machine=state.machine,
        outbox=transport,
        snapshot_every=config.snapshot_every,
        election_ticks=state.core_config.election_ticks,
        applied=Index(state.machine.last_applied),
        applied_term=state.applied_term,
        snapshot_index=state.snapshot_index,
        log=log,
        data_dir=config.node_data_dir(node_id),
        metrics=metrics,
    )
    addresses: dict[str, str] = {n.id: n.address for n in config.nodes}
    node = NodeContext(
        cluster=config.name,
        node_id=node_id,
        address=me.address,
        addresses=addresses,
        driver=driver,
        limits=limits_of(config),
        auto_create_streams=config.auto_create_streams,
        heartbeat_interval_ms=config.heartbeat_interval_ms,
        election_timeout_ms=config.election_timeout_ms,
        tls=tls,
        insecure=tls is None and config.insecure,
        resource_limits=config.limits,
    )
    raft_service = RaftService(
        cluster=config.name,
        node_id=node_id,
        peers=[],
        driver=driver,
        snapshots=state.snapshots,
        log=log,
        last_heard=node.last_heard,
        on_pipe_ended=lambda p: transport.links[p].probe() if p in transport.links else None,
        tls=tls is not None,
        metrics=metrics,
    )
    streams_service = StreamsService(node)
    cluster_service = ClusterService(node, streams_service.forwarder)
    interceptors: list[grpc.aio.ServerInterceptor] = []  # type: ignore[type-arg]
    authorization = None if tls is None else AuthorizationInterceptor(config.node_ids, log)
    if authorization is not None:
        interceptors.append(authorization)
    if metrics.registry is not None:
        interceptors.append(GrpcMetricsInterceptor(metrics))

    logged: dict[str, Membership] = {}
    senders: dict[NodeId, Member] = {}

    def on_new_sender(sender: pb.Peer) -> None:
        if not sender.address or driver.core.membership.voters:
            return
        senders[NodeId(sender.node_id)] = Member(
            NodeId(sender.node_id), sender.address, sender.peer_address
        )
        apply_membership(driver.core.membership)

    raft_service.on_new_sender = on_new_sender

    def apply_membership(membership: Membership) -> None:
        """Link, accept and authorize the members of `membership` (the latest
        configuration) and of the committed one.

        A removed member stays linked and accepted until its removal commits:
        a leader that removes itself needs the others' acknowledgements, and
        the leader replicates the removing entry to the member it removes.
        """
        committed = driver.core.committed_membership()[1]
        members = tuple(
            {
                m.node_id: m
                for m in committed.voters
                + committed.learners
                + membership.voters
                + membership.learners
            }.values()
        )
        joining = not membership.voters
        if joining:
            # No configuration yet: the leader that adds this node must be
            # answered before its configuration arrives; the file says where,
            # or the leader's envelopes do (`on_new_sender`).
            members = tuple(Member(NodeId(n.id)) for n in config.nodes) + tuple(senders.values())
        known = {
            p: (link.address, link.peer_address)
            for p, link in transport.links.items()
            if p in driver.core.peers
        }
        wanted = {**known, **member_addresses(members, config)}
        wanted.pop(node_id, None)
        transport.set_members(wanted)
        addresses.update({p: address for p, (address, _) in wanted.items()})
        raft_service.set_members(list(wanted), joining)
        if authorization is not None:
            authorization.members = frozenset([node_id, *wanted])
            authorization.any_node = joining
        if membership == logged.get("membership"):
            return  # only the commit changed
        logged["membership"] = membership
        log.info(
            "members %s%s",
            describe_membership(membership),
            " (joining: waiting for a leader to add this node)" if joining else "",
            # `learners` only when there are some: the event's shape is unchanged
            # for a cluster that never had any.
            extra=event(
                "membership",
                voters=list(membership.voter_ids),
                **({"learners": list(membership.learner_ids)} if membership.learners else {}),
            ),
        )

    driver.on_membership = apply_membership
    apply_membership(initial)
    server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=interceptors)
    # With a peer_address, peers' Raft traffic (snapshots too) arrives there
    # only: the client address does not serve the Raft service (UNIMPLEMENTED),
    # so a client's port is no way into the log (issue 14).
    served = (
        ("Streams", "Cluster") if me.peer_address is not None else ("Raft", "Streams", "Cluster")
    )
    # Malformed requests are INVALID_ARGUMENT, not UNKNOWN or a hang (decoding.py).
    tolerant = cast(grpc.aio.Server, TolerantRegistration(server, [WATCH_STATUS_METHOD]))
    if me.peer_address is None:
        pb_grpc.add_RaftServicer_to_server(raft_service, tolerant)
    pb_grpc.add_StreamsServicer_to_server(streams_service, tolerant)
    pb_grpc.add_ClusterServicer_to_server(cluster_service, tolerant)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    service_names = [pb.DESCRIPTOR.services_by_name[name].full_name for name in served]
    reflection.enable_server_reflection(
        [
            *service_names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    listener = (
        None
        if me.peer_bind_address is None
        else PeerListener(
            address=me.peer_bind_address,
            sink=raft_service,
            log=log,
            tls=tls.server_context if tls is not None else None,
            on_received=raft_service.received if metrics.enabled else None,
            max_connections=tcp.CONNECTIONS_PER_MEMBER * len(config.nodes) + tcp.SPARE_CONNECTIONS,
        )
    )
    monitor = Monitor(node, asyncio.get_running_loop())
    metrics.sampler = monitor.sample
    endpoint = (
        None
        if metrics.registry is None or me.metrics_address is None
        else MetricsEndpoint(
            me.metrics_address,
            metrics.registry,
            health=monitor.health,
            ready=monitor.ready,
            log=log,
        )
    )
    exit_code = EXIT_OK
    kinesis: web.AppRunner | None = None
    try:
        try:
            if tls is None:
                server.add_insecure_port(me.bind_address)
            else:
                server.add_secure_port(me.bind_address, tls.server_credentials())
        except RuntimeError as exc:
            log.error("cannot listen on %s (%s); is the port in use?", me.bind_address, exc)
            return EXIT_FAILED
        if listener is not None:
            try:
                await listener.start()
            except OSError as exc:
                hint = "; is the port in use?" if exc.errno == errno.EADDRINUSE else ""
                log.error(
                    "cannot listen on peer_address %s (%s)%s",
                    me.peer_bind_address,
                    exc.strerror or exc,
                    hint,
                )
                return EXIT_FAILED
        if endpoint is not None:
            try:
                endpoint.start()
            except OSError as exc:
                hint = "; is the port in use?" if exc.errno == errno.EADDRINUSE else ""
                log.error(
                    "cannot listen on metrics_address %s (%s)%s",
                    me.metrics_address,
                    exc.strerror or exc,
                    hint,
                )
                return EXIT_FAILED
        await server.start()
        if me.kinesis_address is not None:
            try:
                kinesis = await start_kinesis_endpoint(
                    me.kinesis_address,
                    node,
                    streams_service,
                    config.kinesis_credentials,
                    tls.https_context() if tls is not None else None,
                )
            except OSError as exc:
                log.error(
                    "cannot listen on kinesis_address %s (%s)",
                    me.kinesis_address,
                    exc.strerror or exc,
                )
                return EXIT_FAILED
        for name in ["", *service_names]:
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        monitor.serving.set()
        log.info(
            "serving on %s%s%s%s (cluster %s, peers %s, %s)",
            me.address
            if me.listen_address is None
            else f"{me.listen_address} (advertised {me.address})",
            "" if me.peer_address is None else f", peers to {me.peer_bind_address}",
            "" if endpoint is None else f", metrics on http://{me.metrics_address}/metrics",
            ""
            if me.kinesis_address is None
            else f", Kinesis on {'http' if tls is None else 'https'}://{me.kinesis_address}",
            config.name,
            ", ".join(sorted(transport.links)) or "none yet",
            "mutual TLS" if tls is not None else "plaintext",
        )
        exit_code = await _run(driver, transport, server, config, log, tls, monitor)
    finally:
        monitor.stopping.set()
        if kinesis is not None:
            await kinesis.cleanup()
        if endpoint is not None:
            await asyncio.to_thread(endpoint.close)
        if listener is not None:
            await listener.close()
        await server.stop(STOP_GRACE_S)
        driver.shutdown_workers()
        await transport.close()
        await streams_service.forwarder.close()
        try:
            state.close()
        except Exception as exc:  # a failing disk may refuse even the close
            log.error("closing the data directory failed: %s", describe_failure(exc))
            exit_code = EXIT_FAILED
        log.info("stopped")
    return exit_code


async def _run(
    driver: Driver,
    transport: Transport,
    server: grpc.aio.Server,
    config: ClusterConfig,
    log: logging.Logger,
    tls: NodeTls | None,
    monitor: Monitor,
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if tls is not None:
        loop.add_signal_handler(signal.SIGHUP, tls.reload)

    async def stop_on_signal() -> None:
        await stop.wait()
        monitor.stopping.set()
        log.info("stopping")
        await server.stop(STOP_GRACE_S)
        raise _Stop

    exit_code = EXIT_OK
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(driver.run())
            tg.create_task(transport.run())
            tick_s = config.heartbeat_interval_ms / 1000
            tg.create_task(driver.ticker.run(driver.post, lambda: driver.core.tick(), tick_s))
            tg.create_task(
                clear_when_caught_up(
                    config.node_data_dir(driver.node_id),
                    lambda: driver.core.status().awaiting_catch_up,
                    lambda: driver.core.status().commit_index,
                    lambda: driver.applied,
                    CATCH_UP_POLL_S,
                    log,
                )
            )
            tg.create_task(stop_on_signal())
            if tls is not None:
                tg.create_task(_watch_expiry(tls))
    except* _Stop:
        pass
    except* Exception as group:
        # Nested TaskGroups wrap the failure in groups: name each real one.
        for exc in leaves(group):
            log.critical("fatal: %s", describe_failure(exc))
        exit_code = EXIT_FAILED
    return exit_code


def leaves(group: BaseExceptionGroup[Exception]) -> list[Exception]:
    out: list[Exception] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out += leaves(exc)
        else:
            out.append(exc)
    return out


def describe_failure(exc: BaseException) -> str:
    """One line: what failed and why, down the chain of causes (which name the file)."""
    parts = [str(exc) if isinstance(exc, FatalError) else f"{type(exc).__name__}: {exc}"]
    cause = exc.__cause__ or exc.__context__
    for _ in range(MAX_CAUSES):
        if cause is None:
            break
        if str(cause) not in parts[-1]:  # already quoted by the error it caused
            parts.append(f"{type(cause).__name__}: {cause}")
        # __context__: a failing clean-up (e.g. a ROLLBACK) hides the first error.
        cause = cause.__cause__ or cause.__context__
    return "; caused by ".join(parts)


def run_node(
    config: ClusterConfig,
    node_id: str,
    *,
    log_level: str = "info",
    log_format: str = "text",
    join: bool = False,
) -> int:
    """Run node `node_id` of `config` in the foreground; returns the exit code.

    `log_format`: "text" or "json" (one JSON object per line). `join`: the
    node is not a member yet; an empty store starts with no configuration
    and waits for a leader to add it (`railyard member add`), instead of
    bootstrapping from the file's nodes.
    """
    log = configure_logging(node_id, log_level, log_format)
    try:
        config.node(node_id)
    except ConfigError as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    if refuse_plaintext(config, node_id, log):
        return EXIT_FAILED
    try:
        tls = None if config.tls is None else NodeTls(config.tls, node_id, log)
    except CertError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_FAILED
    if tls is not None:
        tls.warn_if_expiring()
    try:
        return asyncio.run(serve(config, NodeId(node_id), log, tls, join=join))
    except (StorageError, StreamsError, FatalError, LogBehindState, RaftError) as exc:
        # What the data directory holds cannot be used: one line naming the
        # file (the stores' errors do), no traceback.
        log.error("cannot start: %s", describe_failure(exc))
        return EXIT_FAILED
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK
