"""A job's connections: one libvirt connection per host for the whole job, shared by its
steps and their threads, closed when the job ends; a dead one is replaced, never reused.

Sharing and closing are specified on libvirt's test driver (real connections); a
connection that dies needs a stand-in, since the test driver's never do.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from evac import Action, hookimpl
from evac.actions import StepContext
from evac.connections import HOLDERS_PER_CONNECTION, Connections, current
from evac.errors import EvacError, HostUnreachable, Interrupted, MigrationError
from evac.hypervisor import Hypervisor
from evac.inventory import HostSpec, SshSpec
from evac.sqlitejournal import SqliteJournal
from evac.states import JobState
from evac.testing import make_engine, make_plugin_manager, runbook_from_text

H1 = HostSpec("host1", "test:///default", ssh=SshSpec("198.51.100.1"))
H2 = HostSpec("host2", "test:///default", ssh=SshSpec("198.51.100.2"))
LIBVIRT = Hypervisor.connect  # the real one, before a test puts ``Opened`` in its place


class Opened:
    """A ``connect`` that opens real test-driver connections and keeps every one it opened."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connections: list[Hypervisor] = []

    def __call__(self, name: str, uri: str, keepalive: tuple[int, int] | None = None) -> Hypervisor:
        hv = LIBVIRT(name, uri, keepalive=None)  # the test driver has no keepalive
        with self.lock:
            self.connections.append(hv)
        return hv

    def hosts(self) -> list[str]:
        return sorted(hv.name for hv in self.connections)

    def open(self) -> list[Hypervisor]:
        return [hv for hv in self.connections if hv.alive()]


class Line:
    """A connection that can die, as a real one does on keepalive or EOF."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.up = True
        self.closed = False

    def alive(self) -> bool:
        return self.up and not self.closed

    def close(self) -> None:
        self.closed = True

    def has_guest(self, _name: str) -> bool:
        if not self.up:
            raise HostUnreachable(f"{self.name}: connection closed")
        return True


class Lines:
    def __init__(self) -> None:
        self.opened: list[Line] = []
        self.refuse = False

    def __call__(self, name: str, _uri: str) -> Any:
        if self.refuse:
            raise HostUnreachable(f"{name}: cannot connect")
        self.opened.append(Line(name))
        return self.opened[-1]


@pytest.fixture
def opened() -> Opened:
    return Opened()


def hold_together(connections: Connections, host: HostSpec, holders: int) -> list[Hypervisor]:
    """``holders`` threads in :meth:`Connections.use` of one host at the same moment."""
    together = threading.Barrier(holders, timeout=30)
    handed: list[Hypervisor] = []

    def hold() -> None:
        with connections.use(host) as hv:
            handed.append(hv)
            together.wait()

    threads = [threading.Thread(target=hold) for _ in range(holders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return handed


# ---------------------------------------------------------------- sharing
def test_parallel_users_of_one_host_share_one_connection(opened: Opened) -> None:
    connections = Connections(connect=opened)
    handed = hold_together(connections, H1, HOLDERS_PER_CONNECTION)
    assert len(handed) == HOLDERS_PER_CONNECTION
    assert len(opened.connections) == 1 and connections.opened == 1


def test_a_host_gets_a_second_connection_only_while_its_first_is_full(opened: Opened) -> None:
    connections = Connections(connect=opened)
    hold_together(connections, H1, HOLDERS_PER_CONNECTION + 1)
    with connections.use(H1):
        pass
    assert opened.hosts() == ["host1", "host1"]


def test_later_uses_reuse_the_connection_of_each_host(opened: Opened) -> None:
    connections = Connections(connect=opened)
    for host in (H1, H2, H1, H2, H1):
        with connections.use(host) as hv:
            assert hv.name == host.name
    assert opened.hosts() == ["host1", "host2"]


def test_an_error_on_a_live_connection_keeps_the_connection(opened: Opened) -> None:
    connections = Connections(connect=opened)
    with pytest.raises(MigrationError), connections.use(H1):
        raise MigrationError("g: target refused")
    with connections.use(H1):
        pass
    assert len(opened.connections) == 1


# ---------------------------------------------------------------- dead connections
def test_a_dead_connection_is_closed_and_replaced_by_a_new_one() -> None:
    lines = Lines()
    connections = Connections(connect=lines)
    with connections.use(H1):
        pass
    lines.opened[0].up = False
    with connections.use(H1) as hv:
        assert hv.has_guest("web1")
    assert len(lines.opened) == 2 and lines.opened[0].closed and not lines.opened[1].closed


def test_a_connection_that_dies_during_a_call_is_never_handed_out_again() -> None:
    lines = Lines()
    connections = Connections(connect=lines)
    with pytest.raises(HostUnreachable), connections.use(H1) as hv:
        lines.opened[0].up = False
        hv.has_guest("web1")
    with connections.use(H1) as hv:
        assert hv.has_guest("web1")
    assert len(lines.opened) == 2 and lines.opened[0].closed


def test_a_dead_connection_is_reopened_once_and_a_refused_reopening_is_the_callers_error() -> None:
    lines = Lines()
    connections = Connections(connect=lines)
    with connections.use(H1):
        pass
    lines.opened[0].up = False
    lines.refuse = True
    with pytest.raises(HostUnreachable, match="cannot connect"), connections.use(H1):
        pass
    assert len(lines.opened) == 1 and lines.opened[0].closed


# ---------------------------------------------------------------- the end of a job
def test_closing_closes_every_connection(opened: Opened) -> None:
    connections = Connections(connect=opened)
    for host in (H1, H2):
        with connections.use(host):
            pass
    connections.close()
    assert len(opened.connections) == 2 and opened.open() == []


def test_a_connection_still_held_when_the_job_ends_closes_when_let_go(opened: Opened) -> None:
    connections = Connections(connect=opened)
    with connections.use(H1) as hv:
        connections.close()
        assert hv.alive()
    assert opened.open() == []


def test_after_the_job_ended_each_use_opens_and_closes_its_own_connection(opened: Opened) -> None:
    connections = Connections(connect=opened)
    connections.close()
    with connections.use(H1) as hv:
        assert hv.alive()
    assert len(opened.connections) == 1 and opened.open() == []


def test_outside_a_job_each_use_opens_and_closes_its_own_connection(
    opened: Opened, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Hypervisor, "connect", staticmethod(opened))
    for _ in range(2):
        with current().use(H1) as hv:
            assert hv.alive()
    assert len(opened.connections) == 2 and opened.open() == []


def test_a_jobs_connections_are_current_only_inside_its_block() -> None:
    connections = Connections()
    with connections.as_current():
        assert current() is connections
    assert current() is not connections and not current().keep


# ---------------------------------------------------------------- bridges
class Ssh:
    """``evac.remote.bridges`` without SSH: counts reads per host; ``down`` hosts fail."""

    def __init__(self) -> None:
        self.reads: list[str] = []
        self.down: set[str] = set()

    def __call__(self, spec: SshSpec, max_age: float = 30.0) -> dict[str, int]:
        self.reads.append(spec.host)
        if spec.host in self.down:
            raise HostUnreachable(f"{spec.host}: ssh: timed out")
        return {"br0": 1500}


@pytest.fixture
def ssh(monkeypatch: pytest.MonkeyPatch) -> Ssh:
    fake = Ssh()
    monkeypatch.setattr("evac.remote.bridges", fake)
    return fake


def test_a_jobs_bridges_are_read_once_per_host(ssh: Ssh) -> None:
    connections = Connections()
    for host in (H1, H2, H1, H1, H2):
        assert connections.bridges(host) == {"br0": 1500}
    assert sorted(ssh.reads) == ["198.51.100.1", "198.51.100.2"]


def test_a_bridge_read_that_failed_is_read_again_next_time(ssh: Ssh) -> None:
    connections = Connections()
    ssh.down.add("198.51.100.1")
    with pytest.raises(HostUnreachable):
        connections.bridges(H1)
    ssh.down.clear()
    assert connections.bridges(H1) == {"br0": 1500}
    assert ssh.reads == ["198.51.100.1", "198.51.100.1"]


def test_outside_a_job_bridges_are_read_every_time(ssh: Ssh) -> None:
    for _ in range(2):
        current().bridges(H1)
    assert ssh.reads == ["198.51.100.1", "198.51.100.1"]


# ---------------------------------------------------------------- through the engine
class Touch:
    """Actions that reach hosts through the job's connections: ``touch.one`` (``host`` input)
    and ``touch.end`` (``how``: return, fail or interrupt)."""

    def __init__(self) -> None:
        self.handed: list[Hypervisor] = []
        self.lock = threading.Lock()

    def one(self, ctx: StepContext) -> Mapping[str, Any]:
        host = H1 if ctx.inputs["host"] == "host1" else H2
        with current().use(host) as hv, self.lock:
            self.handed.append(hv)
        return {}

    def end(self, ctx: StepContext) -> Mapping[str, Any]:
        how = ctx.inputs["how"]
        if how == "fail":
            raise EvacError("the step failed")
        if how == "interrupt":
            raise Interrupted("service stopping")
        return {}

    @hookimpl
    def evac_actions(self) -> list[Action]:
        return [Action("touch.one", self.one), Action("touch.end", self.end)]


JOB = """
name: touch
params: {how: {type: string, default: return}}
steps:
  - {id: first, action: touch.one, with: {host: host1}}
  - id: many
    action: touch.one
    for_each: "{{ ['host1', 'host2', 'host1', 'host2', 'host1', 'host2'] }}"
    concurrency: 3
    with: {host: "{{ item }}"}
  - {id: last, action: touch.one, with: {host: host2}}
  - {id: end, action: touch.end, with: {how: "{{ params.how }}"}}
