"""The error that stops a node.

`FatalError` is raised where durable state may be lost or inconsistent: at
start-up (a state machine behind a compacted log with no snapshot), and
while serving (a log save or an apply that failed, a snapshot that cannot be
written or installed, a damaged state found by a read). Nothing in the node
catches it: it ends the driver's task group and the process exits naming
the failure, rather than acknowledge what might not be on disk or serve a
diverged replica. The one storage failure a node survives, a full disk, is
told apart by `disk_space.is_disk_full` before this would be raised.
"""


class FatalError(Exception):
    """Durable state may be lost or inconsistent: the node must stop."""
