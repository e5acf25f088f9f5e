"""A leader's commit notices wait a moment for the next append (node/driver/notices.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from railyard.node.driver.notices import CommitNotices
from railyard.raft import Entry, EntryKind, Index, Message, MessageType, NodeId, Term

HOLD_S = 0.05


class Outbox:
    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, messages: Sequence[Message]) -> None:
        self.sent.extend(messages)


def notice(to: str, commit: int) -> Message:
    return Message(
        MessageType.APPEND,
        NodeId(to),
        NodeId("n1"),
        Term(2),
        prev_log_index=Index(commit),
        prev_log_term=Term(2),
        leader_commit=Index(commit),
    )


def append(to: str, index: int, commit: int) -> Message:
    entry = Entry(Term(2), Index(index), EntryKind.NORMAL, b"put")
    return Message(
        MessageType.APPEND,
        NodeId(to),
        NodeId("n1"),
        Term(2),
        prev_log_index=Index(index - 1),
        prev_log_term=Term(2),
        entries=(entry,),
        leader_commit=Index(commit),
    )


def heartbeat(to: str, commit: int) -> Message:
    return Message(
        MessageType.HEARTBEAT, NodeId(to), NodeId("n1"), Term(2), leader_commit=Index(commit)
    )


async def test_a_notice_no_append_carries_leaves_after_the_hold() -> None:
    outbox = Outbox()
    notices = CommitNotices(outbox, HOLD_S)
    notices.send_holding_notices([notice("n2", 7), notice("n3", 7)])
    assert outbox.sent == []
    await asyncio.sleep(HOLD_S * 3)
    assert outbox.sent == [notice("n2", 7), notice("n3", 7)]


async def test_an_append_to_the_same_follower_carries_its_notice() -> None:
    outbox = Outbox()
    notices = CommitNotices(outbox, HOLD_S)
    notices.send_holding_notices([notice("n2", 7), notice("n3", 7)])
    notices.send([append("n2", 8, 7)])
    await asyncio.sleep(HOLD_S * 3)
    # n2 learnt commit 7 from the append; n3 got nothing else, so its notice went.
    assert outbox.sent == [append("n2", 8, 7), notice("n3", 7)]


async def test_only_an_append_carries_a_notice_and_the_rest_leaves_at_once() -> None:
    outbox = Outbox()
    notices = CommitNotices(outbox, HOLD_S)
    notices.send_holding_notices([notice("n2", 7), heartbeat("n3", 6), append("n3", 8, 7)])
    assert outbox.sent == [heartbeat("n3", 6), append("n3", 8, 7)]
    # A heartbeat's commit is capped by the follower's match: it carries no notice.
    notices.send([heartbeat("n2", 5)])
    await asyncio.sleep(HOLD_S * 3)
    assert outbox.sent[-1] == notice("n2", 7)


async def test_a_newer_notice_replaces_a_held_one() -> None:
    outbox = Outbox()
    notices = CommitNotices(outbox, HOLD_S)
    notices.send_holding_notices([notice("n2", 7)])
    notices.send_holding_notices([notice("n2", 8)])
    await asyncio.sleep(HOLD_S * 3)
    assert outbox.sent == [notice("n2", 8)]


async def test_nothing_leaves_after_close() -> None:
    outbox = Outbox()
    notices = CommitNotices(outbox, HOLD_S)
    notices.send_holding_notices([notice("n2", 7)])
    notices.close()
    await asyncio.sleep(HOLD_S * 3)
    assert outbox.sent == []
