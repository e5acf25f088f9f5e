"""Refusal log lines, rate-limited: whoever can reach a port must not fill the disk.

Each kind of refusal (a fixed set of names chosen by the code, never text a
dialler chose, so the table stays small) gets at most `LINES_PER_WINDOW`
lines per `WINDOW_S`; later ones in that window are only counted, and the
next line logged for that kind says how many were suppressed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# A few lines a minute per kind say what is going on; a flood adds nothing.
LINES_PER_WINDOW = 10
WINDOW_S = 60.0


@dataclass(slots=True)
class _Window:
    start: float
    lines: int = 0
    suppressed: int = 0


class RefusalLog:
    """Warnings per kind of refusal, at most `lines_per_window` per `window_s`."""

    def __init__(
        self,
        log: logging.Logger,
        *,
        lines_per_window: int = LINES_PER_WINDOW,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.lines_per_window = lines_per_window
        self.window_s = window_s
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def warning(
        self, kind: str, message: str, *args: object, extra: Mapping[str, Any] | None = None
    ) -> bool:
        """Log `message % args` unless `kind` used up its window; whether it was logged."""
        now = self._clock()
        window = self._windows.get(kind)
        if window is None or now - window.start >= self.window_s:
            suppressed = window.suppressed if window is not None else 0
            window = self._windows[kind] = _Window(now, suppressed=suppressed)
        if window.lines >= self.lines_per_window:
            window.suppressed += 1
            return False
        window.lines += 1
        if window.suppressed:
            message += " (%d more %s refusals suppressed)"
            args = (*args, window.suppressed, kind)
            window.suppressed = 0
        self.log.warning(message, *args, extra=extra)
        return True
