"""A pytest plugin for plugin authors: run a runbook against an in-memory journal and a fake fleet.

Opt in the way pytest's own ``pytester`` is enabled, in a ``conftest.py`` or test module::

    pytest_plugins = ["evac.testing"]

(or ``pytest -p evac.testing``). Then::

    @pytest.fixture
    def evac_plugins():
        return [my_plugin]  # modules or objects with @hookimpl functions; "drain" loads a built-in


    def test_greets(run_runbook):
        result = run_runbook("name: t\\nsteps:\\n  - {id: a, action: hello.greet, with: {who: ops}}\\n")
        assert result.state == "succeeded"
        assert result.outputs["a"] == {"greeted": "ops"}
        assert "progress" in result.kinds()

Fixtures: ``evac_plugins`` (override it: the plugins under test), ``evac_pm`` (a plugin
manager without entry points, with ``evac_plugins`` registered), ``evac_journal`` (an
in-memory SQLite journal), ``evac_fleet`` (a :class:`FakeFleet`; while it is in use
``Hypervisor.connect`` reaches it instead of libvirt), ``evac_kit`` (an :class:`EvacKit`
tying them together) and ``run_runbook`` (``evac_kit.run``).

The fake fleet covers what planning reads: hosts (up or unreachable) with memory and CPUs,
their guests (state, memory, vCPUs, disks on shared storage or local), ``guest()`` and
``has_guest()`` for checks like ``vm.verify``, and the snapshots the service would have
taken (so ``vm.plan_restart`` plans a failover). So the built-in ``maintenance`` and
``host-failure`` runbooks run in ``dry_run=True``, and ``host.disable``/``host.enable`` also
for real. It does not migrate, start, fence or stream migration statistics: an action that
does those needs its own fake.
"""

from __future__ import annotations

import importlib
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pluggy
import pytest

from .app import App
from .engine import Engine, JobResult
from .errors import HostUnreachable, NotFound
from .events import Event
from .hooks import NAME
from .hypervisor import Hypervisor
from .inventory import HostSpec, Inventory
from .journal import Journal
from .model import ACTIVE, Capacity, Disk, Guest
from .params import parse_cli_params
from .plugins import plugin_manager
from .runbook import Runbook, bind_params, load_runbook, parse_runbook
from .sqlitejournal import SqliteJournal
from .yamldoc import load_text

__all__ = [
    "Background",
    "EvacKit",
    "FakeFleet",
    "FakeHypervisor",
    "RunResult",
    "make_engine",
    "make_plugin_manager",
    "runbook_from_text",
]

SHARED = "/srv/shared"


# ---------------------------------------------------------------- building blocks
def runbook_from_text(text: str, source: str = "rb.yaml") -> Runbook:
    """A runbook parsed from YAML text; errors name ``source`` and the line."""
    return parse_runbook(load_text(text, source), source)


def make_plugin_manager(*plugins: object) -> pluggy.PluginManager:
    """A plugin manager without entry points, with ``plugins`` registered.

    A plugin is an object or module with ``@hookimpl`` functions, or a string: the name of
    an entry point in the ``evac`` group (``"drain"`` loads the built-in drain plugin), else
    a module's import name.
    """
    pm = plugin_manager(load_entrypoints=False)
    for plugin in plugins:
        if isinstance(plugin, str):
            pm.register(_load(plugin), name=plugin)
        else:
            pm.register(plugin)
    return pm


def _load(name: str) -> object:
    for entry in entry_points(group=NAME, name=name):
        return entry.load()
    return importlib.import_module(name)


def make_engine(
    pm: pluggy.PluginManager,
    journal: Journal,
    app: App | None = None,
    sleep: Callable[[float], None] | None = None,
) -> Engine:
    """An engine that never really sleeps between retries and notices a cancel quickly."""
    return Engine(pm, journal, app=app, sleep=sleep or (lambda _s: None), poll_interval=0.01)


class Background:
    """A job running on its own thread, so a test can act on it meanwhile (cancel, approve)."""

    def __init__(self, eng: Engine, book: Runbook, params: dict[str, Any] | None = None) -> None:
        self.job_id = eng.submit(book, params or {})
        self.results: list[Any] = []
        self.thread = threading.Thread(target=lambda: self.results.append(eng.run(self.job_id, book)))
        self.thread.start()

    def result(self, timeout: float = 5) -> Any:
        self.thread.join(timeout)
        return self.results[0]


@dataclass
class RunResult(JobResult):
    """A finished job: ``state``, ``error``, ``outputs`` (by step id) and its ``events``."""

    events: list[Event] = field(default_factory=list)

    def kinds(self) -> list[str]:
        return [str(e.kind) for e in self.events]

    def messages(self, kind: str = "progress") -> list[str]:
        """The messages of every event of ``kind`` (default: what actions reported with ``ctx.progress``)."""
        return [e.message for e in self.events if e.kind == kind]


