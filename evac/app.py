"""The assembled application: plugins, journal, inventory and engine, built once.

The CLI, the Slack bot and the service all start from an ``App``, so they load plugins,
find runbooks and open the journal the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pluggy

from .engine import Engine
from .errors import ConfigError
from .inventory import Inventory, load_inventory
from .journal import Journal
from .plugins import plugin_manager, runbook_dirs
from .runbook import Runbook, load_runbook
from .sqlitejournal import SqliteJournal
from .yamldoc import suggest

DEFAULT_JOURNAL = Path("/var/lib/evac/journal.db")


def default_inventory_path() -> Path:
    if os.environ.get("EVAC_INVENTORY"):
        return Path(os.environ["EVAC_INVENTORY"])
    system = Path("/etc/evac/hosts.yaml")
    if system.exists():
        return system
    from .lab.rig import DEFAULT_DIR

    return DEFAULT_DIR / "hosts.yaml"


def default_journal_path(inventory: Path | None = None) -> Path:
    """``$EVAC_JOURNAL``; else the local lab's own journal when the inventory is the lab's
    (so ``evac lab down`` forgets a lab completely); else ``/var/lib/evac/journal.db``."""
    if os.environ.get("EVAC_JOURNAL"):
        return Path(os.environ["EVAC_JOURNAL"])
    if inventory is not None and inventory.name == "hosts.yaml" and (inventory.parent / "lab.json").exists():
        return inventory.parent / "journal.db"
    return DEFAULT_JOURNAL


@dataclass
class App:
    inventory_path: Path = field(default_factory=default_inventory_path)
    journal_path: Path = field(default_factory=default_journal_path)
    pm: pluggy.PluginManager = field(default_factory=plugin_manager)
    extra_services: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def journal(self) -> Journal:
        return SqliteJournal(self.journal_path)

    @cached_property
    def inventory(self) -> Inventory:
        return load_inventory(self.inventory_path)

    @cached_property
    def engine(self) -> Engine:
        services = {"app": self, "journal": self.journal, **self.extra_services}
        return Engine(self.pm, self.journal, services=services)

    def runbook_paths(self) -> dict[str, Path]:
        """Every runbook found, by name; the core's own first, then plugins' in order."""
        found: dict[str, Path] = {}
        for directory in runbook_dirs(self.pm):
            for path in sorted(Path(directory).glob("*.yaml")):
                found.setdefault(path.stem, path)
        return found

    def runbook(self, name_or_path: str) -> Runbook:
        path = Path(name_or_path)
        if path.suffix in (".yaml", ".yml") or path.exists():
            if not path.exists():
                raise ConfigError(f"{path}: no such runbook file")
            return load_runbook(path)
        known = self.runbook_paths()
        if name_or_path not in known:
            raise ConfigError(
                f"unknown runbook '{name_or_path}'{suggest(name_or_path, known)}; known: {', '.join(known) or 'none'}"
            )
        return load_runbook(known[name_or_path])

    def host_names(self) -> list[str] | None:
        """Inventory host names, or None where no inventory exists (params of type host go unchecked)."""
        if not self.inventory_path.exists():
            return None
        return [h.name for h in self.inventory.hosts]
