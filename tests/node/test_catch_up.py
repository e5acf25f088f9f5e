"""The catch-up marker is removed only once catching up is durable."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from railyard.node.driver.catch_up import clear_when_caught_up, marker_path, note_awaiting

LOG = logging.getLogger("test")
POLL_S = 0.001
# Polls given to a task that must not finish: far more than it needs to notice.
POLLS = 50


async def test_the_marker_stays_until_the_caught_up_commit_index_is_applied(
    tmp_path: Path,
) -> None:
    note_awaiting(tmp_path)
    state = {"awaiting": True, "commit": 10, "applied": 0}
    task = asyncio.create_task(
        clear_when_caught_up(
            tmp_path,
            lambda: bool(state["awaiting"]),
            lambda: state["commit"],
            lambda: state["applied"],
            POLL_S,
            LOG,
        )
    )
    await asyncio.sleep(POLL_S * POLLS)
    assert marker_path(tmp_path).exists()
    # The core left the state on stepping the append; its entries are not on disk yet.
    state["awaiting"] = False
    await asyncio.sleep(POLL_S * POLLS)
    state["commit"] = 12  # later commits do not move the bar
    state["applied"] = 9
    await asyncio.sleep(POLL_S * POLLS)
    assert marker_path(tmp_path).exists() and not task.done()
    state["applied"] = 10
    await asyncio.wait_for(task, timeout=5)
    assert not marker_path(tmp_path).exists()


async def test_without_a_marker_there_is_nothing_to_clear(tmp_path: Path) -> None:
    await asyncio.wait_for(
        clear_when_caught_up(tmp_path, lambda: True, lambda: 0, lambda: 0, POLL_S, LOG),
        timeout=5,
    )
    assert not marker_path(tmp_path).exists()
