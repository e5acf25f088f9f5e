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

The checks made before anything is opened are in `preflight.py`, the gRPC
server's make-up in `grpc_server.py`, and how the node follows its
configuration (links, accepted senders, authorized nodes) in `members.py`;
this module wires them with the rest in one pass.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal

import grpc
from aiohttp import web

from railyard.certs import CertError
from railyard.config import ClusterConfig, ConfigError
from railyard.node.api.authorization import AuthorizationInterceptor
from railyard.node.api.cluster_service import ClusterService
from railyard.node.api.context import NodeContext
from railyard.node.api.kinesis_backend import start_kinesis_endpoint
from railyard.node.api.native import NativeServer
from railyard.node.api.streams_service import StreamsService
from railyard.node.driver import Driver, FatalError
from railyard.node.driver.catch_up import (
    CATCH_UP_POLL_S,
    clear_when_caught_up,
)
from railyard.node.grpc_server import build_server
from railyard.node.members import MembershipFollower, note_file_differs
from railyard.node.monitoring import Monitor
from railyard.node.observability import (
    MetricsEndpoint,
    NodeMetrics,
    configure_logging,
)
from railyard.node.peers import tcp
from railyard.node.peers.inbound import RaftService
from railyard.node.peers.links import PeerLink, Transport
from railyard.node.peers.tcp import PeerListener
from railyard.node.preflight import ports_free, refuse_plaintext
from railyard.node.recovery import LOG_FILE, STATE_FILE, LogBehindState, limits_of, open_state
from railyard.node.security import NodeTls
from railyard.proto import railyard_pb2 as pb
from railyard.raft import (
    Index,
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


class _Stop(Exception):
    """Raised inside the TaskGroup to end every task on a signal."""


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
        native_address=me.native_address or "",
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
    authorization = None if tls is None else AuthorizationInterceptor(config.node_ids, log)
    follower = MembershipFollower(
        config=config,
        node_id=node_id,
        driver=driver,
        transport=transport,
        raft_service=raft_service,
        authorization=authorization,
        addresses=addresses,
        log=log,
    )
    raft_service.on_new_sender = follower.on_new_sender
    driver.on_membership = follower.apply_membership
    follower.apply_membership(initial)
    node_server = build_server(
        serve_raft=me.peer_address is None,
        raft_service=raft_service,
        streams_service=streams_service,
        cluster_service=cluster_service,
        authorization=authorization,
        metrics=metrics,
    )
    server = node_server.server
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
    native = (
        None
        if me.native_address is None
        else NativeServer(
            me.native_address,
            node,
            streams_service,
            log=log,
            tls=tls.server_context if tls is not None else None,
            members=(lambda: (authorization.members, authorization.any_node))
            if authorization is not None
            else lambda: ((), False),
            metrics=metrics,
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
                _cannot_listen(log, "peer_address", me.peer_bind_address, exc)
                return EXIT_FAILED
        if endpoint is not None:
            try:
                endpoint.start()
            except OSError as exc:
                _cannot_listen(log, "metrics_address", me.metrics_address, exc)
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
        if native is not None:
            try:
                await native.start()
            except OSError as exc:
                _cannot_listen(log, "native_address", me.native_address, exc)
                return EXIT_FAILED
        await node_server.set_serving()
        monitor.serving.set()
        log.info(
            "serving on %s%s%s%s%s (cluster %s, peers %s, %s)",
            me.address
            if me.listen_address is None
            else f"{me.listen_address} (advertised {me.address})",
            "" if me.peer_address is None else f", peers to {me.peer_bind_address}",
            "" if endpoint is None else f", metrics on http://{me.metrics_address}/metrics",
            ""
            if me.kinesis_address is None
            else f", Kinesis on {'http' if tls is None else 'https'}://{me.kinesis_address}",
            "" if me.native_address is None else f", native puts on {me.native_address}",
            config.name,
            ", ".join(sorted(transport.links)) or "none yet",
            "mutual TLS" if tls is not None else "plaintext",
        )
        exit_code = await _run(driver, transport, server, config, log, tls, monitor, native)
    finally:
        monitor.stopping.set()
        if native is not None:
            await native.close()
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


def _cannot_listen(log: logging.Logger, key: str, address: str | None, exc: OSError) -> None:
    hint = "; is the port in use?" if exc.errno == errno.EADDRINUSE else ""
    log.error("cannot listen on %s %s (%s)%s", key, address, exc.strerror or exc, hint)


async def _run(
    driver: Driver,
    transport: Transport,
    server: grpc.aio.Server,
    config: ClusterConfig,
    log: logging.Logger,
    tls: NodeTls | None,
    monitor: Monitor,
    native: NativeServer | None = None,
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
        # Both answer what they took in while the driver still runs.
        await asyncio.gather(
            server.stop(STOP_GRACE_S),
            *([native.close(STOP_GRACE_S)] if native is not None else []),
        )
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
