"""The dashboard's actions in Textual's command palette (ctrl+p).

The provider knows nothing of the dashboard's internals: the app lists its
current actions as `PaletteCommand`s (they depend on the cluster's state, e.g.
one "transfer leadership to …" per node that could lead), and the provider
offers them for discovery and fuzzy search.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol, runtime_checkable

from textual.command import DiscoveryHit, Hit, Hits, Provider


@dataclass(frozen=True, slots=True)
class PaletteCommand:
    name: str
    help: str
    run: Callable[[], object]


@runtime_checkable
class HasPaletteCommands(Protocol):
    def palette_commands(self) -> Sequence[PaletteCommand]: ...


class DashboardCommands(Provider):
    """Offers whatever the running dashboard app lists."""

    def _commands(self) -> Sequence[PaletteCommand]:
        app = self.app
        return app.palette_commands() if isinstance(app, HasPaletteCommands) else ()

    async def discover(self) -> Hits:
        for command in self._commands():
            yield DiscoveryHit(command.name, partial(command.run), help=command.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for command in self._commands():
            score = matcher.match(command.name)
            if score > 0:
                yield Hit(
                    score, matcher.highlight(command.name), partial(command.run), help=command.help
                )
