"""One node process: open the data directory, build the core, serve gRPC.

`run_node` is the whole life of a node in the foreground:

1. open and reconcile the data directory and build the Raft core from it
   (`recovery.py`);
2. serve Raft, Streams, Cluster, health and reflection on the node's
   address (and the Kinesis protocol on its `kinesis_address`, if it has
   one, on the same loop), and run the driver, the peer links and the ticker in one
   TaskGroup;
3. on SIGTERM/SIGINT stop accepting calls, let the write in progress
   finish, close the stores, release the lock and return 0. A storage error
   stops the node with a non-zero exit code instead, logging one line per
   failure with its cause (which names the file); a data directory that
   cannot be used at start-up is one "cannot start: <file>: ..." line.

Every log line names the node ("n1 became leader term=3").
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import sys

import grpc
from aiohttp import web
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from railyard.config import ClusterConfig, ConfigError
from railyard.node.api.cluster_service import ClusterService
from railyard.node.api.context import NodeContext
from railyard.node.api.kinesis_backend import start_kinesis_endpoint
from railyard.node.api.streams_service import StreamsService
from railyard.node.driver import Driver, FatalError
from railyard.node.driver.catch_up import (
    CATCH_UP_POLL_S,
    clear_when_caught_up,
)
from railyard.node.grpc_options import SERVER_OPTIONS
from railyard.node.peers.inbound import RaftService
from railyard.node.peers.links import PeerLink, Transport
from railyard.node.peers.tcp import PeerListener
from railyard.node.recovery import LogBehindState, limits_of, open_state
from railyard.proto import railyard_pb2 as pb
from railyard.proto import railyard_pb2_grpc as pb_grpc
from railyard.raft import (
    Index,
    NodeId,
    RaftError,
)
from railyard.storage import StorageError
from railyard.streams import StreamsError

# Causes quoted in a fatal error's line (each names what failed).
MAX_CAUSES = 4
# In-flight calls get this long to finish when the node stops.
STOP_GRACE_S = 0.5
EXIT_OK = 0
EXIT_FAILED = 1

LOG_FORMAT = "%(asctime)s %(levelname)s {node_id} %(message)s"


def configure_logging(node_id: str, level: str) -> logging.Logger:
    log = logging.getLogger("railyard.node")
    log.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT.format(node_id=node_id)))
    log.addHandler(handler)
    log.setLevel(level.upper())
    log.propagate = False
    return log


class _Stop(Exception):
    """Raised inside the TaskGroup to end every task on a signal."""


async def serve(config: ClusterConfig, node_id: NodeId, log: logging.Logger) -> int:
    me = config.node(node_id)
    state = await asyncio.to_thread(open_state, config, node_id, log)
    addresses = {n.id: n.address for n in config.nodes}
    peer_addresses = {n.id: n.peer_address for n in config.nodes}
    local = pb.Peer(cluster=config.name, node_id=node_id)
    peers = [NodeId(n.id) for n in config.nodes if n.id != node_id]
    # One pass: the links report to the driver built next (they call back
    # only once running), and the driver sends through the links.
    links = {
        peer_id: PeerLink(
            local=local,
            peer_id=peer_id,
            address=addresses[peer_id],
            snapshots=state.snapshots,
            on_unreachable=lambda p: driver.post(lambda: driver.core.report_unreachable(p)),
            on_snapshot_done=lambda p, ok: driver.post(lambda: driver.core.report_snapshot(p, ok)),
            log=log,
            on_refused=lambda p: driver.post(lambda: driver.leader_refuses_connections(p)),
            peer_address=peer_addresses[peer_id],
        )
        for peer_id in peers
    }
    transport = Transport(list(links.values()))
    driver = Driver(
        node_id=node_id,
        voters=tuple(NodeId(n) for n in config.node_ids),
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
    )
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
    )
    raft_service = RaftService(
        cluster=config.name,
        node_id=node_id,
        peers=peers,
        driver=driver,
        snapshots=state.snapshots,
        log=log,
        last_heard=node.last_heard,
        on_pipe_ended=lambda p: links[p].probe() if p in links else None,
    )
    streams_service = StreamsService(node)
    cluster_service = ClusterService(node, streams_service.forwarder)
    server = grpc.aio.server(options=SERVER_OPTIONS)
    pb_grpc.add_RaftServicer_to_server(raft_service, server)
    pb_grpc.add_StreamsServicer_to_server(streams_service, server)
    pb_grpc.add_ClusterServicer_to_server(cluster_service, server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    service_names = [
        pb.DESCRIPTOR.services_by_name[name].full_name for name in ("Raft", "Streams", "Cluster")
    ]
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
        if me.peer_address is None
        else PeerListener(address=me.peer_address, sink=raft_service, log=log)
    )
    exit_code = EXIT_OK
    kinesis: web.AppRunner | None = None
    try:
        try:
            server.add_insecure_port(me.address)
        except RuntimeError as exc:
            log.error("cannot listen on %s (%s); is the port in use?", me.address, exc)
            return EXIT_FAILED
        if listener is not None:
            try:
                await listener.start()
            except OSError as exc:
                hint = "; is the port in use?" if exc.errno == errno.EADDRINUSE else ""
                log.error(
                    "cannot listen on peer_address %s (%s)%s",
                    me.peer_address,
                    exc.strerror or exc,
                    hint,
                )
                return EXIT_FAILED
        await server.start()
        if me.kinesis_address is not None:
            try:
                kinesis = await start_kinesis_endpoint(
                    me.kinesis_address, node, streams_service, config.kinesis_credentials
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
        log.info(
            "serving on %s%s%s (cluster %s, peers %s)",
            me.address,
            "" if me.peer_address is None else f", peers to {me.peer_address}",
            "" if me.kinesis_address is None else f", Kinesis on http://{me.kinesis_address}",
            config.name,
            ", ".join(peers),
        )
        exit_code = await _run(driver, transport, server, config, log)
    finally:
        if kinesis is not None:
            await kinesis.cleanup()
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
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def stop_on_signal() -> None:
        await stop.wait()
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


def run_node(config: ClusterConfig, node_id: str, *, log_level: str = "info") -> int:
    """Run node `node_id` of `config` in the foreground; returns the exit code."""
    log = configure_logging(node_id, log_level)
    try:
        config.node(node_id)
    except ConfigError as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    try:
        return asyncio.run(serve(config, NodeId(node_id), log))
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
