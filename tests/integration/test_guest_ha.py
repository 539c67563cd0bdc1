"""VM-level HA on the real lab: a guest whose QEMU is killed runs again, in place first,
then on another host, and never twice; libvirt's own event says why it went down."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from evac.app import App
from evac.engine import JobResult
from evac.hypervisor import Hypervisor
from evac.inventory import Inventory
from evac.lab.guests import qemu_pids
from evac.states import JobState
from evac_plugins import guestha
from tests.integration.conftest import placements, qemu_processes


def qemu_pid(name: str) -> int:
    """The pid of the QEMU running this guest."""
    pids = qemu_pids(name)
    assert pids, f"no QEMU runs {name}"
    return pids[0]


@dataclass(frozen=True)
class Down:
    host: str
    guest: str
    reason: str
    at: float = field(default_factory=time.monotonic)


class Downs:
    """Every lab host's ``on_guest_down`` reports, in the order they came."""

    def __init__(self) -> None:
        self.reports: list[Down] = []
        self.cond = threading.Condition()

    def report(self, host: str) -> Callable[[str, str], None]:
        def fire(guest: str, reason: str) -> None:
            with self.cond:
                self.reports.append(Down(host, guest, reason))
                self.cond.notify_all()

        return fire

    def wait(self, test: Callable[[], bool], timeout: float = 30) -> None:
        with self.cond:
            assert self.cond.wait_for(test, timeout), f"timed out; reports so far: {self.reports}"

    def next_down(self, guest: str, after: int) -> Down:
        """The first report about ``guest`` beyond the first ``after`` reports about it."""
        self.wait(lambda: len(self.of(guest)) > after)
        return self.of(guest)[after]

    def of(self, guest: str) -> list[Down]:
        return [d for d in self.reports if d.guest == guest]


@pytest.fixture
def ha_app(app: App) -> App:
    """The lab's app with the guest-HA plugin (registered directly, as tests do)."""
    if not app.pm.is_registered(guestha):  # until it is an entry point (or $EVAC_PLUGINS names it)
        app.pm.register(guestha, name="guestha")
    return app


@pytest.fixture
def downs(inventory: Inventory) -> Iterator[Downs]:
    """Subscribed to every lab host's guest-down reports."""
    seen = Downs()
    connections = [Hypervisor.connect(spec.name, spec.uri) for spec in inventory.hosts]
    try:
        for hv in connections:
            hv.on_guest_down(seen.report(hv.name))
        yield seen
    finally:
        for hv in connections:
            hv.close()


def kill_and_recover(app: App, downs: Downs, name: str) -> tuple[Down, JobResult]:
    """``kill -9`` the guest's QEMU; hand libvirt's report to the front door; run its job."""
    before = len(downs.of(name))
    killed = time.monotonic()
    os.kill(qemu_pid(name), signal.SIGKILL)
    down = downs.next_down(name, before)
    started = app.jobs.guest_failed(down.host, down.guest, down.reason)
    assert started is not None
    result = app.jobs.run(started)
    print(f"{name}: kill -9 to {started.params['action']} done: {time.monotonic() - killed:.2f} s")
    return down, result


def test_a_killed_qemu_is_reported_failed_and_its_guest_restarted_in_place(
    ha_app: App, downs: Downs, make_guest: Callable[..., str], inventory: Inventory
) -> None:
    name = make_guest("host1", wait=False)
    old = qemu_pid(name)
    down, result = kill_and_recover(ha_app, downs, name)
    assert (down.host, down.reason) == ("host1", "failed")
    assert result.state == JobState.SUCCEEDED, result.error
    assert result.outputs["report"]["summary"] == f"{name} restarted in place on host1 (restart 1 of 1 within 1 h)"
    assert placements(inventory, name) == {"host1": ("running", True)}
    assert qemu_processes(name) == 1 and qemu_pid(name) != old


def test_a_guest_killed_once_more_than_max_restart_is_relocated_and_runs_once(
    ha_app: App, downs: Downs, make_guest: Callable[..., str], inventory: Inventory
) -> None:
    name = make_guest("host1", wait=False)
    _, first = kill_and_recover(ha_app, downs, name)
    assert first.outputs["report"]["summary"].startswith(f"{name} restarted in place on host1")
    _, second = kill_and_recover(ha_app, downs, name)
    assert second.state == JobState.SUCCEEDED, second.error
    target = second.outputs["relocate"]["target"]
    assert target in ("host2", "host3")
    assert second.outputs["report"]["summary"] == (
        f"{name} relocated from host1 to {target} (relocation 1 of 1 within 1 h, after 1 restart)"
    )
    assert placements(inventory, name) == {target: ("running", True)}  # undefined on host1
    assert qemu_processes(name) == 1


def test_a_guest_killed_past_every_limit_is_left_stopped(
    ha_app: App, downs: Downs, make_guest: Callable[..., str], inventory: Inventory
) -> None:
    name = make_guest("host1", wait=False)
    kill_and_recover(ha_app, downs, name)
    _, relocated = kill_and_recover(ha_app, downs, name)
    target = relocated.outputs["relocate"]["target"]
    before = len(downs.of(name))
    os.kill(qemu_pid(name), signal.SIGKILL)
    down = downs.next_down(name, before)
    assert ha_app.jobs.guest_failed(down.host, name, down.reason) is None
    assert placements(inventory, name) == {target: ("crashed", True)}
    assert qemu_processes(name) == 0
    assert [a.target for a in ha_app.journal.audit_log() if a.action == "guest.left_stopped"] == [name]


def test_a_destroyed_guest_is_not_reported_down(
    downs: Downs, make_guest: Callable[..., str], inventory: Inventory
) -> None:
    name = make_guest("host1", wait=False)
    with Hypervisor.connect("host1", inventory.host("host1").uri) as hv:
        hv.destroy(name)
        hv.start(name)
    killed = time.monotonic()
    os.kill(qemu_pid(name), signal.SIGKILL)
    # One connection's events come in order: a report of the destroy would come first.
    assert downs.next_down(name, 0).at > killed


def test_a_periodic_check_reads_a_killed_guest_as_stopped_by_a_fault_and_a_destroyed_one_not(
    downs: Downs, make_guest: Callable[..., str], inventory: Inventory
) -> None:
    name = make_guest("host1", wait=False)
    with Hypervisor.connect("host1", inventory.host("host1").uri) as hv:
        os.kill(qemu_pid(name), signal.SIGKILL)
        downs.next_down(name, 0)
        assert hv.guest_stop_reason(name) in ("failed", "crashed")  # libvirt 9.0 reads crashed
        hv.start(name)
        hv.destroy(name)
        assert hv.guest_stop_reason(name) is None
