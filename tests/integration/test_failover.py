"""A dead host's guests run again elsewhere, once, and only after it is fenced."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from evac.app import App
from evac.config import default_config
from evac.errors import MigrationError
from evac.events import Event
from evac.evidence import MonitorSettings
from evac.hypervisor import Hypervisor
from evac.inventory import Inventory
from evac.lab import Lab
from evac.lab.guests import wait_console
from evac.monitor import Monitor
from evac.snapshots import Snapshotter
from evac.states import HostMode
from evac.stormbrake import StormBrake
from tests.conftest import poll_until
from tests.integration.conftest import Events, bridges_of, inventory_copy, placements, qemu_processes

FAST = MonitorSettings(interval=0.3, power_every=0)


@pytest.fixture
def watched(app: App, lab: Lab) -> Iterator[tuple[App, Events, Callable[..., Monitor]]]:
    events = Events()
    app.pm.register(events)
    monitors: list[Monitor] = []
    snapshots = Snapshotter(app, every=0.5)

    def start(brake: StormBrake | None = None) -> Monitor:
        monitor = Monitor(app, app.jobs.host_down, FAST, brake)
        monitor.start()
        assert monitor.started.wait(30)
        monitors.append(monitor)
        return monitor

    snapshots.start()
    try:
        yield app, events, start
    finally:
        for monitor in monitors:
            monitor.stop()
        snapshots.stop()
        for host in lab.host_names():
            lab.heal(host)
            lab.set_loss(host, 0)
            if lab.power_state(host) == "off":
                lab.start_host(host)


def wait_snapshot(app: App, host: str, names: list[str]) -> None:
    poll_until(lambda: set(names) <= set(app.journal.definitions(host)), 30, "a snapshot of the guests")


def job_finished(host: str) -> Callable[[Event], bool]:
    return lambda e: e.kind == "job.finished" and e.job_id > 0


def assert_running_once_elsewhere(inventory: Inventory, lab: Lab, name: str, dead: str) -> None:
    where = placements(inventory, name)
    assert dead not in where and len(where) == 1 and next(iter(where.values())) == ("running", True), where
    assert qemu_processes(name) == 1


def test_powered_off_host_has_its_guests_running_elsewhere_exactly_once(
    watched: Any, lab: Lab, inventory: Inventory, make_guest: Callable[..., str]
) -> None:
    app, events, start = watched
    names = [make_guest("host2", wait=False) for _ in range(3)]
    for name in names:
        wait_console(lab, name, "boots=1", timeout=120)
    start()
    wait_snapshot(app, "host2", names)
    lab.kill_host("host2")
    finished = events.wait_for(job_finished("host2"))
    assert finished.data["state"] == "succeeded", finished.message
    for name in names:
        assert_running_once_elsewhere(inventory, lab, name, "host2")
        wait_console(lab, name, "boots=2", timeout=120)  # the same disk: its boot counter went on
    with lab.probe(names) as probe:  # and its users reach it at its new host
        poll_until(lambda: all(n in probe.latest and probe.latest[n].answering for n in names), 30, "echoes")


def test_a_guest_whose_post_copy_destination_dies_is_booted_again_once_from_its_disk(
    watched: Any, lab: Lab, inventory: Inventory, make_guest: Callable[..., str]
) -> None:
    """After the switch-over the guest runs on host2 with most of its memory still on host3;
    host2 dies, and host3's copy stays paused for good (post-copy failed). host2's failover
    must not take that copy for the guest running (the nemesis, seed 549695709)."""
    app, events, start = watched
    name = make_guest("host3", dirty_mb=24)
    start()
    source = Hypervisor.connect("host3", lab.host("host3").uri)
    slow = {"bandwidth": 8, "bandwidth.postcopy": 1}  # MiB/s: host2 dies long before the pages are over

    def migrate() -> None:
        with suppress(MigrationError):  # it fails when host2 dies
            source.live_migrate(name, lab.host("host2").uri, slow, ["POSTCOPY", "UNSAFE"], keep_source=True)

    migrating = threading.Thread(target=migrate)
    migrating.start()
    try:
        poll_until(lambda: source.job_stats(name).get("memory_processed", 0) > 0, 30, "memory on its way")
        source.start_postcopy(name)
        poll_until(lambda: source.postcopy_source(name), 30, "the switch-over to host2")
        wait_snapshot(app, "host2", [name])  # the guest runs on host2 now
        lab.kill_host("host2")
        finished = events.wait_for(job_finished("host2"))
        assert finished.data["state"] == "succeeded", finished.message
    finally:
        migrating.join(60)
        source.close()
    assert_running_once_elsewhere(inventory, lab, name, "host2")
    wait_console(lab, name, "boots=2", timeout=120)  # booted again from its disk


def test_partitioned_host_is_fenced_before_any_restart_and_never_runs_twice(
    watched: Any, lab: Lab, inventory: Inventory, make_guest: Callable[..., str]
) -> None:
    app, events, start = watched
    names = [make_guest("host3", wait=False) for _ in range(2)]
    start()
    wait_snapshot(app, "host3", names)
    lab.cut("host3")
    finished = events.wait_for(job_finished("host3"))
    assert finished.data["state"] == "succeeded", finished.message
    fenced = next(e for e in events.seen if e.kind == "step.finished" and e.step == "fence")
    first_start = min(e.ts for e in events.seen if e.kind == "item.started" and e.step == "restart")
    assert fenced.ts < first_start
    assert lab.power_state("host3") == "off"  # fenced through the out-of-band switch while cut
    for name in names:
        assert_running_once_elsewhere(inventory, lab, name, "host3")


def fail_over(
    lab: Lab,
    tmp_path: Path,
    make_guest: Callable[..., str],
    host: str,
    fault: str,
    inventory: dict[str, dict[str, Any]],
    **guest: Any,
) -> tuple[App, Events, Event, str]:
    """A guest on ``host`` under an inventory with some hosts' fields replaced; ``fault``
    (kill or cut) strikes and the monitor fails it over; returns the app, its events, the
    job's end and the guest."""
    path, journal = inventory_copy(lab, tmp_path, **inventory), tmp_path / "j.db"
    # The inventory is changed under the doctor's feet here (fence methods that fail, bridges
    # renamed): what is tested is the failover's own refusal, not the doctor's requirement.
    defaults = default_config(path, journal)
    config = replace(defaults, monitor=replace(defaults.monitor, require_doctor=False))
    app = App(inventory_path=path, journal_path=journal, config=config)
    events = Events()
    app.pm.register(events)
    name = make_guest(host, wait=False, **guest)
    monitor = Monitor(app, app.jobs.host_down, FAST)
    snapshots = Snapshotter(app, every=0.5)
    snapshots.start()
    monitor.start()
    try:
        wait_snapshot(app, host, [name])
        lab.kill_host(host) if fault == "kill" else lab.cut(host)
        finished = events.wait_for(job_finished(host))
    finally:
        monitor.stop()
        snapshots.stop()
        lab.start_host(host) if fault == "kill" else lab.heal(host)
    return app, events, finished, name


