"""The dashboard's layout over the demo data, at 80x24 and at 160x48.

A layout change shows here as an SVG diff; after a deliberate change, accept
the new pictures with `pytest tests/tui/test_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

from typing import Any

from tests.tui.helpers import demo_app, wait_for_data


def test_dashboard_80x24(snap_compare: Any) -> None:
    assert snap_compare(demo_app(), terminal_size=(80, 24), run_before=wait_for_data)


def test_dashboard_160x48(snap_compare: Any) -> None:
    assert snap_compare(demo_app(), terminal_size=(160, 48), run_before=wait_for_data)


def test_second_node_selected_80x24(snap_compare: Any) -> None:
    async def select_n2(pilot: Any) -> None:
        await wait_for_data(pilot)
        await pilot.press("down")
        await wait_for_data(pilot)

    assert snap_compare(demo_app(), terminal_size=(80, 24), run_before=select_n2)


def test_confirmation_modal_80x24(snap_compare: Any) -> None:
    async def ask(pilot: Any) -> None:
        await wait_for_data(pilot)
        await pilot.press("down", "e")
        await pilot.pause()

    assert snap_compare(demo_app(), terminal_size=(80, 24), run_before=ask)


def test_help_80x24(snap_compare: Any) -> None:
    async def ask(pilot: Any) -> None:
        await wait_for_data(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(demo_app(), terminal_size=(80, 24), run_before=ask)
