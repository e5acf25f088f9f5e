"""Running the dashboard against a real cluster (what `railyard top` calls)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from railyard.client import ClientTls, RailyardClient
from railyard.tui.app import DEFAULT_INTERVAL_S, DashboardApp
from railyard.tui.source import ClientSource


def run_dashboard(
    endpoints: Sequence[str], interval_s: float = DEFAULT_INTERVAL_S, tls: ClientTls | None = None
) -> None:
    """Shows the cluster at `endpoints` until the operator quits (blocking)."""
    asyncio.run(_run(list(endpoints), interval_s, tls))


async def _run(endpoints: list[str], interval_s: float, tls: ClientTls | None) -> None:
    # The client's channels belong to this event loop, the one the app runs on.
    async with RailyardClient(endpoints, tls=tls) as client:
        # Members added since the cluster file was written are shown too.
        await client.discover_members()
        app = DashboardApp(ClientSource(client, client.endpoints), interval_s)
        await app.run_async()
