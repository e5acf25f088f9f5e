"""A node's log lines: text for people, JSON lines for log shippers.

`--log-format text` (the default) writes `<time> <LEVEL> <node> <message>`.
`--log-format json` (or `RAILYARD_LOG_FORMAT=json`) writes one JSON object
per line::

    {"time": "2026-12-03T10:31:07.412Z", "level": "info", "node": "n1",
     "event": "role_change", "message": "became leader term=3",
     "fields": {"role": "leader", "term": 3, "leader": "n1"}}

`event` names what happened; a line logged without one is `"log"`. The
lines operators alert on carry their facts in `fields` (see `event`):
`role_change`, `leader_change`, `term_change`, `membership`,
`snapshot_taken`, `snapshot_installed`, `connection_refused`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s {node_id} %(message)s"
# A line logged without `extra=event(...)`.
PLAIN_EVENT = "log"
LOGGER_NAME = "railyard.node"


def event(name: str, **fields: object) -> dict[str, Any]:
    """`extra=` for a log call: the event's name and its facts (JSON lines show both)."""
    return {"event": name, "fields": fields}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, node, event, message, fields."""

    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        fields = dict(getattr(record, "fields", None) or {})
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        doc = {
            "time": _utc(record.created),
            "level": record.levelname.lower(),
            "node": self.node_id,
            "event": getattr(record, "event", PLAIN_EVENT),
            "message": record.getMessage(),
            "fields": fields,
        }
        return json.dumps(doc, default=str)


def _utc(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created * 1000) % 1000:03d}Z"


def configure_logging(node_id: str, level: str, log_format: str = "text") -> logging.Logger:
    """The node's logger, writing to stderr in `log_format` (one of LOG_FORMATS)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(
            f"log format: expected one of {', '.join(LOG_FORMATS)} (got {log_format!r})"
        )
    log = logging.getLogger(LOGGER_NAME)
    log.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(node_id))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT.format(node_id=node_id)))
    log.addHandler(handler)
    log.setLevel(level.upper())
    log.propagate = False
    return log
