"""What a node tells its operators: Prometheus metrics, /health and /ready, JSON log lines.

- `metrics`: the node's registry (one per node) and the instruments the
  driver, the peers and the API update as they go; `instruments`: those
  instruments, written on the event loop only; `scrape`: the state a
  scrape samples and renders beside them;
- `endpoint`: the HTTP server behind `metrics_address` (a thread of its own);
- `grpc_metrics`: the server interceptor counting and timing gRPC calls
  (imported from its module: the driver, which uses this package, knows no
  gRPC);
- `logs`: the text and JSON log formats and the `event(...)` helper that
  tags a line with an event name and its facts.

Nothing here steps the core or touches the stores: the process hands it
callables that read the node's state.
"""

from railyard.node.observability.endpoint import MetricsEndpoint, Probe
from railyard.node.observability.instruments import RateMeter, RecentSamples
from railyard.node.observability.logs import LOG_FORMATS, configure_logging, event
from railyard.node.observability.metrics import DEFAULT_MAX_STREAMS, NodeMetrics
from railyard.node.observability.scrape import StateSample, StreamFigures

__all__ = [
    "DEFAULT_MAX_STREAMS",
    "LOG_FORMATS",
    "MetricsEndpoint",
    "NodeMetrics",
    "Probe",
    "RateMeter",
    "RecentSamples",
    "StateSample",
    "StreamFigures",
    "configure_logging",
    "event",
]
