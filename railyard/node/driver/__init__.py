"""The driver and its helpers: the one task that owns the Raft core.

`driver.py` runs the core's Ready loop; the helpers each keep one concern
out of it: `inbox` (proposals and messages in), `waiters` (proposals out),
`reads` (read barriers), `persistence` (saving the log, and the one place
that builds a core), `applying`, `snapshotting`, `disk_space`, `catch_up`,
`threads` (the log and reads threads), `timing` (ticks) and `fatal`. This
wing imports neither `node.api` nor `node.peers`: it sends through an
`Outbox` it is given.
"""

from railyard.node.driver.driver import Driver, NodeStopped, Outbox
from railyard.node.driver.fatal import FatalError
from railyard.node.driver.waiters import LeadershipLost

__all__ = ["Driver", "FatalError", "LeadershipLost", "NodeStopped", "Outbox"]
