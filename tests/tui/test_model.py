"""ClusterView: leader and term tracking, events, lag and commit rates."""

from __future__ import annotations

import pytest

from railyard.proto import railyard_pb2 as pb
from railyard.tui.fake import DEMO_ENDPOINTS, DEMO_NOW, demo_status, demo_updates
from railyard.tui.model import ClusterView, NodeState
from railyard.tui.source import StatusUpdate

N1, N2, N3 = DEMO_ENDPOINTS


def up(endpoint: str, at: float, **fields: object) -> StatusUpdate:
    return StatusUpdate(endpoint, at, pb.NodeStatus(**fields))  # type: ignore[arg-type]


def texts(view: ClusterView) -> list[str]:
    return [event.text for event in view.events]


def test_first_leader_seen_is_an_event_without_a_term_change() -> None:
    view = ClusterView(DEMO_ENDPOINTS)
    view.observe(up(N1, 1.0, node_id="n1", term=3, leader_id="n1", role=pb.ROLE_LEADER))
    assert (view.leader_id, view.term) == ("n1", 3)
    assert texts(view) == ["n1 leads term 3"]
    assert view.leader_changed_at == 1.0


def test_election_reports_term_then_new_leader_naming_the_old_one() -> None:
    view = ClusterView(DEMO_ENDPOINTS)
    view.observe(up(N1, 1.0, node_id="n1", term=3, leader_id="n1"))
    view.observe(up(N2, 2.0, node_id="n2", term=4, leader_id=""))
    assert view.leader() is None
    view.observe(up(N2, 3.0, node_id="n2", term=4, leader_id="n2"))
    assert texts(view) == [
        "n1 leads term 3",
        "term 3 → 4",
        "no leader in term 4",
        "n2 leads term 4 (was n1)",
    ]
    assert view.leader_changed_at == 3.0
    assert view.leader() is view.nodes[N2]


def test_stale_node_with_an_older_term_does_not_move_the_leader_back() -> None:
    view = ClusterView(DEMO_ENDPOINTS)
    view.observe(up(N2, 1.0, node_id="n2", term=5, leader_id="n2"))
    view.observe(up(N1, 2.0, node_id="n1", term=4, leader_id="n1"))
    assert (view.leader_id, view.term) == ("n2", 5)


def test_down_and_up_again_are_events_and_quorum_follows() -> None:
    view = ClusterView(DEMO_ENDPOINTS)
    for i, endpoint in enumerate(DEMO_ENDPOINTS):
        view.observe(up(endpoint, 1.0, node_id=f"n{i + 1}", term=2, leader_id="n1"))
    assert view.has_quorum and view.up_count == 3
    view.observe(StatusUpdate(N2, 2.0, None, "refused"))
    view.observe(StatusUpdate(N2, 2.5, None, "refused"))  # still down: one event only
    view.observe(StatusUpdate(N3, 3.0, None, "refused"))
    assert view.nodes[N2].state is NodeState.DOWN
    assert not view.has_quorum
    view.observe(up(N2, 4.0, node_id="n2", term=2, leader_id="n1"))
    assert texts(view)[1:] == ["n2 is down: refused", "n3 is down: refused", "n2 is up"]
    assert view.has_quorum


def test_a_silent_node_is_unreachable_and_one_event_covers_the_outage() -> None:
    view = ClusterView(DEMO_ENDPOINTS)
    view.observe(up(N1, 1.0, node_id="n1"))
    view.observe(StatusUpdate(N1, 2.0, None, "no status for 2.0s", timed_out=True))
    assert view.nodes[N1].state is NodeState.UNREACHABLE
    view.observe(StatusUpdate(N1, 3.0, None, "refused"))
    assert view.nodes[N1].state is NodeState.DOWN
    assert texts(view) == ["n1 is unreachable: no status for 2.0s"]
    assert view.up_count == 0


def test_snapshot_taken_and_installed_are_events() -> None:
    view = ClusterView(DEMO_ENDPOINTS)
    view.observe(up(N1, 1.0, node_id="n1", snapshots_taken=1))
    view.observe(up(N1, 2.0, node_id="n1", snapshots_taken=2, snapshot_index=500))
    view.observe(up(N1, 3.0, node_id="n1", snapshots_taken=2, snapshots_installed=1))
    assert texts(view) == ["n1 took a snapshot at 500", "n1 installed a snapshot at 0"]


def test_lag_is_taken_from_the_leaders_progress() -> None:
    view = ClusterView(DEMO_ENDPOINTS)
    for i, endpoint in enumerate(DEMO_ENDPOINTS):
        view.observe(StatusUpdate(endpoint, 1.0, demo_status(i, commit=1000)))
    leader = view.nodes[N1]
    assert leader.status is not None
    assert view.lag(leader) == 0
    # The leader's last log is 1002; n3's match index is 1000 - 2 * 3.
    assert view.lag(view.nodes[N3]) == 1002 - 994


def test_lag_right_after_an_election_uses_the_nodes_own_log() -> None:
    view = ClusterView(DEMO_ENDPOINTS)
    for i, endpoint in enumerate(DEMO_ENDPOINTS):
        view.observe(StatusUpdate(endpoint, 1.0, demo_status(i, commit=1000)))
    leader = view.nodes[N1].status
    assert leader is not None
    for peer in leader.peers:
        peer.match_index = 0  # a new leader knows nothing of its followers yet
    follower = view.nodes[N3].status
    assert follower is not None
    assert view.lag(view.nodes[N3]) == leader.last_log_index - follower.last_log_index


def test_rates_come_from_commit_samples_and_their_times() -> None:
    view = ClusterView(DEMO_ENDPOINTS)
    for second in range(11):
        view.observe(up(N1, 100.0 + second, node_id="n1", commit_index=50 * second))
    node = view.nodes[N1]
    history = view.rate_history(node, now=110.0)
    assert len(history) == 60
    assert history[-10:] == [50.0] * 10
    assert history[0] == 0.0  # before the first sample nothing is known
    assert view.commits_per_s(110.0) == pytest.approx(50.0)


def test_demo_history_ends_with_n1_leading_and_n3_down() -> None:
    view = ClusterView(DEMO_ENDPOINTS)
    for update in demo_updates():
        view.observe(update)
    assert (view.leader_id, view.term) == ("n1", 7)
    assert view.nodes[N3].state is NodeState.DOWN
    assert view.up_count == 2 and view.has_quorum
    assert max(view.rate_history(view.nodes[N1], DEMO_NOW)) > 0


def test_events_after_hands_out_only_new_events_even_past_the_cap() -> None:
    view = ClusterView(DEMO_ENDPOINTS)
    view.observe(up(N1, 1.0, node_id="n1", term=1, leader_id="n1"))
    new, seen = view.events_after(0)
    assert [e.text for e in new] == ["n1 leads term 1"] and seen == 1
    assert view.events_after(seen) == ([], 1)
    for term in range(2, 800):
        view.observe(up(N1, float(term), node_id="n1", term=term, leader_id="n1"))
    new, seen = view.events_after(seen)
    assert len(new) == len(view.events)  # older ones fell off the capped history
    assert new[-1].text == "term 798 → 799"
    assert seen == view.events_total
