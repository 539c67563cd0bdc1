"""`evac ha disarm`: a killed host is not failed over; `evac ha arm`: it is, at once."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from evac.app import App
from evac.inventory import Inventory
from evac.jobs import Actor, Channel
from evac.lab import Lab
from evac.monitor import Monitor
from evac.snapshots import Snapshotter
from evac.states import EventKind
from tests.integration.conftest import Events, qemu_processes
from tests.integration.test_failover import FAST, assert_running_once_elsewhere, job_finished, wait_snapshot

OPS = Actor(Channel.CLI, "ops")


@pytest.fixture
def watched(app: App, lab: Lab) -> Iterator[tuple[App, Events]]:
    """The lab watched by a monitor that fails hosts over, with snapshots of their guests."""
    events = Events()
    app.pm.register(events)
    snapshots = Snapshotter(app, every=0.5)
    monitor = Monitor(app, app.jobs.host_down, FAST)
    snapshots.start()
    monitor.start()
    assert monitor.started.wait(30)
    try:
        yield app, events
    finally:
        monitor.stop()
        snapshots.stop()
        for host in lab.host_names():
            if lab.power_state(host) == "off":
                lab.start_host(host)


def test_a_host_killed_while_ha_is_disarmed_is_not_failed_over_until_ha_is_armed(
    watched: tuple[App, Events], lab: Lab, inventory: Inventory, make_guest: Callable[..., str]
) -> None:
    app, events = watched
    name = make_guest("host2", wait=False)
    wait_snapshot(app, "host2", [name])
    assert app.jobs.disarm(OPS, "integration test")
    lab.kill_host("host2")
    held = events.wait_for(lambda e: e.kind == EventKind.HA_HELD and e.item == "host2")
    assert held.message.startswith("HA disarmed: host2 not failed over")
    assert [j.id for j in app.journal.jobs() if j.target == "host2"] == []  # no failover job at all
    assert qemu_processes(name) == 0  # it died with its host, and runs nowhere while disarmed
    app.jobs.arm(OPS)
    finished = events.wait_for(job_finished("host2"))
    assert finished.data["state"] == "succeeded", finished.message
    assert_running_once_elsewhere(inventory, lab, name, "host2")