"""


def run_job(tmp_path: Path, opened: Opened, how: str) -> tuple[Touch, JobState]:
    touch = Touch()
    journal = SqliteJournal(tmp_path / "journal.db")
    try:
        engine = make_engine(make_plugin_manager(touch), journal)
        result = engine.execute(runbook_from_text(JOB), {"how": how})
    finally:
        journal.close()
    return touch, result.state


@pytest.fixture
def real_connect(opened: Opened, monkeypatch: pytest.MonkeyPatch) -> Opened:
    monkeypatch.setattr(Hypervisor, "connect", staticmethod(opened))
    return opened


def test_a_jobs_steps_and_items_share_one_connection_per_host(tmp_path: Path, real_connect: Opened) -> None:
    touch, state = run_job(tmp_path, real_connect, "return")
    assert state == JobState.SUCCEEDED
    assert len(touch.handed) == 8
    assert real_connect.hosts() == ["host1", "host2"]


@pytest.mark.parametrize(
    ("how", "state"),
    [("return", JobState.SUCCEEDED), ("fail", JobState.FAILED), ("interrupt", JobState.INTERRUPTED)],
)
def test_a_jobs_connections_are_closed_when_it_ends(
    tmp_path: Path, real_connect: Opened, how: str, state: JobState
) -> None:
    _, ended = run_job(tmp_path, real_connect, how)
    assert ended == state
    assert len(real_connect.connections) == 2 and real_connect.open() == []


def test_two_jobs_do_not_share_connections(tmp_path: Path, real_connect: Opened) -> None:
    run_job(tmp_path, real_connect, "return")
    run_job(tmp_path, real_connect, "return")
    assert real_connect.hosts() == ["host1", "host1", "host2", "host2"]
