"""The lab is real: reachable hosts, booting guests, live migration, faults, clean teardown."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import paramiko
import pytest

from evac.fleet import reachable
from evac.hypervisor import Hypervisor
from evac.inventory import Inventory
from evac.lab import Lab
from evac.lab.guests import console_path, last_heartbeat, wait_console
from tests.conftest import poll_until


def test_every_host_answers_over_qemu_tcp(inventory: Inventory) -> None:
    for spec in inventory.hosts:
        with Hypervisor.connect(spec.name, spec.uri) as hv:
            assert hv.capacity().cpus >= 1


def test_every_host_answers_over_ssh_with_its_own_hostname(inventory: Inventory) -> None:
    for spec in inventory.hosts:
        assert spec.ssh is not None
        client = paramiko.SSHClient()
        client.load_host_keys(spec.ssh.known_hosts or "")
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(spec.ssh.host, username=spec.ssh.user, key_filename=spec.ssh.key, timeout=5)
        try:
            _, stdout, _ = client.exec_command("hostname")
            assert stdout.read().decode().strip() == spec.name
        finally:
            client.close()


def test_guest_boots_and_prints_its_console_line(lab: Lab, make_guest: Callable[..., str]) -> None:
    name = make_guest("host1")
    assert f"name={name}" in wait_console(lab, name, "LAB-READY")
    poll_until(lambda: last_heartbeat(lab, name) >= 2, 30, "heartbeats")


def test_plain_live_migration_keeps_the_guest_running(
    lab: Lab, inventory: Inventory, make_guest: Callable[..., str]
) -> None:
    name = make_guest("host1")
    host1, host2 = inventory.host("host1"), inventory.host("host2")
    with Hypervisor.connect("host1", host1.uri) as src:
        src.live_migrate(name, host2.uri, flags=["UNSAFE"])
        assert not src.has_guest(name)
    with Hypervisor.connect("host2", host2.uri) as dst:
        guest = dst.guest(name)
    assert (guest.state, guest.persistent) == ("running", True)
    beat = last_heartbeat(lab, name)
    poll_until(lambda: last_heartbeat(lab, name) > beat, 15, "heartbeats after migration")


def test_hosts_command_lists_hosts_and_running_guests(
    lab: Lab, inventory: Inventory, make_guest: Callable[..., str]
) -> None:
    name = make_guest("host3")
    out = subprocess.run(
        [sys.executable, "-m", "evac", "--inventory", str(lab.inventory_file), "hosts", "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    hosts = {h["name"]: h for h in json.loads(out)}
    assert sorted(hosts) == ["host1", "host2", "host3"]
    assert all(h["state"] == "up" for h in hosts.values())
    assert {"name": name, "state": "running"}.items() <= {
        k: v for k, v in next(g for g in hosts["host3"]["guests"] if g["name"] == name).items()
    }.items()


def test_kill_host_makes_it_unreachable_and_start_host_brings_it_back(scratch_lab: Lab) -> None:
    host = scratch_lab.host("host2")
    scratch_lab.kill_host("host2")
    assert scratch_lab.power_state("host2") == "off"
    assert not reachable(host.uri, timeout=0.5)
    scratch_lab.start_host("host2")
    assert scratch_lab.power_state("host2") == "on"
    with Hypervisor.connect("host2", host.uri) as hv:
        assert hv.alive()


def test_cut_makes_a_running_host_unreachable_and_heal_reconnects_it(scratch_lab: Lab) -> None:
    host = scratch_lab.host("host1")
    scratch_lab.cut("host1")
    assert not reachable(host.uri, timeout=0.5)
    assert scratch_lab.power_state("host1") == "on"  # out-of-band view still sees it
    scratch_lab.heal("host1")
    poll_until(lambda: reachable(host.uri, timeout=0.5), 10, "host1 reachable again")


def test_down_leaves_no_namespace_link_mount_or_process(scratch_lab: Lab) -> None:
    pids = [p for h in scratch_lab.host_names() for p in scratch_lab.pids(h)]
    assert pids
    scratch_lab.down()
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "evs-" not in netns
    assert not [n for n in os.listdir("/sys/class/net") if n.startswith("evs")]
    assert str(scratch_lab.root) not in Path("/proc/self/mountinfo").read_text()
    assert not [
        p
        for p in pids
        if Path(f"/proc/{p}").exists() and "Z" not in Path(f"/proc/{p}/stat").read_text().split(")")[-1][:3]
    ]
    assert not console_path(scratch_lab, "x").parent.exists()


def test_libvirtd_over_tls_takes_the_lab_client_and_refuses_one_from_another_ca(lab: Lab, tmp_path: Path) -> None:
    from evac.errors import EvacError
    from evac.hypervisor import Hypervisor
    from evac.lab.pki import ensure_ca, issue_libvirt_client

    with Hypervisor.connect("host1", lab.tls_uri("host1")) as hv:
        assert hv.alive()
    rogue = tmp_path / "rogue-client"
    issue_libvirt_client(ensure_ca(tmp_path / "rogue-ca", "rogue CA"), rogue)
    shutil.copy(lab.client_pki_dir / "cacert.pem", rogue / "cacert.pem")  # it trusts the hosts; they must not trust it
    with pytest.raises(EvacError):
        Hypervisor.connect("host1", f"qemu+tls://{lab.host('host1').address}/system?pkipath={rogue}").close()
