"""A target a guest failed to reach is remembered in the journal, per job and guest, with why.

A retry of ``vm.live_migrate`` picks another host, also when the retry runs in another
process (``evac resume`` after a crash); the report names every target that failed and
why; and once the guest lands nothing of it is left behind.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from evac.actions import StepContext
from evac.app import App
from evac.errors import MigrationError
from evac.hypervisor import Hypervisor
from evac.model import Guest
from evac.placement import HostView
from evac.plugins import plugin_manager
from evac.states import JobState
from evac_plugins import migrate

HOSTS = ("host1", "host2", "host3")


class FakeFleet:
    """Where each guest runs, and which targets refuse incoming migrations (and why)."""

    def __init__(self) -> None:
        self.guests: dict[str, dict[str, str]] = {
            "host1": {"web1": "running", "db1": "running"},
            "host2": {},
            "host3": {},
        }
        self.refusing: dict[str, str] = {}

    def connect(self, name: str, uri: str, *_a: object, **_k: object) -> FakeHypervisor:
        return FakeHypervisor(self, name)

    def views(self, _app: App) -> list[HostView]:
        return [
            HostView(host, "up", 8192, 8, tuple(self.guest(host, g) for g in guests))
            for host, guests in self.guests.items()
        ]

    def guest(self, host: str, name: str) -> Guest:
        return Guest(name, f"uuid-{name}", host, self.guests[host][name], 512, 1, True)


class FakeHypervisor:
    def __init__(self, fleet: FakeFleet, name: str) -> None:
        self.fleet, self.name = fleet, name

    def __enter__(self) -> FakeHypervisor:
        return self

    def __exit__(self, *_exc: object) -> None: ...

    def has_guest(self, name: str) -> bool:
        return name in self.fleet.guests[self.name]

    def guest(self, name: str, _is_shared: object = None) -> Guest:
        return self.fleet.guest(self.name, name)

    def live_migrate(self, name: str, uri: str, _params: object, _flags: object, keep_source: bool = True) -> None:
        target = uri.split("//")[1].split("/")[0]
        if target in self.fleet.refusing:
            raise MigrationError(self.fleet.refusing[target])
        self.fleet.guests[target][name] = "running"
        self.fleet.guests[self.name][name] = "shutoff"

    def undefine(self, name: str) -> None:
        del self.fleet.guests[self.name][name]

    def job_stats(self, _name: str) -> dict[str, Any]:
        return {}

    def completed_stats(self, _name: str) -> dict[str, Any]:
        return {"downtime": 20, "memory_processed": 1024, "memory_iteration": 1}


@pytest.fixture
def fake_fleet(monkeypatch: pytest.MonkeyPatch) -> FakeFleet:
    fake = FakeFleet()
    monkeypatch.setattr(Hypervisor, "connect", fake.connect)
    monkeypatch.setattr(migrate, "views", fake.views)
    return fake


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "hosts.yaml"
    path.write_text("hosts:\n" + "".join(f"  - {{name: {h}, uri: 'qemu+tcp://{h}/system'}}\n" for h in HOSTS))
    return path


@pytest.fixture
def process(
    inventory: Path, tmp_path: Path, fake_fleet: FakeFleet, monkeypatch: pytest.MonkeyPatch
) -> Callable[[], App]:
    """A fresh evac process on the same journal file: the plugin module loaded anew (whatever
    it kept in memory is gone) and a new App; only the journal carries over."""

    def start() -> App:
        importlib.reload(migrate)
        monkeypatch.setattr(migrate, "views", fake_fleet.views)
        pm = plugin_manager(load_entrypoints=False, modules=["evac_plugins.migrate"])
        return App(inventory_path=inventory, journal_path=tmp_path / "journal.db", pm=pm)

    return start


def migrate_step(app: App, job_id: int, guest: str = "web1", target: str = "host2") -> dict[str, Any]:
    """One attempt of the step ``vm.live_migrate``, as the engine runs it."""
    ctx = StepContext(
        job_id=job_id,
        step="migrate",
        inputs={"guest": guest, "source": "host1", "target": target},
        params={},
        app=app,
    )
    return dict(migrate.migrate(ctx))


def new_job(app: App) -> int:
    return app.journal.create_job("drain", "test", {"host": "host1"}, "host1", False, None)


def failed_targets(app: App, job_id: int, guest: str = "web1") -> dict[str, str]:
    targets: dict[str, str] = migrate.FailedTargets(app.journal, job_id, guest).load()
    return targets


def test_a_resumed_job_does_not_retry_a_target_that_already_failed(
    fake_fleet: FakeFleet, process: Callable[[], App]
) -> None:
    first = process()
    job = new_job(first)
    fake_fleet.refusing["host2"] = "unable to connect to host2: connection refused"
    with pytest.raises(MigrationError, match="host2: connection refused"):
        migrate_step(first, job, target="host2")

    resumed = process()  # the first process died; `evac resume` runs the step again
    landed = migrate_step(resumed, job, target="host2")

    assert landed["target"] == "host3"
    assert "web1" in fake_fleet.guests["host3"] and "web1" not in fake_fleet.guests["host1"]


def test_the_report_says_why_each_target_failed_across_processes(
    fake_fleet: FakeFleet, process: Callable[[], App]
) -> None:
    fake_fleet.refusing = {"host2": "host2 disk full", "host3": "host3 cpu model mismatch"}
    job = new_job(process())
    for target in ("host2", "host3"):
        with pytest.raises(MigrationError):
            migrate_step(process(), job, target=target)

    with pytest.raises(MigrationError) as last:
        migrate_step(process(), job, target="host2")

    assert "host2 failed: host2 disk full" in str(last.value)
    assert "host3 failed: host3 cpu model mismatch" in str(last.value)


def test_failed_targets_are_kept_in_the_journal_with_their_cause(
    fake_fleet: FakeFleet, process: Callable[[], App]
) -> None:
    fake_fleet.refusing["host2"] = "host2 disk full"
    app = process()
    job = new_job(app)
    with pytest.raises(MigrationError):
        migrate_step(app, job)

    assert failed_targets(process(), job) == {"host2": "web1: host2 disk full"}


def test_failed_targets_belong_to_one_job_and_one_guest(fake_fleet: FakeFleet, process: Callable[[], App]) -> None:
    fake_fleet.refusing["host2"] = "host2 disk full"
    app = process()
    job, other_job = new_job(app), new_job(app)
    with pytest.raises(MigrationError):
        migrate_step(app, job)

    assert failed_targets(app, job, "db1") == {}
    assert failed_targets(app, other_job, "web1") == {}


def test_a_landed_guest_leaves_no_failed_targets_behind(fake_fleet: FakeFleet, process: Callable[[], App]) -> None:
    fake_fleet.refusing["host2"] = "host2 disk full"
    app = process()
    job = new_job(app)
    with pytest.raises(MigrationError):
        migrate_step(app, job)

    migrate_step(process(), job)

    assert failed_targets(app, job) == {}
    assert not app.journal.recall(f"failed-targets:{job}:web1")


def test_a_guest_found_already_landed_clears_its_failed_targets(
    fake_fleet: FakeFleet, process: Callable[[], App]
) -> None:
    app = process()
    job = new_job(app)
    migrate.FailedTargets(app.journal, job, "web1").add("host3", "web1: host3 disk full")
    fake_fleet.guests["host2"]["web1"] = fake_fleet.guests["host1"].pop("web1")  # landed, then the process died

    assert migrate_step(process(), job)["already"] is True
    assert failed_targets(app, job) == {}


def test_migrate_keeps_no_state_in_module_globals() -> None:
    mutable = {
        name
        for name, value in vars(migrate).items()
        if not name.startswith("__") and isinstance(value, dict | list | set | bytearray)
    }
    assert not hasattr(migrate, "FAILED_TARGETS")
    assert mutable == set()


def test_a_job_that_ends_without_its_guest_landing_leaves_no_failed_targets_behind(
    fake_fleet: FakeFleet, process: Callable[[], App]
) -> None:
    fake_fleet.refusing["host2"] = "host2 disk full"
    app = process()
    job = new_job(app)
    with pytest.raises(MigrationError):
        migrate_step(app, job)

    app.journal.finish_job(job, JobState.FAILED, "gave up")

    assert failed_targets(process(), job) == {}
