"""Draining a real host: every guest lands elsewhere exactly once, or says why it could not."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from evac.app import App
from evac.events import Event
from evac.inventory import Inventory
from evac.lab import Lab
from evac.states import HostMode
from tests.integration.conftest import Events, bridges_of, inventory_copy, placements, qemu_processes


def sending(event: Event) -> bool:
    return event.kind == "progress" and int(event.data.get("processed", 0)) > 0


def drain(app: App, host: str, dry_run: bool = False, **params: Any) -> Any:
    runbook = app.runbook("maintenance")
    from evac.runbook import bind_params

    bound = bind_params(runbook, {"host": host, **params}, app.host_names())
    return app.engine.execute(runbook, bound, host, dry_run=dry_run)


def assert_once_elsewhere(inventory: Inventory, name: str, source: str) -> str:
    where = placements(inventory, name)
    assert len(where) == 1 and source not in where, f"{name}: {where}"
    ((host, (state, persistent)),) = where.items()
    assert (state, persistent) == ("running", True)
    assert qemu_processes(name) == 1
    return host


def test_drain_moves_idle_local_disk_and_busy_guests_each_exactly_once(
    app: App, inventory: Inventory, make_guest: Callable[..., str]
) -> None:
    idle = [make_guest("host3", wait=False), make_guest("host3", wait=False)]
    local = make_guest("host3", local_disk=True, wait=False)
    busy = make_guest("host3", memory_mib=256, dirty_mb=48)
    planned = drain(app, "host3", dry_run=True, bandwidth_mib=50)
    targets = {m["guest"]: m["target"] for m in planned.outputs["plan"]["moves"]}

    result = drain(app, "host3", bandwidth_mib=50)

    assert result.state == "succeeded", result.error
    landed = {name: assert_once_elsewhere(inventory, name, "host3") for name in [*idle, local, busy]}
    assert landed == targets  # the dry run showed what the engine then did
    rows = {r["guest"]: r for r in result.outputs["report"]["rows"]}
    assert rows[busy]["escalations"], "a guest dirtying ~1 GiB/s under 50 MiB/s needs escalation"
    assert all(r["result"] == "moved" for r in rows.values())
    assert app.journal.host_states()["host3"].state == "maintenance"


def test_cancel_mid_drain_leaves_every_guest_running_exactly_once(
    app: App, inventory: Inventory, make_guest: Callable[..., str]
) -> None:
    names = [make_guest("host3", wait=False) for _ in range(3)]
    watcher = Events()
    app.pm.register(watcher)
    runbook = app.runbook("maintenance")
    from evac.runbook import bind_params

    job = app.engine.submit(runbook, bind_params(runbook, {"host": "host3", "bandwidth_mib": 2}, None), "host3")
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(app.engine.run(job, runbook)))
    worker.start()
    watcher.wait_for(sending)
    app.engine.cancel(job)
    worker.join(120)

    assert results[0].state == "cancelled"
    for name in names:
        where = placements(inventory, name)
        assert len(where) == 1 and next(iter(where.values())) == ("running", True), f"{name}: {where}"
        assert qemu_processes(name) == 1
    assert "host3" not in app.journal.host_states()  # the rollback re-enabled it


def test_destination_killed_mid_migration_keeps_the_guest_on_its_source_then_moves_it_elsewhere(
    app: App, lab: Lab, inventory: Inventory, make_guest: Callable[..., str], tmp_path: Path
) -> None:
    name = make_guest("host3")
    runbook = tmp_path / "one.yaml"
    runbook.write_text(f"""
name: one
steps:
  - id: move
    action: vm.live_migrate
    with: {{guest: {name}, source: host3, target: host2, bandwidth_mib: 3}}
    retry: {{attempts: 2, on: [MigrationError]}}
