"""The real lab, brought up once per session for tests (never the developer's own lab)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from evac import hookimpl
from evac.inventory import Inventory, load_inventory
from evac.lab import Lab
from evac.lab.guests import build_assets, qemu_pids
from tests.conftest import require


def lab_prerequisites() -> None:
    require(os.geteuid() == 0, "the lab needs root")
    for tool in ("libvirtd", "qemu-system-x86_64", "sshd", "virsh", "busybox", "nsenter", "unshare"):
        require(shutil.which(tool) is not None or Path(f"/usr/sbin/{tool}").exists(), f"{tool} not installed")


def lab_place(root: str, prefix: str, net: str) -> dict[str, str]:
    """Where the test lab lives: ``$EVAC_TEST_LAB`` (``ROOT,PREFIX,NET``) moves it, so two
    developers (or a developer and CI) on one machine do not share hosts."""
    given = os.environ.get("EVAC_TEST_LAB", "")
    if given:
        root, prefix, net = given.split(",")
    return {"root": root, "prefix": prefix, "net": net}


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """A 3-host lab with guests started by the tests themselves."""
    lab_prerequisites()
    the_lab = Lab(**lab_place("/tmp/evac-test-lab", "evt", "198.18.1"))
    build_assets(the_lab)
    the_lab.up(hosts=3)
    try:
        yield the_lab
    finally:
        the_lab.down()


@pytest.fixture(scope="session")
def lab_doctor(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    """``evac doctor`` run for real on the test lab, once: every journal a test makes gets
    its findings (``record_doctor``), as an operator's would, so automatic failover is
    allowed (``monitor.require_doctor``)."""
    from evac.app import App
    from evac.doctor import diagnose

    runs = diagnose(App(inventory_path=lab.inventory_file, journal_path=tmp_path_factory.mktemp("doctor") / "j.db"))
    unsafe = [f"{run.host}: {run.safe_to_fence()[1]}" for run in runs if not run.safe_to_fence()[0]]
    assert not unsafe, f"the test lab fails evac doctor: {unsafe}"
    return runs


def record_doctor(journal: Any, runs: list[Any]) -> None:
    from evac.doctor import record

    for run in runs:
        record(journal, run)


@pytest.fixture(scope="session")
def ha_lab() -> Iterator[Lab]:
    """A 4-host lab with an etcd member on each of the first three, for evac's own high
    availability: host4 can fail while another host is cut from etcd, and the cluster
    keeps its quorum."""
    lab_prerequisites()
    require(Path("/usr/bin/etcd").exists() and Path("/usr/bin/etcdctl").exists(), "etcd not installed")
    the_lab = Lab(root="/tmp/evac-test-ha", prefix="evh", net="198.18.4")
    build_assets(the_lab)
    the_lab.up(hosts=4, etcd=True)
    try:
        yield the_lab
    finally:
        the_lab.down()


@pytest.fixture(scope="session")
def inventory(lab: Lab) -> Inventory:
    return load_inventory(lab.inventory_file)


@pytest.fixture
def scratch_lab() -> Iterator[Lab]:
    """A small lab of its own, for tests that break hosts or tear the lab down."""
    lab_prerequisites()
    the_lab = Lab(root="/tmp/evac-test-scratch", prefix="evs", net="198.18.2")
    the_lab.up(hosts=2)
    try:
        yield the_lab
    finally:
        the_lab.down()


@pytest.fixture
def make_guest(lab: Lab, inventory: Inventory, request: pytest.FixtureRequest) -> Iterator[object]:
    """``make_guest(host, **spec)`` boots a uniquely named guest; all are removed afterwards."""
    from evac.lab.guests import GuestSpec, create_guest, wait_console

    made: list[str] = []
    counter = iter(range(1000))
    remove_guests(inventory, lambda name: MADE.fullmatch(name) is not None)  # earlier tests' leftovers

    def make(host: str, wait: bool = True, **spec: object) -> str:
        name = f"t{abs(hash(request.node.nodeid)) % 10**6}-{next(counter)}"
        offset = create_guest(lab, host, GuestSpec(name=name, **spec))  # type: ignore[arg-type]
        made.append(name)
        if wait:
            wait_console(lab, name, after=offset, timeout=300)
        return name

    yield make
    remove_guests(inventory, lambda name: name in made)


MADE = re.compile(r"t[0-9]+-[0-9]+")  # the names make_guest gives


def remove_guests(inventory: Inventory, whose: Callable[[str], bool]) -> None:
    """Destroy and undefine the guests ``whose`` names, on every host that answers. A host
    a test left powered off keeps its definitions until the next test's sweep: each test
    that makes guests starts from a lab without another test's."""
    from evac.errors import EvacError
    from evac.hypervisor import Hypervisor

    for spec in inventory.hosts:
        try:
            with Hypervisor.connect(spec.name, spec.uri) as hv:
                for guest in hv.guests():
                    if whose(guest.name):
                        hv.destroy(guest.name)
                        hv.undefine(guest.name)
        except EvacError:
            continue


