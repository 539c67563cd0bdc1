"""The plain data evac reasons about: what runs where, and how much room is left.

Everything here is a frozen dataclass built by the hypervisor adapter (or by tests);
planning functions take these and never talk to libvirt themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final


@dataclass(frozen=True)
class Disk:
    target: str
    path: str | None
    kind: str  # file, block, network, volume
    shared: bool
    readonly: bool = False


@dataclass(frozen=True)
class Interface:
    kind: str  # bridge, network, direct, ...
    source: str
    mac: str = ""
    mtu: int | None = None


@dataclass(frozen=True)
class HaMetadata:
    """A guest's own restart limits from its ``ha-*`` metadata, as written there.

    Kept as text and checked where it is used (:mod:`evac.restartpolicy`), so a typo in
    one guest's metadata is reported for that guest instead of stopping evac from
    listing every guest of its host."""

    max_restart: str | None = None
    max_relocate: str | None = None
    window: str | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class VerifyMetadata:
    """How a guest's network is checked once it has moved, from its ``verify-*`` metadata.

    Kept as text like :class:`HaMetadata`, and checked where it is used
    (:mod:`evac.verification`): ``network`` is ``icmp``, ``tcp PORT``, ``udp-echo PORT`` or
    ``none``; ``timeout`` the seconds it has to answer."""

    network: str | None = None
    timeout: str | None = None


class Readiness(StrEnum):
    """When a guest counts as ready for the guests restarted ``after`` it (vSphere's
    "start B after A is ready"): its QEMU runs, its guest agent answers, or its address
    answers echoes."""

    STARTED = "started"
    AGENT = "agent"
    ECHO = "echo"


@dataclass(frozen=True)
class GuestRules:
    """Where a guest may run and in what order it comes back, from its own metadata.

    ``None`` and empty mean "its metadata does not say": the ``guests:`` section's tag
    rules fill those in (:func:`evac.guestrules.resolve`)."""

    hosts: tuple[str, ...] = ()  # must run on one of these
    prefer: tuple[str, ...] = ()  # should run on one of these
    after: tuple[str, ...] = ()  # guests or tags restarted (and ready) before this one
    ready: Readiness | None = None  # when this guest is ready for those after it
    protected: bool | None = None  # restarted by evac after a host failure


ACTIVE: Final[tuple[str, ...]] = ("running", "paused")
"""The states evac counts as a guest running: it holds its memory and host room, and is
not started anywhere else (``GONE`` in the failover plugin is the stricter "no QEMU left")."""


@dataclass(frozen=True)
class Guest:
    name: str
    uuid: str
    host: str
    state: str  # running, paused, shutoff, crashed, ...
    memory_mib: int
    vcpus: int
    persistent: bool
    disks: tuple[Disk, ...] = ()
    interfaces: tuple[Interface, ...] = ()
    priority: int = 0
    anti_affinity: tuple[str, ...] = ()
    affinity: tuple[str, ...] = ()
    ha: HaMetadata = HaMetadata()
    address: str | None = None  # where it answers on its network (the ``address`` metadata)
    tags: tuple[str, ...] = ()  # the ``tags`` metadata: what ``verify.network.tags`` (and ``ha-tags``) match
    verify: VerifyMetadata = VerifyMetadata()
    rules: GuestRules = GuestRules()

    @property
    def local_disks(self) -> tuple[Disk, ...]:
        return tuple(d for d in self.disks if not d.shared and not d.readonly)


@dataclass(frozen=True)
class Capacity:
    memory_mib: int
    free_memory_mib: int
    cpus: int


@dataclass(frozen=True)
class HostStatus:
    """One host as seen right now: reachable or not, its room, and its guests."""

    name: str
    uri: str
    state: str  # Health.UP, Health.DOWN (not probed: fenced), or "unreachable"
    capacity: Capacity | None = None
    guests: tuple[Guest, ...] = ()
    error: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
