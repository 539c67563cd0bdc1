"""A guest's bridge on one host maps to the target's bridge through the network's name."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from evac.domainxml import EVAC_NS, with_bridges
from evac.networks import bridge_on, renames

OLD = (("storage", "br-st"), ("vm", "br0"))
NEW = (("storage", "br-st"), ("vm", "br-vm"))


def test_a_bridge_maps_through_its_network_name() -> None:
    assert bridge_on(NEW, OLD, "br0") == "br-vm"


def test_a_bridge_no_map_mentions_keeps_its_name() -> None:
    assert bridge_on(NEW, OLD, "br9") == "br9"


def test_a_network_the_target_does_not_map_keeps_the_name() -> None:
    assert bridge_on((), OLD, "br0") == "br0"


def test_only_differing_names_are_renames() -> None:
    assert renames(["br0", "br-st", "br9"], OLD, NEW) == {"br0": "br-vm"}


DOMAIN = f"""<domain type='qemu'>
  <name>g1</name>
  <metadata><evac:guest xmlns:evac='{EVAC_NS}'><evac:priority>5</evac:priority></evac:guest></metadata>
  <devices>
    <interface type='bridge'><source bridge='br0'/><model type='virtio'/></interface>
    <interface type='bridge'><source bridge='br-st'/></interface>
    <interface type='network'><source network='br0'/></interface>
  </devices>
</domain>"""


def test_the_domain_xml_moves_only_the_renamed_bridge_interfaces() -> None:
    root = ET.fromstring(with_bridges(DOMAIN, {"br0": "br-vm"}))
    assert [(i.get("type"), i.find("source").attrib) for i in root.iter("interface")] == [  # type: ignore[union-attr]
        ("bridge", {"bridge": "br-vm"}),
        ("bridge", {"bridge": "br-st"}),
        ("network", {"network": "br0"}),
    ]


def test_the_rewritten_xml_keeps_the_evac_metadata_prefix() -> None:
    assert "<evac:priority>5</evac:priority>" in with_bridges(DOMAIN, {"br0": "br-vm"})
