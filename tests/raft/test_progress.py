"""Progress states and the in-flight window."""

from __future__ import annotations

from railyard.raft import Index
from railyard.raft.progress import Inflights, Progress, ProgressState


def progress(match: int = 0, next_index: int = 1, capacity: int = 2) -> Progress:
    return Progress(Index(match), Index(next_index), Inflights(capacity))


def test_inflights_fill_and_free() -> None:
    window = Inflights(3)
    for last in (5, 9, 12):
        window.add(Index(last))
    assert window.full()
    window.free_le(Index(9))
    assert list(window.last_indexes) == [12] and not window.full()
    window.free_first_one()
    assert not window.last_indexes


def test_probe_pauses_after_one_append() -> None:
    peer = progress()
    assert not peer.is_paused()
    peer.sent_append(Index(3), 3)
    assert peer.is_paused() and peer.next_index == 1  # probing does not move next
    assert peer.maybe_update(Index(3))
    assert not peer.is_paused() and peer.next_index == 4


def test_replicate_advances_optimistically_and_pauses_when_window_full() -> None:
    peer = progress(match=3, next_index=4)
    peer.become_replicate()
    peer.sent_append(Index(5), 2)
    peer.sent_append(Index(7), 2)
    assert peer.next_index == 8 and peer.is_paused()
    peer.maybe_update(Index(5))
    peer.inflights.free_le(Index(5))
    assert not peer.is_paused()


def test_empty_append_uses_no_window_slot() -> None:
    peer = progress(match=3, next_index=4, capacity=1)
    peer.become_replicate()
    peer.sent_append(Index(3), 0)
    assert not peer.is_paused() and peer.next_index == 4


def test_snapshot_state_pauses_until_resolved() -> None:
    peer = progress(match=2, next_index=3)
    peer.become_snapshot(Index(10))
    assert peer.is_paused() and peer.state is ProgressState.SNAPSHOT
    peer.become_probe()
    assert peer.next_index == 11 and peer.pending_snapshot == 0  # resumes after the snapshot


def test_stale_update_changes_nothing() -> None:
    peer = progress(match=5, next_index=6)
    assert not peer.maybe_update(Index(4))
    assert (peer.match_index, peer.next_index) == (5, 6)


def test_inflights_fill_by_bytes_and_free_them() -> None:
    """One append may cross the byte bound (a single entry larger than it still goes),
    then the window is full until acknowledgements free the bytes (etcd MaxInflightBytes)."""
    window = Inflights(256, max_bytes=8)
    window.add(Index(1), 5)
    assert not window.full()
    window.add(Index(2), 5)
    assert window.full() and window.bytes == 10
    window.free_le(Index(1))
    assert not window.full() and window.bytes == 5
    window.free_first_one()
    assert window.bytes == 0
    window.add(Index(3), 100)
    assert window.full()
    window.reset()
    assert window.bytes == 0 and not window.full()


def test_replicate_pauses_on_bytes_before_the_count() -> None:
    peer = Progress(Index(3), Index(4), Inflights(256, max_bytes=4 << 20))
    peer.become_replicate()
    peer.sent_append(Index(4), 1, 3 << 20)
    assert not peer.is_paused()
    peer.sent_append(Index(5), 1, 3 << 20)
    assert peer.is_paused()
    peer.maybe_update(Index(4))
    peer.inflights.free_le(Index(4))
    assert not peer.is_paused()
