"""Fixtures shared by every suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import LocalCluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A started 3-node LocalCluster (short timings), stopped at teardown."""
    c = LocalCluster(tmp_path)
    try:
        c.start()
        yield c
    finally:
        c.stop()
