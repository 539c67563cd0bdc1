"""Guests are read from domain XML: resources, disks' sharing, NICs and evac metadata."""

from __future__ import annotations

from evac.domainxml import EVAC_NS, parse_guest
from evac.model import Guest, GuestRules, Readiness

XML = f"""<domain type='qemu'>
  <name>web1</name><uuid>u-1</uuid>
  <memory unit='KiB'>262144</memory><currentMemory unit='KiB'>131072</currentMemory>
  <vcpu>2</vcpu>
  <metadata><evac:guest xmlns:evac="{EVAC_NS}" priority="7">
    <evac:anti-affinity group="web"/></evac:guest></metadata>
  <devices>
    <disk type='file' device='disk'><source file='/shared/web1.img'/><target dev='vda'/></disk>
    <disk type='file' device='disk'><source file='/var/lib/libvirt/images/scratch.qcow2'/><target dev='vdb'/></disk>
    <disk type='file' device='cdrom'><source file='/iso/x.iso'/><target dev='hdc'/><readonly/></disk>
    <interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='br0'/><mtu size='9000'/></interface>
  </devices>
</domain>"""


def guest() -> Guest:
    return parse_guest(XML, "host1", "running", True, lambda p: bool(p and p.startswith("/shared/")))


def test_current_memory_and_vcpus_are_read() -> None:
    g = guest()
    assert (g.name, g.memory_mib, g.vcpus) == ("web1", 128, 2)


def test_only_writable_disks_off_shared_storage_are_local() -> None:
    assert [d.target for d in guest().local_disks] == ["vdb"]


def test_bridge_interface_and_mtu_are_read() -> None:
    (nic,) = guest().interfaces
    assert (nic.kind, nic.source, nic.mtu) == ("bridge", "br0", 9000)


def test_priority_and_groups_come_from_evac_metadata() -> None:
    g = guest()
    assert (g.priority, g.anti_affinity) == (7, ("web",))


def rules_of(attributes: str) -> GuestRules:
    xml = f"<domain><name>g</name><metadata><evac:guest xmlns:evac='{EVAC_NS}' {attributes}/></metadata></domain>"
    return parse_guest(xml, "host1", "running", True, lambda _: True).rules


def test_placement_and_restart_rules_come_from_evac_metadata() -> None:
    found = rules_of('hosts="host1, host2" prefer="host2" after="db,dns" ready="echo" ha-protected="no"')
    assert found == GuestRules(("host1", "host2"), ("host2",), ("db", "dns"), Readiness.ECHO, False)


def test_rules_the_metadata_spells_wrong_count_as_not_said() -> None:
    assert rules_of('ready="soon" ha-protected="perhaps"') == GuestRules()
