"""The assembled application: settings, plugins, journal, inventory, engine and the jobs
front door, built once.

The CLI, the Slack bot and the service all start from an ``App`` made by
:func:`make_app`, so they read one config, load plugins, find runbooks and open the
journal the same way.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pluggy

from .agents import AgentView
from .config import ServiceConfig, default_config, settings
from .coordination import Coordination, Solo
from .engine import Engine
from .errors import ConfigError
from .etcdclient import Cluster
from .etcdjournal import EtcdJournal
from .etcdsession import Session
from .fencing import fence_methods, legacy_fence_agent_plugins
from .inventory import Inventory, load_inventory
from .jobs import Jobs
from .journal import Journal
from .plugins import plugin_manager, runbook_dirs
from .replicas import Replicas
from .runbook import Runbook, load_runbook
from .sqlitejournal import SqliteJournal
from .yamldoc import suggest


def make_app(
    config: Path | None = None,
    pm: pluggy.PluginManager | None = None,
    inventory: Path | None = None,
    journal: Path | None = None,
) -> App:
    """The app for a config file (``--config``, ``$EVAC_CONFIG``, ``/etc/evac/evac.yaml``)
    or the defaults, with ``--inventory``/``--journal`` over either."""
    pm = pm or plugin_manager()
    return App.from_config(settings(config, pm, inventory, journal), pm)


@dataclass
class App:
    inventory_path: Path = field(default_factory=lambda: default_config().inventory)
    journal_path: Path | None = None
    pm: pluggy.PluginManager = field(default_factory=plugin_manager)
    config: ServiceConfig | None = None

    def __post_init__(self) -> None:
        if self.config is None:
            self.config = default_config(self.inventory_path, self.journal_path)
        self.journal_path = self.journal_path or self.config.journal

    @classmethod
    def from_config(cls, config: ServiceConfig, pm: pluggy.PluginManager | None = None) -> App:
        return cls(
            inventory_path=config.inventory, journal_path=config.journal, pm=pm or plugin_manager(), config=config
        )

    @property
    def settings(self) -> ServiceConfig:
        assert self.config is not None
        return self.config

    @cached_property
    def journal(self) -> Journal:
        """SQLite by default; on etcd (``journal: etcd://…``) this process's session lease
        starts here and owns every job it starts."""
        if self.settings.cluster is not None:
            return EtcdJournal(*self._etcd)
        assert self.journal_path is not None
        return SqliteJournal(self.journal_path)

    @cached_property
    def _etcd(self) -> tuple[Cluster, Session]:
        assert self.settings.cluster is not None
        cluster = Cluster(self.settings.cluster.etcd)
        session = Session(cluster, self.settings.cluster.etcd.lease_ttl)
        session.start()
        return cluster, session

    @cached_property
    def agents(self) -> AgentView | None:
        """The hosts' agents as etcd shows them (``evac agent``), followed from first use;
        None without an ``agent:`` section."""
        if self.settings.cluster is None or self.settings.agent is None:
            return None
        view = AgentView(self._etcd[0])
        # Read every second besides its watch: a lease's expiry is seen within a second even
        # when the watch is slow to say so (bench.monitor: 3 s reads made cuts 0.7 s slower to see).
        view.start(every=1.0)
        return view

    def close(self) -> None:
        """End this process's etcd session: its lease is revoked, so what it still owns
        (an interrupted job) is orphaned now, not when the lease would have expired."""
        view = self.__dict__.get("agents")
        if view is not None:
            view.stop()
        if "_etcd" in self.__dict__:
            self._etcd[1].stop(revoke=True)

    @cached_property
    def coordination(self) -> Coordination:
        """Who may act on the monitor's verdicts: this process alone, or the replicas' leader."""
        if self.settings.cluster is None:
            return Solo()
        cluster, session = self._etcd  # the journal's session: one lease per process
        return Replicas(cluster, session, self.settings.cluster.agree)

    @cached_property
    def inventory(self) -> Inventory:
        """The inventory, its ``fence:`` entries checked against the registered methods
        once the plugins it asks for (the lab's fence) are registered."""
        self._register_plugins(load_inventory(self.inventory_path))
        legacy = bool(legacy_fence_agent_plugins(self.pm))
        return load_inventory(self.inventory_path, fence_methods(self.pm), allow_unlisted_methods=legacy)

    def _register_plugins(self, inventory: Inventory) -> None:
        """Plugins an inventory asks for (the lab's fence), opted in like ``pytest -p``."""
        for name in inventory.plugins:
            if self.pm.is_blocked(name) or self.pm.has_plugin(name):
                continue
            try:
                module = importlib.import_module(name)
            except ImportError as exc:
                raise ConfigError(f"{inventory.source}: plugins: cannot import '{name}': {exc}") from None
            self.pm.register(module, name=name)

    @cached_property
    def engine(self) -> Engine:
        return Engine(self.pm, self.journal, app=self)

    @cached_property
    def jobs(self) -> Jobs:
        """The one front door for starting, cancelling and approving jobs."""
        return Jobs(self)

    def runbook_paths(self) -> dict[str, Path]:
        """Every registered runbook, by name; the core's own first, then plugins' in order."""
        found: dict[str, Path] = {}
        for directory in runbook_dirs(self.pm):
            for path in sorted(Path(directory).glob("*.yaml")):
                found.setdefault(path.stem, path)
        return found

    def runbook(self, name: str) -> Runbook:
        """A registered runbook by name. Files are for the CLI alone (:meth:`runbook_file`)."""
        known = self.runbook_paths()
        if name not in known:
            raise ConfigError(f"unknown runbook '{name}'{suggest(name, known)}; known: {', '.join(known) or 'none'}")
        return load_runbook(known[name])

    def runbook_file(self, name_or_path: str) -> Runbook:
        """A runbook by name, or from a YAML file (the CLI's ``evac run FILE``)."""
        path = Path(name_or_path)
        if path.suffix in (".yaml", ".yml") or path.exists():
            if not path.exists():
                raise ConfigError(f"{path}: no such runbook file")
            return load_runbook(path)
        return self.runbook(name_or_path)

    def host_names(self) -> list[str] | None:
        """Inventory host names, or None where no inventory exists (params of type host go unchecked)."""
        if not self.inventory_path.exists():
            return None
        return [h.name for h in self.inventory.hosts]
