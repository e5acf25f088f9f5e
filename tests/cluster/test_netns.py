"""A cluster whose nodes live in separate network namespaces, each with its own address.

Every node binds 0.0.0.0 (`listen_address`) in its namespace and advertises
its namespace's address; the test, in its own namespace, reaches them over
a bridge as a client on another host would. A record put through one node
is read from another; then one node's "machine" is taken away (its
namespace deleted) and a new one brought up under the same advertised
address: the cluster finds it again and it catches up. Then the membership
changes there: a fourth machine, which the cluster file does not list, joins
with `--join` and is added as a voter, and an original node is removed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.netns import NetnsCluster, unavailable_reason

NODES = ["n1", "n2", "n3"]
JOINER = "n4"
CATCH_UP_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.2


@pytest.fixture
def netns_cluster(tmp_path: Path) -> Iterator[NetnsCluster]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"no network namespaces here: {reason}")
    cluster = NetnsCluster(tmp_path, NODES)
    try:
        cluster.write_config()
        for node_id in NODES:
            cluster.start_node(node_id)
        for node_id in NODES:
            cluster.wait_ready(node_id)
        yield cluster
    finally:
        cluster.close()


def _get(cluster: NetnsCluster, node_id: str, *extra: str) -> list[tuple[str, int]]:
    result = cluster.cli(
        "get", "s", "--from-start", "-o", "json", "--endpoints", cluster.address(node_id), *extra
    )
    assert result.returncode == 0, result.stderr
    return [
        (record["data"], record["sequence"])
        for record in map(json.loads, result.stdout.splitlines())
    ]


def _wait_for_records(cluster: NetnsCluster, node_id: str, expected: list[tuple[str, int]]) -> None:
    """`node_id` serves `expected` (a stale read: what it holds itself)."""
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    records: list[tuple[str, int]] = []
    while time.monotonic() < deadline:
        records = _get(cluster, node_id, "--stale")
        if len(records) >= len(expected):
            break
        time.sleep(POLL_INTERVAL_S)
    assert records == expected, cluster.log(node_id)[-4000:]


def _roles(listing: dict[str, list[dict[str, str]]]) -> dict[str, str]:
    return {member["id"]: member["role"] for member in listing["members"]}


def test_nodes_in_separate_namespaces_find_a_moved_node_and_change_membership(
    netns_cluster: NetnsCluster,
) -> None:
    cluster = netns_cluster
    leader = cluster.wait_for_leader()
    assert f"serving on 0.0.0.0:50051 (advertised {cluster.address(leader)})" in cluster.log(leader)
    put = cluster.cli("put", "s", "hello", "--endpoints", cluster.address(leader))
    assert put.returncode == 0, put.stderr
    follower = next(n for n in NODES if n != leader)
    assert _get(cluster, follower) == [("hello", 1)]

    # n3's machine goes away; a new one comes up under the same advertised address.
    moved = next(n for n in NODES if n != leader and n != follower)
    address = cluster.hosts[moved]
    cluster.stop_node(moved)
    cluster.remove_host(moved)
    put = cluster.cli("put", "s", "while-away")
    assert put.returncode == 0, put.stderr
    assert cluster.add_host(moved, address) == address
    cluster.start_node(moved)
    cluster.wait_ready(moved)
    _wait_for_records(cluster, moved, [("hello", 1), ("while-away", 2)])
    status = cluster.status(moved)
    assert status is not None and status.leader_id, "the moved node knows the leader"

    # A fourth machine joins: the file does not list it, its addresses are its own.
    cluster.add_host(JOINER)
    addresses = (
        "--address",
        cluster.address(JOINER),
        "--peer-address",
        cluster.peer_address(JOINER),
    )
    cluster.start_node(JOINER, "--join", *addresses)
    cluster.wait_ready(JOINER)
    added = cluster.cli("member", "add", JOINER, *addresses, "--wait", "30s", "-o", "json")
    assert added.returncode == 0, added.stderr + cluster.log(JOINER)[-4000:]
    assert json.loads(added.stdout)["changed"] is True
    listed = cluster.cli("member", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    listing = json.loads(listed.stdout)
    assert _roles(listing) == dict.fromkeys([*NODES, JOINER], "voter")
    joiner = next(m for m in listing["members"] if m["id"] == JOINER)
    assert (joiner["address"], joiner["peer_address"]) == (
        cluster.address(JOINER),
        cluster.peer_address(JOINER),
    )
    _wait_for_records(cluster, JOINER, [("hello", 1), ("while-away", 2)])

    # An original node is retired. Then it and `moved` stop: the leader and the
    # joiner are a quorum of the new three voters only, not of the old four.
    removed = cluster.cli("member", "remove", follower, "-o", "json")
    assert removed.returncode == 0, removed.stderr
    removal = json.loads(removed.stdout)
    assert removal["changed"] is True
    assert _roles(removal) == dict.fromkeys([leader, moved, JOINER], "voter")
    cluster.stop_node(follower)
    cluster.stop_node(moved)
    put = cluster.cli("put", "s", "after-remove", "--endpoints", cluster.address(JOINER))
    assert put.returncode == 0, put.stderr + cluster.log(leader)[-4000:]
    _wait_for_records(cluster, JOINER, [("hello", 1), ("while-away", 2), ("after-remove", 3)])