@pytest.fixture
def app(lab: Lab, lab_doctor: list[Any], tmp_path: Path) -> object:
    """The application against the test lab, with a journal of its own (and the doctor's
    findings about the lab in it)."""
    from evac.app import App

    made = App(inventory_path=lab.inventory_file, journal_path=tmp_path / "journal.db")
    record_doctor(made.journal, lab_doctor)
    return made


def inventory_copy(lab: Lab, tmp_path: Path, **hosts: dict[str, Any]) -> Path:
    """The lab's inventory with some hosts' fields replaced: ``host3={"networks": {...}}``."""
    data = yaml.safe_load(lab.inventory_file.read_text())
    for spec in data["hosts"]:
        spec.update(hosts.get(spec["name"], {}))
    path = tmp_path / "hosts.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def bridges_of(inventory: Inventory, host: str, name: str) -> tuple[list[str], list[str]]:
    """The bridges a guest plugs into: live, and in its persistent definition."""
    import xml.etree.ElementTree as ET

    from evac.hypervisor import Hypervisor

    with Hypervisor.connect(host, inventory.host(host).uri) as hv:
        xmls = hv.domain_xml(name), hv.domain_xml(name, inactive=True)
    live, persistent = ([s.get("bridge", "") for s in ET.fromstring(x).iter("source") if s.get("bridge")] for x in xmls)
    return live, persistent


def placements(inventory: Inventory, name: str) -> dict[str, tuple[str, bool]]:
    """Where a guest is defined: host -> (state, persistent)."""
    from evac.errors import EvacError
    from evac.hypervisor import Hypervisor

    found = {}
    for spec in inventory.hosts:
        try:
            with Hypervisor.connect(spec.name, spec.uri) as hv:
                if hv.has_guest(name):
                    g = hv.guest(name)
                    found[spec.name] = (g.state, g.persistent)
        except EvacError:
            continue
    return found


class Events:
    """An evac_event observer tests wait on: ``wait_for`` an event, or prove one stays ``absent``."""

    def __init__(self) -> None:
        import threading

        self.seen: list[Any] = []
        self.cond = threading.Condition()

    @hookimpl
    def evac_event(self, event: Any) -> None:
        with self.cond:
            self.seen.append(event)
            self.cond.notify_all()

    def wait_for(self, test: Callable[[Any], bool], timeout: float = 120) -> Any:
        import time

        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = next((e for e in self.seen if test(e)), None)
                if found:
                    return found
                left = deadline - time.monotonic()
                assert left > 0, f"event never came; saw {[e.kind for e in self.seen][-15:]}"
                self.cond.wait(left)

    def absent(self, test: Callable[[Any], bool], window: float) -> bool:
        try:
            self.wait_for(test, window)
        except AssertionError:
            return True
        return False

    def kinds(self, host: str) -> list[str]:
        return [e.kind for e in self.seen if e.job_id == 0 and e.item == host]


def qemu_processes(name: str) -> int:
    """QEMU processes running this guest anywhere on the machine (every lab host shares it)."""
    return len(qemu_pids(name))