""")
    watcher = Events()
    app.pm.register(watcher)
    rb = app.runbook_file(str(runbook))
    job = app.engine.submit(rb, {})
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(app.engine.run(job, rb)))
    worker.start()
    try:
        watcher.wait_for(sending)
        lab.kill_host("host2")
        retry = watcher.wait_for(lambda e: e.kind == "item.retry" or e.kind == "job.finished")
        assert retry.kind == "item.retry", retry
        assert placements(inventory, name).get("host3", ("", False))[0] == "running"  # still on its source
        worker.join(120)
    finally:
        lab.start_host("host2")
    assert results[0].state == "succeeded", results[0].error
    assert results[0].outputs["move"]["target"] == "host1"
    assert assert_once_elsewhere(inventory, name, "host3") == "host1"


def test_guest_whose_bridge_exists_on_no_target_is_reported_and_not_moved(
    app: App, lab: Lab, inventory: Inventory, make_guest: Callable[..., str]
) -> None:
    lab.exec("host3", "ip", "link", "add", "br-only3", "type", "bridge")
    lab.exec("host3", "ip", "link", "set", "br-only3", "up")
    try:
        stuck = make_guest("host3", bridge="br-only3", wait=False)
        mover = make_guest("host3", wait=False)
        result = drain(app, "host3")
    finally:
        lab.exec("host3", "ip", "link", "del", "br-only3", check=False)
    assert result.state == "partial"
    rows = {r["guest"]: r for r in result.outputs["report"]["rows"]}
    assert rows[stuck]["result"] == "unplaceable"
    assert "no bridge 'br-only3'" in rows[stuck]["detail"]
    assert placements(inventory, stuck) == {"host3": ("running", True)}
    assert_once_elsewhere(inventory, mover, "host3")


def test_drain_respects_anti_affinity(app: App, inventory: Inventory, make_guest: Callable[..., str]) -> None:
    other = make_guest("host1", anti_affinity=("db",), wait=False)
    first = make_guest("host3", anti_affinity=("db",), wait=False)
    second = make_guest("host3", anti_affinity=("db",), wait=False)
    result = drain(app, "host3")
    assert result.state == "partial"
    moved = [r for r in result.outputs["report"]["rows"] if r["result"] == "moved"]
    assert [r["to"] for r in moved] == ["host2"]
    left = next(r for r in result.outputs["report"]["rows"] if r["result"] == "unplaceable")
    assert "anti-affinity group 'db'" in left["detail"]
    assert set(placements(inventory, other)) == {"host1"}
    assert {moved[0]["guest"], left["guest"]} == {first, second}


def test_a_guest_moves_to_hosts_that_name_its_bridge_differently(
    lab: Lab, inventory: Inventory, make_guest: Callable[..., str], tmp_path: Path
) -> None:
    lab.exec("host3", "ip", "link", "add", "br-vm", "type", "bridge")
    lab.exec("host3", "ip", "link", "set", "br-vm", "up")
    mapped = inventory_copy(
        lab,
        tmp_path,
        host1={"networks": {"vm": "br0"}},
        host2={"networks": {"vm": "br0"}},
        host3={"networks": {"vm": "br-vm"}},
    )
    app = App(inventory_path=mapped, journal_path=tmp_path / "j.db")
    try:
        name = make_guest("host3", bridge="br-vm", wait=False)
        result = drain(app, "host3")
    finally:
        lab.exec("host3", "ip", "link", "del", "br-vm", check=False)
        app.journal.set_host_state("host3", HostMode.ENABLED, "", "test")
    assert result.state == "succeeded", result.error
    target = assert_once_elsewhere(inventory, name, "host3")
    assert bridges_of(inventory, target, name) == (["br0"], ["br0"])  # the next cold boot finds its bridge too


def test_tls_migration_refuses_a_target_with_a_certificate_from_another_ca_then_moves_with_the_right_one(
    app: App, lab: Lab, inventory: Inventory, make_guest: Callable[..., str], tmp_path: Path
) -> None:
    from evac.lab.pki import ensure_ca, issue_qemu_credentials

    name = make_guest("host3", wait=False)
    app.journal.set_host_state("host1", HostMode.MAINTENANCE, "test: host2 is the only target", "test")
    pki = lab.qemu_pki_dir("host2")
    shutil.copytree(pki, tmp_path / "saved")
    shutil.rmtree(pki)
    issue_qemu_credentials(ensure_ca(tmp_path / "rogue", "rogue CA"), pki, "host2", lab.host("host2").address)
    try:
        refused = drain(app, "host3", tls=True)
    finally:
        shutil.rmtree(pki)
        shutil.copytree(tmp_path / "saved", pki)
    assert refused.state == "partial"
    detail = {r["guest"]: r for r in refused.outputs["report"]["rows"]}[name]["detail"]
    assert placements(inventory, name) == {"host3": ("running", True)} and qemu_processes(name) == 1, detail
    assert "host2 failed" in detail and "certificate" in detail  # the cause reaches the report

    moved = drain(app, "host3", tls=True)
    assert moved.state == "succeeded", moved.error
    assert assert_once_elsewhere(inventory, name, "host3") == "host2"


def test_a_migration_waits_for_a_slot_another_evac_process_holds(
    app: App, inventory: Inventory, make_guest: Callable[..., str], tmp_path: Path
) -> None:
    from evac.sqlitejournal import SqliteJournal

    name = make_guest("host3", wait=False)
    other = SqliteJournal(app.settings.journal)  # another evac process on the same journal
    for host in ("host1", "host2"):
        assert other.take_slot(f"in:{host}", 1, "other-job:vm")
    events = Events()
    app.pm.register(events)
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(drain(app, "host3", max_in=1)))
    worker.start()
    events.wait_for(lambda e: e.kind == "progress" and "waiting for a free in slot" in e.message, timeout=60)
    assert placements(inventory, name) == {"host3": ("running", True)}
    for host in ("host1", "host2"):
        other.release_slot(f"in:{host}", "other-job:vm")
    worker.join(120)
    assert results and results[0].state == "succeeded", results and results[0].error
    assert_once_elsewhere(inventory, name, "host3")


@pytest.mark.parametrize("transport", ["tls", "ssh"])
def test_a_drain_runs_over_libvirt_tls_or_ssh_peer_to_peer_included(
    transport: str, lab: Lab, inventory: Inventory, make_guest: Callable[..., str], tmp_path: Path
) -> None:
    uri = lab.tls_uri if transport == "tls" else lab.ssh_uri
    over = inventory_copy(lab, tmp_path, **{h: {"uri": uri(h)} for h in lab.host_names()})
    app = App(inventory_path=over, journal_path=tmp_path / "j.db")
    name = make_guest("host3", wait=False)
    result = drain(app, "host3")
    assert result.state == "succeeded", result.error
    assert_once_elsewhere(inventory, name, "host3")
