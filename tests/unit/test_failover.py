"""The host-failure actions' own guards: the storm brake read again right before the fence,
and the other hosts asked through the job's connections whether a guest runs there already.

The fence is pressed through a registered fence method (an outlet in memory); the other
hosts are libvirt's test driver (real connections, one shared state that runs a guest
named ``test``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evac import FenceMethod, hookimpl
from evac.actions import StepContext
from evac.app import App
from evac.connections import Connections
from evac.errors import Cancelled, HostUnreachable, TransientError
from evac.events import Event
from evac.hypervisor import Hypervisor
from evac.plugins import plugin_manager
from evac.states import EventKind, HostMode
from evac_plugins.failover import fence, running_somewhere

LIBVIRT = Hypervisor.connect  # the real one, before a test counts the connections it opens


class Outlet:
    def __init__(self) -> None:
        self.state = "on"
        self.pressed = 0

    def power_off(self) -> None:
        self.pressed += 1
        self.state = "off"

    def power_state(self) -> str:
        return self.state


class OutletMethod:
    def __init__(self, outlet: Outlet) -> None:
        self.outlet = outlet

    @hookimpl
    def evac_fence_methods(self) -> list[FenceMethod]:
        return [FenceMethod("outlet", lambda host, settings: self.outlet)]


class Opened:
    """A ``connect`` that opens real test-driver connections, counts them, and refuses the
    hosts in ``refused``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connections: list[Hypervisor] = []
        self.refused: set[str] = set()

    def __call__(self, name: str, uri: str, keepalive: tuple[int, int] | None = None) -> Hypervisor:
        if name in self.refused:
            raise HostUnreachable(f"{name}: cannot connect")
        hv = LIBVIRT(name, uri, keepalive=None)  # the test driver has no keepalive
        with self.lock:
            self.connections.append(hv)
        return hv

    def hosts(self) -> list[str]:
        with self.lock:
            return sorted(hv.name for hv in self.connections)


@pytest.fixture
def outlet() -> Outlet:
    return Outlet()


@pytest.fixture
def app(tmp_path: Path, outlet: Outlet) -> App:
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text(
        "hosts:\n"
        + "".join(f"  - {{name: host{i}, uri: 'test:///default', fence: [{{method: outlet}}]}}\n" for i in (1, 2, 3))
    )
    pm = plugin_manager(load_entrypoints=False)
    pm.register(OutletMethod(outlet))
    return App(inventory_path=inventory, journal_path=tmp_path / "j.db", pm=pm)


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Opened:
    counted = Opened()
    monkeypatch.setattr(Hypervisor, "connect", staticmethod(counted))
    return counted


@pytest.fixture
def hosts(opened: Opened) -> Iterator[Connections]:
    """A job's connections, current in the test (as the engine makes them in a step)."""
    connections = Connections(connect=opened)
    with connections.as_current():
        yield connections
    connections.close()


def step(app: App, step: str, emitted: list[Event] | None = None) -> StepContext:
    job = app.journal.create_job("host-failure", "test", {"host": "host1"}, "host1", False, None)
    sink: list[Event] = [] if emitted is None else emitted
    return StepContext(job_id=job, step=step, inputs={"host": "host1"}, params={}, app=app, emit=sink.append)


# ---------------------------------------------------------------- the storm brake before the fence


def test_the_fence_step_fences_a_host_while_no_brake_is_engaged(app: App, outlet: Outlet) -> None:
    outputs: Any = fence(step(app, "fence"))
    assert (outputs["method"], outlet.state) == ("outlet", "off")
    assert app.journal.host_states()["host1"].state == HostMode.FENCED


def test_a_brake_engaged_after_the_failover_started_stops_it_before_the_fence(app: App, outlet: Outlet) -> None:
    ctx = step(app, "fence")
    app.journal.engage_brake("2 of 3 hosts down within 120 s (host1, host2)")
    with pytest.raises(Cancelled, match=r"^host1 not fenced: the storm brake engaged .*\(2 of 3 hosts down"):
        fence(ctx)
    assert outlet.pressed == 0
    assert "host1" not in app.journal.host_states()


def test_a_failover_the_brake_stopped_is_told_as_the_monitor_tells_a_braked_one(app: App) -> None:
    emitted: list[Event] = []
    ctx = step(app, "fence", emitted)
    app.journal.engage_brake("2 of 3 hosts down within 120 s (host1, host2)")
    with pytest.raises(Cancelled):
        fence(ctx)
    (told,) = emitted
    assert (told.kind, told.job_id, told.item) == (EventKind.MONITOR_STORM_BRAKE, 0, "host1")
    assert told.message == "host1 not failed over: 2 of 3 hosts down within 120 s (host1, host2)"


# ---------------------------------------------------------------- the other hosts, through the job's connections


def test_every_check_asks_each_other_host_through_one_connection(app: App, hosts: Connections, opened: Opened) -> None:
    found = [running_somewhere(app, name, skip="host1") for name in ("test", "gone1", "gone2", "test")]
    assert found == ["host2", None, None, "host2"]
    assert opened.hosts() == ["host2", "host3"]


def test_a_connection_that_dropped_is_opened_again_before_the_check(
    app: App, hosts: Connections, opened: Opened
) -> None:
    with hosts.use(app.inventory.host("host2")) as hv:
        hv.close()
    assert running_somewhere(app, "test", skip="host1") == "host2"
    assert opened.hosts().count("host2") == 2


def test_a_host_that_answers_but_cannot_be_asked_stops_the_restart_until_it_can(
    app: App, hosts: Connections, opened: Opened
) -> None:
    opened.refused.add("host2")
    with pytest.raises(TransientError, match="cannot tell whether it runs on host2"):
        running_somewhere(app, "test", skip="host1")
    opened.refused.clear()
    assert running_somewhere(app, "test", skip="host1") == "host2"


class Doubting:
    """A monitor, as the fence step sees one: in doubt about host2 until told otherwise."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.asked = threading.Event()
        self.decided = threading.Event()

    def in_doubt(self, host: str) -> list[str]:
        self.asked.set()
        return [] if self.decided.is_set() else ["host2"]


def test_the_fence_waits_for_a_host_in_doubt_and_stops_when_its_count_engages_the_brake(
    app: App, outlet: Outlet
) -> None:
    from evac import monitor

    doubting = Doubting(app)
    monitor._RUNNING.add(doubting)  # type: ignore[arg-type]

    def host2_counted() -> None:
        doubting.asked.wait(10)
        app.journal.engage_brake("2 of 3 hosts down within 120 s (host1, host2)")
        doubting.decided.set()

    counting = threading.Thread(target=host2_counted)
    counting.start()
    try:
        with pytest.raises(Cancelled, match="storm brake engaged"):
            fence(step(app, "fence"))
    finally:
        counting.join()
        monitor._RUNNING.discard(doubting)  # type: ignore[arg-type]
    assert outlet.pressed == 0
