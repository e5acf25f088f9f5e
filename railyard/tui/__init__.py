"""The Textual dashboard behind `railyard top`.

It talks to nodes over gRPC only, through `railyard.client` (the Cluster
service: WatchStatus, Status, ReadLog, TransferLeadership), behind the
`DashboardSource` seam so the screen can be driven by `FakeSource` in tests.
"""

from __future__ import annotations

from railyard.tui.app import DEFAULT_INTERVAL_S, DashboardApp
from railyard.tui.fake import FakeSource, demo_source
from railyard.tui.run import run_dashboard
from railyard.tui.source import ClientSource, DashboardSource, StatusUpdate

__all__ = [
    "DEFAULT_INTERVAL_S",
    "ClientSource",
    "DashboardApp",
    "DashboardSource",
    "FakeSource",
    "StatusUpdate",
    "demo_source",
    "run_dashboard",
]