def test_every_fence_method_failing_restarts_nothing_and_alerts(
    lab: Lab, make_guest: Callable[..., str], tmp_path: Path
) -> None:
    fence = {
        "fence": [
            {"method": "redfish", "url": "http://127.0.0.1:9", "timeout": 1},
            {
                "method": "agent",
                "agent": "fence_redfish",
                "ip": "127.0.0.1",
                "ipport": 9,
                "login": "x",
                "passwd": "x",
                "timeout": 10,
            },
        ]
    }
    app, events, finished, name = fail_over(lab, tmp_path, make_guest, "host1", "kill", {"host1": fence})
    assert finished.data["state"] == "failed"
    alerts = [e for e in events.seen if e.data.get("level") == "alert"]
    assert alerts and "--confirm-manually" in " ".join(e.message for e in alerts)
    assert not [e for e in events.seen if e.step == "restart"]
    assert qemu_processes(name) == 0
    assert "host1" not in app.journal.host_states()


def test_two_of_three_hosts_vanishing_at_once_holds_the_storm_brake(
    watched: Any, lab: Lab, make_guest: Callable[..., str]
) -> None:
    app, events, start = watched
    make_guest("host1", wait=False)
    start(StormBrake(max_hosts=1, window=60))
    lab.kill_host("host1")
    lab.kill_host("host2")
    events.wait_for(lambda e: e.kind == "monitor.storm_brake")
    # a failover the monitor started before it saw the second host ends at the fence step
    assert events.absent(lambda e: e.kind == "step.started" and e.step == "restart", window=5)
    assert not [j for j in app.journal.jobs() if j.state != "cancelled"]
    assert not [h for h, s in app.journal.host_states().items() if s.state == HostMode.FENCED]
    assert app.journal.brake() is not None  # held for other processes and for the next start


def test_releasing_the_storm_brake_from_the_cli_fails_over_the_hosts_it_held_back(
    watched: Any, lab: Lab, inventory: Inventory, make_guest: Callable[..., str]
) -> None:
    app, events, start = watched
    name = make_guest("host1", wait=False)
    start(StormBrake(max_hosts=1, window=60))
    wait_snapshot(app, "host1", [name])
    lab.kill_host("host1")
    lab.kill_host("host2")
    events.wait_for(lambda e: e.kind == "monitor.storm_brake")
    assert events.absent(lambda e: e.kind == "step.started" and e.step == "restart", window=3)
    evac = [sys.executable, "-m", "evac", "--inventory", str(lab.inventory_file), "--journal", str(app.journal.path)]
    status = subprocess.run([*evac, "brake"], capture_output=True, text=True)
    assert status.returncode == 1 and "ENGAGED" in status.stdout
    released = subprocess.run([*evac, "brake", "release"], capture_output=True, text=True)
    assert released.returncode == 0, released.stderr
    events.wait_for(lambda e: e.kind == "monitor.brake_released")
    for host in ("host1", "host2"):
        finished = events.wait_for(
            lambda e, h=host: (
                e.kind == "job.finished"
                and e.data.get("state") != "cancelled"  # not one the brake stopped at its fence
                and app.journal.job(e.job_id).target == h
            )
        )
        assert finished.data["state"] == "succeeded", finished.message
    assert_running_once_elsewhere(inventory, lab, name, "host1")
    assert [a.action for a in app.journal.audit_log()].count("brake.release") == 1


