"""evac doctor on a lab of its own: a healthy lab passes, and each safety problem is caught
(a host without a lock manager, a guest set to autostart, a BMC with a wrong password)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evac import hookimpl
from evac.app import App
from evac.cli import main
from evac.doctor import last_doctor
from evac.events import Event
from evac.hypervisor import Hypervisor
from evac.lab import Lab
from evac.lab.guests import GuestSpec, disk_path, domain_xml
from evac.sqlitejournal import SqliteJournal
from evac.states import EventKind, HostMode
from tests.conftest import key_paths, require
from tests.integration.conftest import inventory_copy
from tests.integration.ipmibmc import running_bmc


@pytest.fixture
def doctor_lab(lab: Lab) -> Lab:
    """The shared test lab: 3 hosts (the lock probe's peer wraps around; N+1 needs a second
    host). Each test restores what it changes (qemu.conf, a host's power, guests)."""
    return lab


@pytest.fixture
def defined_guest(doctor_lab: Lab) -> Iterator[Any]:
    """``define(host, name)``: a persistent guest, defined but never started (nothing to boot)."""
    made: list[tuple[str, str]] = []

    def define(host: str, name: str) -> Hypervisor:
        spec = GuestSpec(name=name)
        root_path, inner = disk_path(doctor_lab, host, spec)
        root_path.write_bytes(b"")
        with Hypervisor.connect(host, doctor_lab.host(host).uri) as hv:
            hv.define(domain_xml(doctor_lab, spec, inner))
        made.append((host, name))
        return Hypervisor.connect(host, doctor_lab.host(host).uri)

    yield define
    for host, name in made:
        with Hypervisor.connect(host, doctor_lab.host(host).uri) as hv:
            if hv.has_guest(name):
                hv.undefine(name)


def doctor(inventory: Path, journal: Path, *argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["--inventory", str(inventory), "--journal", str(journal), "doctor", *argv])
    return code, capsys.readouterr().out


def results(out: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(h["host"], c["name"]): c for h in json.loads(out)["hosts"] for c in h["checks"]}


def test_a_healthy_lab_passes_every_check_and_json_is_stable(
    doctor_lab: Lab, defined_guest: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    defined_guest("host1", "dr-healthy").close()
    journal = tmp_path / "journal.db"
    code, table = doctor(doctor_lab.inventory_file, journal, capsys=capsys)
    with capsys.disabled():
        print("\n" + table)
    assert code == 0, table
    code1, first = doctor(doctor_lab.inventory_file, journal, "--json", capsys=capsys)
    code2, second = doctor(doctor_lab.inventory_file, journal, "--json", capsys=capsys)
    assert (code1, code2) == (0, 0)
    assert key_paths(json.loads(first)) == key_paths(json.loads(second))
    found = results(first)
    not_passed = {k: (c["result"], c["evidence"]) for k, c in found.items() if c["result"] != "pass"}
    assert set(not_passed) == {(h, "watchdog") for h in ("host1", "host2", "host3")}, not_passed
    assert all(c["evidence"] == "not applicable: no agent configured" for k, c in found.items() if k[1] == "watchdog")
    lock = found[("host1", "lock_manager")]["evidence"]
    assert "QEMU's image lock" in lock and '"write" lock' in lock  # one kernel: the image lock answers first
    run = last_doctor(SqliteJournal(journal), "host2")
    assert run is not None and run.safe_to_fence()[0]


@pytest.fixture
def host2_without_lock_manager(doctor_lab: Lab) -> Iterator[None]:
    """host2's qemu.conf without ``lock_manager``, its libvirtd restarted; restored afterwards."""
    conf = doctor_lab.host_dir("host2") / "etc" / "qemu.conf"
    original = conf.read_text()
    conf.write_text("".join(line for line in original.splitlines(True) if not line.startswith("lock_manager")))
    try:
        doctor_lab.kill_host("host2")
        doctor_lab.start_host("host2")
        yield
    finally:
        conf.write_text(original)
        doctor_lab.kill_host("host2")
        doctor_lab.start_host("host2")


def test_a_host_whose_qemu_conf_drops_the_lock_manager_fails_the_lock_check(
    doctor_lab: Lab, host2_without_lock_manager: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = doctor(doctor_lab.inventory_file, tmp_path / "j.db", "host2", "--json", capsys=capsys)
    assert code == 1
    check = results(out)[("host2", "lock_manager")]
    assert check["result"] == "fail" and check["safety"] is True
    assert "names no lock_manager" in check["evidence"]
    run = last_doctor(SqliteJournal(tmp_path / "j.db"), "host2")
    assert run is not None
    ok, why = run.safe_to_fence()
    assert not ok and why.startswith('failed lock_manager: set lock_manager = "lockd"')
    # What evac serve's monitor does with host2 found dead: no fence, an alert with the fix.
    app = App(inventory_path=doctor_lab.inventory_file, journal_path=tmp_path / "j.db")
    alerts: list[Event] = []

    class Alerts:
        @hookimpl
        def evac_event(self, event: Event) -> None:
            if event.kind == EventKind.HOST_FAILOVER_NOT_STARTED:
                alerts.append(event)

    app.pm.register(Alerts())
    app.jobs.host_down("host2", "libvirt connection lost")
    assert app.journal.jobs() == [] and doctor_lab.power_state("host2") == "on"
    (alert,) = alerts
    assert "automatic fencing refused: evac doctor: failed lock_manager: set lock_manager" in alert.message


def test_a_guest_set_to_autostart_is_flagged(
    doctor_lab: Lab, defined_guest: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with defined_guest("host3", "dr-autostart") as hv:
        hv.set_autostart("dr-autostart", True)
    code, out = doctor(doctor_lab.inventory_file, tmp_path / "j.db", "host3", "--json", capsys=capsys)
    assert code == 1
    check = results(out)[("host3", "autostart")]
    assert check["result"] == "fail" and "dr-autostart" in check["evidence"]
    assert "autostart --disable dr-autostart" in check["fix"]


@pytest.fixture
def ipmi_bmc(doctor_lab: Lab) -> Iterator[int]:
    """An IPMI 2.0 BMC on loopback (password ``s3cret``) whose chassis power is host3's."""
    require(shutil.which("ipmitool") is not None, "ipmitool not installed (apt-get install ipmitool)")
    require(shutil.which("fence_ipmilan", path="/usr/sbin:/usr/bin") is not None, "fence-agents not installed")
    with running_bmc(doctor_lab, "host3") as port:
        yield port


@pytest.mark.parametrize(("password", "result"), [("s3cret", "pass"), ("wrong", "fail")])
def test_fencing_check_asks_the_bmc_for_status_and_a_wrong_password_fails(
    doctor_lab: Lab, ipmi_bmc: int, tmp_path: Path, capsys: pytest.CaptureFixture[str], password: str, result: str
) -> None:
    fence = {"method": "agent", "agent": "fence_ipmilan", "ip": "127.0.0.1", "ipport": ipmi_bmc, "lanplus": 1}
    fence |= {"username": "admin", "password": password, "timeout": 30}
    inventory = inventory_copy(doctor_lab, tmp_path, host3={"fence": [fence]})
    _, out = doctor(inventory, tmp_path / "j.db", "host3", "--json", capsys=capsys)
    check = results(out)[("host3", "fencing")]
    assert check["result"] == result, check
    if result == "fail":
        assert "'unknown'" in check["evidence"]
    assert doctor_lab.power_state("host3") == "on"  # a status query only


def test_power_cycle_test_really_powers_a_host_in_maintenance_off_and_says_to_power_it_on(
    doctor_lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "j.db"
    SqliteJournal(journal).set_host_state("host3", HostMode.MAINTENANCE, "doctor power cycle", "test")
    try:
        _, out = doctor(doctor_lab.inventory_file, journal, "host3", "--power-cycle-test", "--json", capsys=capsys)
        check = results(out)[("host3", "fencing")]
        assert doctor_lab.power_state("host3") == "off"
        assert check["result"] == "warn" and "read back 'off'" in check["evidence"]
        assert check["fix"] == "power host3 on by hand (in the lab: evac lab start-host host3)"
    finally:
        doctor_lab.start_host("host3")
