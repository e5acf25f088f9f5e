"""The asyncio shell around the Raft core: gRPC services, peer transport, timers, apply loop.

`run_node(config, node_id)` runs one node in the foreground (see `process.py`).
"""

from railyard.node.process import run_node

__all__ = ["run_node"]