def test_fenced_host_that_returns_is_cleaned_and_not_used_until_enabled(
    watched: Any, lab: Lab, inventory: Inventory, make_guest: Callable[..., str]
) -> None:
    from evac.fleet import views

    app, events, start = watched
    name = make_guest("host2", wait=False)
    start()
    wait_snapshot(app, "host2", [name])
    lab.kill_host("host2")
    events.wait_for(job_finished("host2"))
    lab.start_host("host2")
    events.wait_for(lambda e: e.kind == "host.up" and e.item == "host2", timeout=30)
    assert "host2" not in placements(inventory, name)  # stale definition removed
    assert {v.name: v.state for v in views(app)}["host2"] == "fenced"  # placement will not use it
    app.journal.set_host_state("host2", "enabled", "", "test")
    assert {v.name: v.state for v in views(app)}["host2"] == "up"


def test_no_false_fence_under_cpu_stress_and_packet_loss(watched: Any, lab: Lab) -> None:
    app, events, start = watched
    start()
    means = lab.set_loss("host1", 20)
    stress = subprocess.Popen(["stress-ng", "--cpu", "2", "--timeout", "60s", "--quiet"])
    try:
        stress.wait(75)
    finally:
        stress.kill()
        lab.set_loss("host1", 0)
    assert means in ("netem", "nftables")
    assert "host.down" not in events.kinds("host1")
    assert app.journal.jobs() == []


def test_a_disk_one_host_runs_cannot_be_started_on_another(
    lab: Lab, inventory: Inventory, make_guest: Callable[..., str]
) -> None:
    from evac.errors import DiskInUse
    from evac.hypervisor import Hypervisor

    name = make_guest("host1", wait=False)
    with Hypervisor.connect("host1", inventory.host("host1").uri) as hv:
        xml = hv.domain_xml(name, migratable=False)
    with Hypervisor.connect("host2", inventory.host("host2").uri) as hv:
        hv.define(xml)
        try:
            with pytest.raises(DiskInUse, match=r"Failed to get \"write\" lock|Lockspace resource"):
                hv.start(name)
        finally:
            hv.undefine(name)
    assert qemu_processes(name) == 1


# A fence aimed at the wrong BMC: it reports the power off while the host runs on.
LYING_FENCE_AGENT = """#!/bin/sh
grep -q '^action=status' && exit 2
exit 0
"""


def test_a_fence_that_lies_still_never_runs_a_disk_twice(
    lab: Lab, inventory: Inventory, make_guest: Callable[..., str], tmp_path: Path
) -> None:
    liar = tmp_path / "fence_liar"
    liar.write_text(LYING_FENCE_AGENT)
    liar.chmod(0o755)
    fence = {"fence": [{"method": "agent", "agent": str(liar)}]}
    _, events, finished, name = fail_over(lab, tmp_path, make_guest, "host3", "cut", {"host3": fence})
    assert finished.data["state"] == "partial", finished.message
    assert lab.power_state("host3") == "on"  # the fence said off; nothing was
    refused = [e for e in events.seen if e.kind == "item.finished" and e.step == "restart"]
    assert refused and "still held by another QEMU" in refused[-1].message
    assert placements(inventory, name) == {"host3": ("running", True)}  # no shut-off copy elsewhere either
    assert qemu_processes(name) == 1


def test_a_restarted_guest_is_plugged_into_the_bridge_its_new_host_names_for_the_network(
    lab: Lab, inventory: Inventory, make_guest: Callable[..., str], tmp_path: Path
) -> None:
    lab.exec("host3", "ip", "link", "add", "br-vm", "type", "bridge")
    lab.exec("host3", "ip", "link", "set", "br-vm", "up")
    networks = {"host1": {"networks": {"vm": "br0"}}, "host2": {"networks": {"vm": "br0"}}}
    networks["host3"] = {"networks": {"vm": "br-vm"}}
    try:
        _, _, finished, name = fail_over(lab, tmp_path, make_guest, "host3", "kill", networks, bridge="br-vm")
    finally:
        lab.exec("host3", "ip", "link", "del", "br-vm", check=False)
    assert finished.data["state"] == "succeeded", finished.message
    (target,) = [h for h, (state, _) in placements(inventory, name).items() if state == "running"]
    assert target != "host3" and qemu_processes(name) == 1
    assert bridges_of(inventory, target, name) == (["br0"], ["br0"])