# ---------------------------------------------------------------- the fake fleet
@dataclass
class FakeHost:
    name: str
    memory_mib: int
    cpus: int
    up: bool = True
    spare: bool = False
    tags: tuple[str, ...] = ()
    reserved_memory_mib: int = 0
    guests: dict[str, Guest] = field(default_factory=dict)
    postcopy_sources: set[str] = field(default_factory=set)  # paused guests whose post-copy migration left them

    @property
    def spec(self) -> HostSpec:
        return HostSpec(
            name=self.name,
            uri=f"qemu:///system?fake={self.name}",  # no host part: nothing probes the network
            tags=self.tags,
            spare=self.spare,
            reserved_memory_mib=self.reserved_memory_mib,
        )


class FakeFleet:
    """Hosts and guests in memory, served to evac through the hypervisor adapter.

    ``add_host("kvm1", memory_mib=16384)``, ``add_guest("kvm1", "web1", memory_mib=2048)``;
    ``inventory`` is the matching inventory (shared storage at ``/srv/shared``).
    """

    def __init__(self) -> None:
        self.hosts: dict[str, FakeHost] = {}
        self.lock = threading.Lock()

    def add_host(
        self,
        name: str,
        memory_mib: int = 16384,
        cpus: int = 8,
        *,
        up: bool = True,
        spare: bool = False,
        tags: Sequence[str] = (),
        reserved_memory_mib: int = 0,
    ) -> HostSpec:
        host = FakeHost(name, memory_mib, cpus, up, spare, tuple(tags), reserved_memory_mib)
        self.hosts[name] = host
        return host.spec

    def add_guest(
        self,
        host: str,
        name: str,
        memory_mib: int = 1024,
        vcpus: int = 1,
        *,
        state: str = "running",
        local_disk: bool = False,
        priority: int = 0,
        anti_affinity: Sequence[str] = (),
    ) -> Guest:
        """A guest on ``host``; its disk is on shared storage unless ``local_disk``."""
        path = f"/var/lib/libvirt/images/{name}.qcow2" if local_disk else f"{SHARED}/{name}.qcow2"
        guest = Guest(
            name=name,
            uuid=f"00000000-0000-4000-8000-{zlib.crc32(name.encode()):012x}",
            host=host,
            state=state,
            memory_mib=memory_mib,
            vcpus=vcpus,
            persistent=True,
            disks=(Disk("vda", path, "file", shared=not local_disk),),
            priority=priority,
            anti_affinity=tuple(anti_affinity),
        )
        self.hosts[host].guests[name] = guest
        return guest

    def move_guest(self, name: str, target: str) -> None:
        """Put a guest on another host (what a migration or restart would have done)."""
        with self.lock:
            for host in self.hosts.values():
                guest = host.guests.pop(name, None)
                if guest is not None:
                    self.hosts[target].guests[name] = replace(guest, host=target)
                    return
        raise NotFound(f"no guest {name}")

    @property
    def inventory(self) -> Inventory:
        return Inventory(hosts=tuple(h.spec for h in self.hosts.values()), shared_storage=(SHARED,), source="fake")

    def connect(self, name: str, uri: str = "", keepalive: tuple[int, int] | None = None) -> FakeHypervisor:
        """Stands in for ``Hypervisor.connect``; an unknown or down host is unreachable."""
        host = self.hosts.get(name)
        if host is None or not host.up:
            raise HostUnreachable(f"{name}: cannot connect to the hypervisor (fake fleet: host down)")
        return FakeHypervisor(self, host)

    def save_definitions(self, journal: Journal) -> None:
        """Record every running guest's definition, as the monitor does while a host is up."""
        for host in self.hosts.values():
            running = {g.name: domain_xml(g) for g in host.guests.values() if g.state in ACTIVE}
            journal.save_definitions(host.name, running)


class FakeHypervisor:
    """The part of :class:`evac.hypervisor.Hypervisor` that planning and checks read, and
    the cleaning of a fenced host (``destroy``, ``undefine``)."""

    def __init__(self, fleet: FakeFleet, host: FakeHost) -> None:
        self.fleet = fleet
        self.host = host
        self.name = host.name

    def __enter__(self) -> FakeHypervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        pass

    def alive(self) -> bool:
        return self.host.up

    def capacity(self) -> Capacity:
        used = sum(g.memory_mib for g in self.host.guests.values() if g.state in ACTIVE)
        return Capacity(self.host.memory_mib, max(0, self.host.memory_mib - used), self.host.cpus)

    def guests(self, is_shared: Callable[[str | None], bool] = lambda _p: False) -> tuple[Guest, ...]:
        return tuple(sorted(self.host.guests.values(), key=lambda g: g.name))

    def guest(self, name: str, is_shared: Callable[[str | None], bool] = lambda _p: False) -> Guest:
        try:
            return self.host.guests[name]
        except KeyError:
            raise NotFound(f"{self.name}: no guest {name}") from None

    def has_guest(self, name: str) -> bool:
        return name in self.host.guests

    def domain_xml(self, name: str, migratable: bool = True, inactive: bool = False) -> str:
        return domain_xml(self.guest(name))

    def postcopy_source(self, name: str) -> bool:
        self.guest(name)
        return name in self.host.postcopy_sources

    def destroy(self, name: str) -> None:
        self.host.guests[name] = replace(self.guest(name), state="shutoff")
        self.host.postcopy_sources.discard(name)

    def undefine(self, name: str) -> None:
        self.guest(name)
        del self.host.guests[name]

    def set_guest_metadata(self, name: str, attribute: str, value: str | None) -> None:
        """What ``evac ha protect`` writes: ``ha-protected`` changes the guest's membership;
        other attributes are not modelled."""
        guest = self.guest(name)
        if attribute == "ha-protected":
            protected = None if value is None else value == "yes"
            self.host.guests[name] = replace(guest, rules=replace(guest.rules, protected=protected))


