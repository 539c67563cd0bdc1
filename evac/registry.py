"""Names plugins register (actions, fence methods): each name once, or an error naming both."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar

from .errors import ConfigError


class Named(Protocol):
    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=Named)


def by_name(kind: str, registered: Iterable[tuple[str, T]]) -> dict[str, T]:
    """(plugin, thing) pairs as {name: thing}, sorted; a name registered twice is an error
    naming both plugins, since which one wins would depend on load order."""
    found: dict[str, tuple[T, str]] = {}
    for plugin, thing in registered:
        if thing.name in found:
            raise ConfigError(
                f"{kind} '{thing.name}' is registered by two plugins: '{found[thing.name][1]}' and '{plugin}'"
                " (block one with EVAC_BLOCK_PLUGINS)"
            )
        found[thing.name] = (thing, plugin)
    return {name: pair[0] for name, pair in sorted(found.items())}
