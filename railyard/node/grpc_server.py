"""The node's gRPC server: the services it serves on its client address, and how.

- Streams and Cluster always; the Raft service only on a node without a
  `peer_address`. With one, peers' Raft traffic (snapshots too) arrives
  there only: the client address does not serve the Raft service
  (UNIMPLEMENTED), so a client's port is no way into the log (issue 14).
- They are registered through `api/decoding.py`: a malformed request is
  INVALID_ARGUMENT, not UNKNOWN or a hang.
- The standard health service (every service SERVING once the node serves,
  `NodeServer.set_serving`) and reflection.
- Interceptors, in this order: under TLS the authorization of each call by
  its certificate's role, with metrics the counting and timing of each call.

It sees the api and peers wings, as `process.py` does, which builds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from railyard.node.api.authorization import AuthorizationInterceptor
from railyard.node.api.cluster_service import WATCH_STATUS_METHOD, ClusterService
from railyard.node.api.decoding import TolerantRegistration
from railyard.node.api.streams_service import StreamsService
from railyard.node.grpc_options import SERVER_OPTIONS
from railyard.node.observability import NodeMetrics
from railyard.node.observability.grpc_metrics import GrpcMetricsInterceptor
from railyard.node.peers.inbound import RaftService
from railyard.proto import railyard_pb2 as pb
from railyard.proto import railyard_pb2_grpc as pb_grpc


@dataclass(frozen=True)
class NodeServer:
    """The server, not started yet, its health service and the full names it serves."""

    server: grpc.aio.Server
    health: health_aio.HealthServicer
    service_names: list[str]

    async def set_serving(self) -> None:
        for name in ["", *self.service_names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)


def build_server(
    *,
    serve_raft: bool,
    raft_service: RaftService,
    streams_service: StreamsService,
    cluster_service: ClusterService,
    authorization: AuthorizationInterceptor | None,
    metrics: NodeMetrics,
) -> NodeServer:
    interceptors: list[grpc.aio.ServerInterceptor] = []  # type: ignore[type-arg]
    if authorization is not None:
        interceptors.append(authorization)
    if metrics.registry is not None:
        interceptors.append(GrpcMetricsInterceptor(metrics))
    server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=interceptors)
    served = ("Raft", "Streams", "Cluster") if serve_raft else ("Streams", "Cluster")
    tolerant = cast(grpc.aio.Server, TolerantRegistration(server, [WATCH_STATUS_METHOD]))
    if serve_raft:
        pb_grpc.add_RaftServicer_to_server(raft_service, tolerant)
    pb_grpc.add_StreamsServicer_to_server(streams_service, tolerant)
    pb_grpc.add_ClusterServicer_to_server(cluster_service, tolerant)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    service_names = [pb.DESCRIPTOR.services_by_name[name].full_name for name in served]
    reflection.enable_server_reflection(
        [
            *service_names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    return NodeServer(server, health, service_names)