def domain_xml(guest: Guest) -> str:
    """A minimal libvirt domain definition of ``guest`` (what ``evac.domainxml`` reads back)."""
    disks = "".join(
        f"<disk type='file' device='disk'><source file='{escape(d.path or '')}'/><target dev='{d.target}'/></disk>"
        for d in guest.disks
    )
    return (
        f"<domain type='kvm'><name>{escape(guest.name)}</name><uuid>{guest.uuid}</uuid>"
        f"<memory unit='MiB'>{guest.memory_mib}</memory><vcpu>{guest.vcpus}</vcpu>"
        f"<devices>{disks}</devices></domain>"
    )


# ---------------------------------------------------------------- the kit
class EvacKit:
    """A plugin manager, a journal and a fake fleet, assembled like ``evac.app.App`` does."""

    def __init__(self, pm: pluggy.PluginManager, journal: Journal, fleet: FakeFleet, workdir: Path) -> None:
        self.pm = pm
        self.journal = journal
        self.fleet = fleet
        self.workdir = workdir

    @property
    def app(self) -> App:
        """An ``App`` whose inventory is the fake fleet's and whose journal is this kit's."""
        app = App(inventory_path=self.workdir / "hosts.yaml", journal_path=self.workdir / "journal.db", pm=self.pm)
        app.__dict__["journal"] = self.journal  # the cached properties, filled in
        app.__dict__["inventory"] = self.fleet.inventory
        app.__dict__["engine"] = make_engine(self.pm, self.journal, app)
        return app

    def runbook(self, text_or_path: str | Path) -> Runbook:
        """A runbook from YAML text, a ``.yaml`` path, or a name ``evac runbook list`` knows."""
        if isinstance(text_or_path, Path):
            return load_runbook(text_or_path)
        if "\n" in text_or_path or ":" in text_or_path:
            return runbook_from_text(text_or_path, "runbook.yaml")
        return self.app.runbook(text_or_path)  # a name, or a path given as text

    def run(
        self,
        text_or_path: str | Path,
        params: Mapping[str, Any] | Iterable[str] | None = None,
        *,
        dry_run: bool = False,
        target: str = "",
    ) -> RunResult:
        """Run a runbook to its end and return its state, outputs and events.

        ``params`` is a mapping of values (checked and typed by the runbook's ``params``)
        or ``KEY=VALUE`` strings read as ``evac run -p`` reads them.
        """
        book = self.runbook(text_or_path)
        if params is None:
            given: dict[str, Any] = {}
        elif isinstance(params, Mapping):
            given = dict(params)
        else:
            given = parse_cli_params(book, list(params))
        self.fleet.save_definitions(self.journal)
        hosts = list(self.fleet.hosts) or None
        app = self.app
        result = app.engine.execute(book, bind_params(book, given, hosts), target=target, dry_run=dry_run)
        events = [event for _, event in self.journal.events(result.job_id)]
        return RunResult(result.job_id, result.state, result.error, result.outputs, events)


# ---------------------------------------------------------------- fixtures
@pytest.fixture
def evac_plugins() -> list[object]:
    """The plugins under test: override this fixture (modules, objects, or entry-point names)."""
    return []


@pytest.fixture
def evac_pm(evac_plugins: list[object]) -> pluggy.PluginManager:
    """A plugin manager without entry points, with ``evac_plugins`` registered."""
    return make_plugin_manager(*evac_plugins)


@pytest.fixture
def evac_journal() -> Iterator[SqliteJournal]:
    """An in-memory journal (SQLite ``:memory:``), gone after the test."""
    journal = SqliteJournal(":memory:")
    yield journal
    journal.close()


@pytest.fixture
def evac_fleet(monkeypatch: pytest.MonkeyPatch) -> FakeFleet:
    """An empty :class:`FakeFleet`; ``Hypervisor.connect`` reaches it, never libvirt."""
    fleet = FakeFleet()
    monkeypatch.setattr(Hypervisor, "connect", staticmethod(fleet.connect))
    return fleet


@pytest.fixture
def evac_kit(
    evac_pm: pluggy.PluginManager, evac_journal: SqliteJournal, evac_fleet: FakeFleet, tmp_path: Path
) -> EvacKit:
    return EvacKit(evac_pm, evac_journal, evac_fleet, tmp_path)


@pytest.fixture
def run_runbook(evac_kit: EvacKit) -> Callable[..., RunResult]:
    """``run_runbook(text_or_path_or_name, params=None, dry_run=False, target="") -> RunResult``."""
    return evac_kit.run
