"""What the driver tells operators as the core's state changes.

`Reporter` turns a new term or soft state into one log line each, tagged as
an event with its facts (`role_change`, `leader_change`, `term_change`;
JSON lines show them as fields), and counts leader changes and applied
entries in the node's metrics. It is called by the driver, on the loop; it
never touches the core.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from railyard.node.observability import NodeMetrics, event
from railyard.raft import Role, SoftState, Term
from railyard.streams import Appended, ApplyResult


class Reporter:
    """Log lines and metrics for the driver's state changes; see the module docstring."""

    def __init__(self, log: logging.Logger, metrics: NodeMetrics, term: Term) -> None:
        self.log = log
        self.metrics = metrics
        self.term = term

    def maybe_term(self, term: Term) -> None:
        if term == self.term:
            return
        self.log.info(
            "term %d -> %d",
            self.term,
            term,
            extra=event("term_change", previous_term=self.term, term=term),
        )
        self.term = term

    def soft_state(self, previous: SoftState, soft: SoftState, term: Term) -> None:
        if soft.leader_id is not None and soft.leader_id != previous.leader_id:
            self.metrics.leader_changed()
        if soft.role != previous.role:
            facts = event(
                "role_change",
                role=soft.role.value,
                previous_role=previous.role.value,
                term=term,
                leader=soft.leader_id,
            )
            if soft.role is Role.LEADER:
                self.log.info("became leader term=%d", term, extra=facts)
            else:
                leader = soft.leader_id or "-"
                self.log.info(
                    "became %s term=%d leader=%s", soft.role.value, term, leader, extra=facts
                )
        elif soft.leader_id != previous.leader_id:
            facts = event(
                "leader_change", leader=soft.leader_id, previous=previous.leader_id, term=term
            )
            self.log.info("leader is %s term=%d", soft.leader_id or "unknown", term, extra=facts)

    def applied(self, entries: int, results: Sequence[ApplyResult | None], seconds: float) -> None:
        """A batch was applied: its duration, its entries, the records it appended."""
        self.metrics.observe_apply(seconds)
        self.metrics.applied(
            entries,
            sum(len(r.sequences) for r in results if isinstance(r, Appended) and not r.duplicate),
        )
