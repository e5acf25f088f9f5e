"""The asyncio shell around the Raft core: gRPC services, peer transport, timers, apply loop.

`run_node(config, node_id)` runs one node in the foreground (see `server.py`).
"""

from railyard.node.server import run_node

__all__ = ["run_node"]
