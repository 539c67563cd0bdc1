"""Reading libvirt domain XML into the model, without libvirt.

Kept apart from the adapter so placement inputs can be built from plain XML in tests,
and so the evac metadata namespace (priority, affinity groups, restart limits, the
guest's address and tags, its network check) is defined in one place.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping

from .model import Disk, Guest, GuestRules, HaMetadata, Interface, Readiness, VerifyMetadata

EVAC_NS = "https://evac.dev/xmlns/guest/1"
ET.register_namespace("evac", EVAC_NS)  # rewritten XML keeps the prefix people read

_UNITS = {
    "b": 1 / 1024 / 1024,
    "bytes": 1 / 1024 / 1024,
    "k": 1 / 1024,
    "kib": 1 / 1024,
    "kb": 1000 / 1024 / 1024,
    "m": 1,
    "mib": 1,
    "mb": 1e6 / 1024 / 1024,
    "g": 1024,
    "gib": 1024,
    "gb": 1e9 / 1024 / 1024,
}


def memory_mib(element: ET.Element | None) -> int:
    if element is None or not (element.text or "").strip():
        return 0
    unit = element.get("unit", "KiB").lower()
    return int(int(element.text.strip()) * _UNITS.get(unit, 1 / 1024))  # type: ignore[union-attr]


def parse_guest(
    xml: str,
    host: str,
    state: str,
    persistent: bool,
    is_shared: Callable[[str | None], bool],
) -> Guest:
    root = ET.fromstring(xml)
    current = root.find("currentMemory")
    mem = memory_mib(current if current is not None else root.find("memory"))
    vcpu = root.find("vcpu")
    vcpus = int(vcpu.text) if vcpu is not None and vcpu.text else 1
    disks = tuple(
        _disk(d, is_shared)
        for d in root.findall("./devices/disk")
        if d.get("device", "disk") in ("disk", "cdrom", "lun")
    )
    interfaces = tuple(_interface(i) for i in root.findall("./devices/interface"))
    meta = root.find(f"./metadata/{{{EVAC_NS}}}guest")
    priority = 0
    anti: tuple[str, ...] = ()
    aff: tuple[str, ...] = ()
    ha = HaMetadata()
    address: str | None = None
    tags: tuple[str, ...] = ()
    verify = VerifyMetadata()
    rules = GuestRules()
    if meta is not None:
        priority = int(meta.get("priority", "0"))
        anti = tuple(e.get("group", "") for e in meta.findall(f"{{{EVAC_NS}}}anti-affinity"))
        aff = tuple(e.get("group", "") for e in meta.findall(f"{{{EVAC_NS}}}affinity"))
        ha = _ha(meta)
        address = (meta.get("address") or "").strip() or None
        tags = _tags(meta.get("tags", ""))
        verify = VerifyMetadata(meta.get("verify-network"), meta.get("verify-timeout"))
        rules = _rules(meta)
    return Guest(
        name=root.findtext("name", ""),
        uuid=root.findtext("uuid", ""),
        host=host,
        state=state,
        memory_mib=mem,
        vcpus=vcpus,
        persistent=persistent,
        disks=disks,
        interfaces=interfaces,
        priority=priority,
        anti_affinity=anti,
        affinity=aff,
        ha=ha,
        address=address,
        tags=tags,
        verify=verify,
        rules=rules,
    )


def _rules(meta: ET.Element) -> GuestRules:
    """``<evac:guest hosts="host1,host2" prefer="host1" after="db,dns" ready="echo"
    ha-protected="yes"/>``. A ``ready`` or ``ha-protected`` it cannot read counts as not
    said (the tag rules or the defaults apply), so one guest's typo never hides its host's
    other guests; ``evac ha capacity`` and the plan name what they used."""
    ready = (meta.get("ready") or "").strip().lower()
    protected = (meta.get("ha-protected") or "").strip().lower()
    return GuestRules(
        hosts=_tags(meta.get("hosts", "")),
        prefer=_tags(meta.get("prefer", "")),
        after=_tags(meta.get("after", "")),
        ready=Readiness(ready) if ready in set(Readiness) else None,
        protected=True if protected in TRUE else False if protected in FALSE else None,
    )


TRUE = ("yes", "true", "1", "on")
FALSE = ("no", "false", "0", "off")


def _ha(meta: ET.Element) -> HaMetadata:
    """``<evac:guest ha-max-restart="2" ha-max-relocate="1" ha-window="600" ha-tags="web,db"/>``."""
    tags = _tags(meta.get("ha-tags", ""))
    return HaMetadata(meta.get("ha-max-restart"), meta.get("ha-max-relocate"), meta.get("ha-window"), tags)


def _tags(text: str) -> tuple[str, ...]:
    """``"web, db"`` reads ``("web", "db")``."""
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _disk(element: ET.Element, is_shared: Callable[[str | None], bool]) -> Disk:
    kind = element.get("type", "file")
    source = element.find("source")
    target = element.find("target")
    path: str | None = None
    if source is not None:
        path = source.get("file") or source.get("dev") or source.get("name")
    readonly = element.find("readonly") is not None or element.get("device") == "cdrom"
    shared = kind == "network" or element.find("shareable") is not None or is_shared(path)
    return Disk(
        target=target.get("dev", "") if target is not None else "",
        path=path,
        kind=kind,
        shared=shared,
        readonly=readonly,
    )


def _interface(element: ET.Element) -> Interface:
    kind = element.get("type", "")
    source = element.find("source")
    name = ""
    if source is not None:
        name = source.get("bridge") or source.get("network") or source.get("dev") or ""
    mac = element.find("mac")
    mtu = element.find("mtu")
    return Interface(
        kind=kind,
        source=name,
        mac=mac.get("address", "") if mac is not None else "",
        mtu=int(mtu.get("size", "0")) if mtu is not None else None,
    )


def with_bridges(xml: str, renames: Mapping[str, str]) -> str:
    """The same domain with its bridge interfaces moved to other bridges by name."""
    if not renames:
        return xml
    root = ET.fromstring(xml)
    for source in root.findall("./devices/interface[@type='bridge']/source"):
        bridge = source.get("bridge", "")
        if bridge in renames:
            source.set("bridge", renames[bridge])
    return ET.tostring(root, encoding="unicode")
