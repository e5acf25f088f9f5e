"""One 3-node cluster shared by the CLI tests (starting one per test would cost seconds each).

It lives as long as the tests/cli package runs, not the whole session: an idle
cluster's heartbeats would take CPU from every later test.

Tests that change leadership or stop a node leave the cluster with a leader
and every node running again.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.cluster import LocalCluster


@pytest.fixture(scope="package")
def cli_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("cli-cluster"), name="cli")
    try:
        c.start()
        c.wait_for_leader()
        yield c
    finally:
        c.stop()
