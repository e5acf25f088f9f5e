"""The dashboard against a real 3-node cluster on loopback (ClientSource).

The tests share one cluster (its node processes are stopped by pid at the
module's teardown) and drive the app with Pilot; every wait is bounded in
time. Each test writes a stream of its own and leaves every node running,
the one that kills a node starting it again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import DataTable

from railyard.client import RailyardClient
from railyard.proto import railyard_pb2 as pb
from railyard.tui import ClientSource, DashboardApp
from railyard.tui.screens import ConfirmScreen
from tests.support.cluster import LocalCluster

pytestmark = pytest.mark.timeout(90)

SIZE = (120, 40)
INTERVAL_S = 0.1
# "Within a few seconds": generous for a 2-core machine shared with others.
SETTLE_S = 10.0
STEP_S = 0.05


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    running = LocalCluster(tmp_path_factory.mktemp("tui-live"))
    try:
        running.start()
        yield running
    finally:
        running.stop()


def cell(app: DashboardApp, table: str, row: str, column: str) -> str:
    value = app.query_one(table, DataTable).get_cell(row, column)
    return value.plain if isinstance(value, Text) else str(value)


def column(app: DashboardApp, name: str) -> list[str]:
    return [cell(app, "#nodes", endpoint, name) for endpoint in app.source.endpoints]


async def wait_for(pilot: Pilot[None], condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        if condition():
            return
        await pilot.pause(STEP_S)
    app = pilot.app
    assert isinstance(app, DashboardApp)
    rows = {
        e: (n.state, n.status and (n.status.role, n.status.term)) for e, n in app.view.nodes.items()
    }
    raise AssertionError(f"timed out after {SETTLE_S}s waiting for {what}; nodes: {rows}")


def leader_rows(app: DashboardApp) -> list[str]:
    return [
        cell(app, "#nodes", e, "id")
        for e in app.source.endpoints
        if cell(app, "#nodes", e, "role") == "leader"
    ]


async def test_three_nodes_one_leader_reported_terms_and_puts_in_the_log_tail(
    cluster: LocalCluster,
) -> None:
    leader = await asyncio.to_thread(cluster.wait_for_leader)
    async with RailyardClient(cluster.endpoints) as client:
        app = DashboardApp(ClientSource(client, cluster.endpoints), INTERVAL_S)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: column(app, "state") == ["up"] * 3, "three nodes up")
            await wait_for(pilot, lambda: leader_rows(app) == [leader], f"{leader} alone leading")
            # Once every node follows the leader, terms are stable: compare
            # them with what the status RPC reports.
            await wait_for(pilot, lambda: column(app, "leader") == [leader] * 3, "all following")
            reported = {endpoint: status for endpoint, status in await client.cluster_status()}
            terms = [str(reported[e].term) if reported[e] else "?" for e in cluster.endpoints]
            await wait_for(pilot, lambda: column(app, "term") == terms, f"terms {terms}")
            assert column(app, "id") == cluster.node_ids

            sequences = [await client.put("tui-live", f"record {i}".encode()) for i in range(5)]
            assert len(set(sequences)) == 5

            def appends_shown() -> int:
                table = app.query_one("#log", DataTable)
                return sum(
                    cell(app, "#log", key, "kind") == "append"
                    and cell(app, "#log", key, "stream") == "tui-live"
                    for key in app._log_rows
                    if key in table.rows
                )

            await wait_for(pilot, lambda: appends_shown() == 5, "the five puts in the log tail")
            streams = app.query_one("#streams", DataTable)
            await wait_for(pilot, lambda: "tui-live" in streams.rows, "the stream in the panel")
            await wait_for(
                pilot, lambda: cell(app, "#streams", "tui-live", "records") == "5", "5 records"
            )


async def test_e_on_a_follower_makes_it_the_leader(cluster: LocalCluster) -> None:
    leader = await asyncio.to_thread(cluster.wait_for_leader)
    async with RailyardClient(cluster.endpoints) as client:
        app = DashboardApp(ClientSource(client, cluster.endpoints), INTERVAL_S)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: leader_rows(app) == [leader], f"{leader} leading")
            target = next(nid for nid in cluster.node_ids if nid != leader)
            for _ in range(cluster.node_ids.index(target)):
                await pilot.press("down")
            assert app.selected == cluster.addresses[target]
            await pilot.press("e")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await wait_for(pilot, lambda: leader_rows(app) == [target], f"{target} leading")
            assert await asyncio.to_thread(cluster.wait_for_leader, SETTLE_S) == target
            events = "\n".join(event.text for event in app.view.events)
            assert f"{target} leads term" in events


async def test_a_killed_node_shows_down_and_the_app_keeps_running(cluster: LocalCluster) -> None:
    leader = await asyncio.to_thread(cluster.wait_for_leader)
    victim = next(nid for nid in cluster.node_ids if nid != leader)
    endpoint = cluster.addresses[victim]
    async with RailyardClient(cluster.endpoints) as client:
        app = DashboardApp(ClientSource(client, cluster.endpoints), INTERVAL_S)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: column(app, "state") == ["up"] * 3, "three nodes up")
            await asyncio.to_thread(cluster.kill, victim)
            await wait_for(
                pilot, lambda: cell(app, "#nodes", endpoint, "state") == "down", f"{victim} down"
            )
            assert app.is_running
            assert column(app, "state").count("up") == 2
            assert leader_rows(app) == [leader]
            # Still live: a put through the survivors shows up in the leader's row.
            before = app.view.nodes[cluster.addresses[leader]].status
            assert before is not None
            await client.put("tui-kill", b"after the kill")
            await wait_for(
                pilot,
                lambda: _commit(app, cluster.addresses[leader]) > before.commit_index,
                "a new commit on the leader",
            )
            await pilot.press("down", "down")  # selecting the dead node does not crash either
            await pilot.pause(0.3)
            assert app.is_running
    cluster.start_node(victim)
    await asyncio.to_thread(cluster.wait_ready, victim)


def _commit(app: DashboardApp, endpoint: str) -> int:
    status: pb.NodeStatus | None = app.view.nodes[endpoint].status
    return status.commit_index if status is not None else 0
