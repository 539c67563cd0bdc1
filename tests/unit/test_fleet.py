"""The fleet as a plan reads it: every host's libvirt and, beside it, its bridges over SSH;
what a job read of the bridges serves each of its migrations' checks."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from evac.connections import Connections, current
from evac.errors import HostUnreachable, MigrationError
from evac.fleet import survey
from evac.inventory import HostSpec, Inventory, SshSpec
from evac.model import Capacity, Guest, Interface
from evac.states import Health
from evac_plugins import network

HOSTS = tuple(HostSpec(f"host{i}", "test:///default", ssh=SshSpec(f"198.51.100.{i}")) for i in (1, 2, 3))
SILENT = HostSpec("silent", "qemu+tcp://127.0.0.1:1/system", ssh=SshSpec("198.51.100.9"))
GUEST = Guest("web1", "u", "host1", "running", 128, 1, True, interfaces=(Interface("bridge", "br0"),))


class Ssh:
    """``evac.remote.bridges`` without SSH: every host has ``br0`` unless told otherwise;
    ``started`` is set on a host's first read."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reads: list[str] = []
        self.started: dict[str, threading.Event] = {h.ssh.host: threading.Event() for h in (*HOSTS, SILENT) if h.ssh}
        self.present: dict[str, dict[str, int]] = {}

    def __call__(self, spec: SshSpec, max_age: float = 30.0) -> dict[str, int]:
        with self.lock:
            self.reads.append(spec.host)
        self.started[spec.host].set()
        return self.present.get(spec.host, {"br0": 1500})


@pytest.fixture
def ssh(monkeypatch: pytest.MonkeyPatch) -> Ssh:
    fake = Ssh()
    monkeypatch.setattr("evac.remote.bridges", fake)
    return fake


class Host:
    """A host's libvirt that answers only once its own bridge read has started (or says it
    waited in vain): a plan that read bridges after the snapshot could never see it up."""

    def __init__(self, name: str, ssh: Ssh) -> None:
        self.name = name
        spec = next(h for h in HOSTS if h.name == name)
        assert spec.ssh is not None
        self.ssh_started = ssh.started[spec.ssh.host]

    def alive(self) -> bool:
        return True

    def close(self) -> None: ...

    def capacity(self) -> Capacity:
        return Capacity(4096, 4096, 4)

    def guests(self, _is_shared: Any = None) -> tuple[Guest, ...]:
        if not self.ssh_started.wait(10):
            raise HostUnreachable(f"{self.name}: the bridge read never started while libvirt was read")
        return ()


def test_each_hosts_bridges_are_read_while_its_libvirt_is_read(ssh: Ssh) -> None:
    connections = Connections(connect=lambda name, _uri: Host(name, ssh))  # type: ignore[arg-type,return-value]
    statuses, bridges = survey(Inventory(hosts=HOSTS), connections)
    assert [s.state for s in statuses] == [Health.UP] * 3
    assert bridges == {h.name: {"br0": 1500} for h in HOSTS}


def test_a_host_whose_libvirt_port_does_not_answer_is_not_asked_over_ssh(ssh: Ssh) -> None:
    statuses, bridges = survey(Inventory(hosts=(SILENT,)), Connections())
    assert statuses[0].state == "unreachable" and bridges == {"silent": None}
    assert ssh.reads == []


def test_a_fenced_host_is_neither_read_nor_asked(ssh: Ssh) -> None:
    fenced = HOSTS[0]
    statuses, bridges = survey(Inventory(hosts=(fenced,)), Connections(), skip=[fenced.name])
    assert statuses[0].state == Health.DOWN and bridges == {fenced.name: None}
    assert ssh.reads == []


def check(target: HostSpec) -> Any:
    return network.evac_migration_tuning(guest=GUEST, source=HOSTS[0], target=target, options={})


def test_every_migration_check_of_a_job_reuses_the_bridges_its_plan_read(ssh: Ssh) -> None:
    connections = Connections(connect=lambda name, _uri: Host(name, ssh))  # type: ignore[arg-type,return-value]
    with connections.as_current():
        survey(Inventory(hosts=HOSTS), current())
        for target in (HOSTS[1], HOSTS[2], HOSTS[1], HOSTS[2]):
            assert "bridges br0 present on target" in check(target).notes
    assert sorted(ssh.reads) == ["198.51.100.1", "198.51.100.2", "198.51.100.3"]


def test_a_migration_check_refuses_a_target_without_the_guests_bridge(ssh: Ssh) -> None:
    ssh.present["198.51.100.2"] = {"br-other": 1500}
    with Connections().as_current(), pytest.raises(MigrationError, match="host2 has no bridge 'br0'"):
        check(HOSTS[1])


class Source:
    """The source's libvirt as the network plugin reads it for a renamed bridge."""

    def __init__(self) -> None:
        self.reads = 0

    def alive(self) -> bool:
        return True

    def close(self) -> None: ...

    def domain_xml(self, _name: str, migratable: bool = True, inactive: bool = False) -> str:
        self.reads += 1
        return "<domain><name>web1</name><devices><interface type='bridge'><source bridge='br0'/></interface></devices></domain>"


def test_a_renamed_bridge_is_rewritten_from_the_sources_definition_over_the_jobs_connection() -> None:
    source = HostSpec("host1", "test:///default", networks=(("vm", "br0"),))
    target = HostSpec("host2", "test:///default", networks=(("vm", "br-vm"),))
    libvirt = Source()
    connections = Connections(connect=lambda _name, _uri: libvirt)  # type: ignore[arg-type,return-value]
    with connections.as_current():
        for _ in range(3):
            tuning = network.evac_migration_tuning(guest=GUEST, source=source, target=target, options={})
    assert 'bridge="br-vm"' in tuning.params["destination_xml"]
    assert 'bridge="br-vm"' in tuning.params["persistent_xml"]
    assert (libvirt.reads, connections.opened) == (6, 1)
