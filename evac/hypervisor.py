"""The one door to libvirt: every libvirt call in evac goes through this module.

Keeping libvirt behind one adapter means libvirt errors become evac's own exceptions in
one place, keepalive and the event loop are set up once, and the rest of the code (and
its tests) deals only in model dataclasses.
"""

from __future__ import annotations

import logging
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import libvirt

from .dirtyrate import DirtyRateMeasurement
from .domainxml import EVAC_NS, parse_guest
from .errors import DiskInUse, EvacError, HostUnreachable, MigrationError, NotFound, TransientError
from .model import Capacity, Guest

log = logging.getLogger("evac.hypervisor")

# libvirt prints every error on stderr by default; our exceptions carry the same text.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}

# A post-copy migration's source, paused while the destination runs the guest, and after
# the migration failed (the destination died): its memory is no longer the guest's.
POSTCOPY_SOURCE = (libvirt.VIR_DOMAIN_PAUSED_POSTCOPY, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED)

UNREACHABLE_CODES = {
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_AUTH_FAILED,
}
TRANSIENT_CODES = {
    libvirt.VIR_ERR_OPERATION_TIMEOUT,
    libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
    libvirt.VIR_ERR_RESOURCE_BUSY,
}
NOT_FOUND_CODES = {libvirt.VIR_ERR_NO_DOMAIN}
# A second writer refused: by libvirt's lock manager (lockd, sanlock), or by QEMU's own
# image locking, which answers first wherever the file system's locks reach both hosts.
DISK_IN_USE = ("Lockspace resource", "is locked", 'Failed to get "write" lock')

MIGRATE_BASE = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PEER2PEER
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
)
# Flags plugins may ask for by name, so they never import libvirt.
MIGRATE_FLAGS = {
    "UNSAFE": libvirt.VIR_MIGRATE_UNSAFE,
    "COMPRESSED": libvirt.VIR_MIGRATE_COMPRESSED,
    "AUTO_CONVERGE": libvirt.VIR_MIGRATE_AUTO_CONVERGE,
    "POSTCOPY": libvirt.VIR_MIGRATE_POSTCOPY,
    "NON_SHARED_DISK": libvirt.VIR_MIGRATE_NON_SHARED_DISK,
    "PARALLEL": libvirt.VIR_MIGRATE_PARALLEL,
    "TLS": libvirt.VIR_MIGRATE_TLS,
    "ABORT_ON_ERROR": libvirt.VIR_MIGRATE_ABORT_ON_ERROR,
    "TUNNELLED": libvirt.VIR_MIGRATE_TUNNELLED,
}


def state_name(state: int, reason: int) -> str:
    """A guest's state; one shut off by a fault (its QEMU killed or failed) reads ``crashed``,
    like a guest panic, so it is never mistaken for one an operator stopped."""
    faults = (libvirt.VIR_DOMAIN_SHUTOFF_CRASHED, libvirt.VIR_DOMAIN_SHUTOFF_FAILED)
    if state == libvirt.VIR_DOMAIN_SHUTOFF and reason in faults:
        return "crashed"
    return STATES.get(state, str(state))


# A guest that stopped without being asked to: what evac's guest restarts act on. libvirt
# 9.0 reports a QEMU killed under it (kill -9, the OOM killer) as the event STOPPED/FAILED,
# while the guest's state then reads SHUTOFF/CRASHED. A guest panic (pvpanic) is the event
# CRASHED, then STOPPED/CRASHED once libvirt destroyed it (on_crash: destroy, the default).
# A shutdown, a destroy, a save or a migration away is none of these.
DOWN_EVENTS = {
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED): "failed",
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED): "crashed",
}
STOP_REASONS = {libvirt.VIR_DOMAIN_SHUTOFF_FAILED: "failed", libvirt.VIR_DOMAIN_SHUTOFF_CRASHED: "crashed"}


def down_reason(event: int, detail: int) -> str | None:
    """``failed`` or ``crashed`` for a lifecycle event of a guest that went down by a fault;
    None for any other event."""
    if event == libvirt.VIR_DOMAIN_EVENT_CRASHED:
        return "crashed"
    return DOWN_EVENTS.get((event, detail))


def stop_reason(state: int, reason: int) -> str | None:
    """``failed`` or ``crashed`` for a guest a fault stopped (or a panic holds, with
    on_crash: preserve), read from its state; None for one running or stopped on purpose."""
    if state == libvirt.VIR_DOMAIN_CRASHED:
        return "crashed"
    if state == libvirt.VIR_DOMAIN_SHUTOFF:
        return STOP_REASONS.get(reason)
    return None


def error_class(code: int) -> type[EvacError]:
    """Which evac exception a libvirt error code becomes."""
    if code in UNREACHABLE_CODES:
        return HostUnreachable
    if code in NOT_FOUND_CODES:
        return NotFound
    if code in TRANSIENT_CODES:
        return TransientError
    return EvacError


def translate(exc: libvirt.libvirtError, context: str) -> EvacError:
    code = exc.get_error_code() or 0
    message = exc.get_error_message() or str(exc)
    if any(sign in message for sign in DISK_IN_USE):
        return DiskInUse(f"{context}: {message}")
    return error_class(code)(f"{context}: {message}")


@contextmanager
def mapped_errors(context: str, as_class: type[EvacError] | None = None) -> Iterator[None]:
    try:
        yield
    except libvirt.libvirtError as exc:
        err = translate(exc, context)
        if as_class is not None and type(err) is EvacError:
            err = as_class(str(err))
        raise err from None


UNDEFINE_STALE = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM
UNDEFINE_BASIC = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE  # all the test driver knows of those

_loop_lock = threading.Lock()
_loop_started = False


def start_event_loop() -> None:
    """Keepalive, close callbacks and domain events need libvirt's event loop running."""
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


class Hypervisor:
    """One connection to one host's libvirt daemon."""

    def __init__(self, name: str, uri: str, conn: Any) -> None:
        self.name = name
        self.uri = uri
        self._conn = conn

    @classmethod
    def connect(cls, name: str, uri: str, keepalive: tuple[int, int] | None = (2, 3)) -> Hypervisor:
        start_event_loop()
        with mapped_errors(f"{name}: cannot connect to {uri}", HostUnreachable):
            conn = libvirt.open(uri)
            if keepalive:
                conn.setKeepAlive(*keepalive)
        return cls(name, uri, conn)

    def close(self) -> None:
        try:
            self._conn.close()
        except libvirt.libvirtError:
            pass

    def __enter__(self) -> Hypervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def on_close(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(reason)`` when the connection drops (keepalive, EOF, error)."""
        reasons = {0: "error", 1: "eof", 2: "keepalive", 3: "client"}

        def fire(_conn: Any, reason: int, _opaque: Any) -> None:
            callback(reasons.get(reason, str(reason)))

        self._conn.registerCloseCallback(fire, None)

    def on_lifecycle(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(guest)`` on every lifecycle event of a guest of this host
        (defined, started, stopped, crashed, migrated...)."""

        def fire(_conn: Any, dom: Any, _event: int, _detail: int, _opaque: Any) -> None:
            callback(dom.name())

        with mapped_errors(f"{self.name}: subscribing to guest events"):
            self._conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, fire, None)

    def on_guest_down(self, callback: Callable[[str, str], None]) -> None:
        """Call ``callback(guest, reason)`` when a guest of this host goes down by a fault:
        ``failed`` (its QEMU died) or ``crashed`` (a guest panic). One death may be told
        twice (a panic: CRASHED, then STOPPED/CRASHED); ``Jobs.guest_failed`` makes it one
        job. Events reach only a live connection: a periodic :meth:`guest_stop_reason`
        catches a death told while it was down."""

        def fire(_conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
            reason = down_reason(event, detail)
            if reason is None:
                return
            try:
                callback(dom.name(), reason)
            except Exception:  # libvirt's event thread must outlive a subscriber's bug
                log.exception("%s: guest-down subscriber failed", self.name)

        with mapped_errors(f"{self.name}: subscribing to guest events"):
            self._conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, fire, None)

    def guest_stop_reason(self, name: str) -> str | None:
        """``failed`` or ``crashed`` when a fault stopped the guest (see :func:`stop_reason`),
        None when it runs or was stopped on purpose."""
        dom = self._lookup(name)
        with mapped_errors(f"{self.name}: state of '{name}'"):
            state, reason = dom.state()
        return stop_reason(state, reason)

    def alive(self) -> bool:
        try:
            return bool(self._conn.isAlive())
        except libvirt.libvirtError:
            return False

    def capacity(self) -> Capacity:
        with mapped_errors(f"{self.name}: reading capacity"):
            info = self._conn.getInfo()
            free = self._conn.getFreeMemory()
        return Capacity(memory_mib=int(info[1]), free_memory_mib=int(free // 1024 // 1024), cpus=int(info[2]))

    def guests(self, is_shared: Callable[[str | None], bool] = lambda _p: False) -> tuple[Guest, ...]:
        with mapped_errors(f"{self.name}: listing guests"):
            domains = self._conn.listAllDomains(0)
        result = []
        for dom in domains:
            try:
                result.append(self._guest(dom, is_shared))
            except NotFound:
                continue  # vanished while we listed (migrated away, undefined)
        return tuple(sorted(result, key=lambda g: g.name))

    def guest(self, name: str, is_shared: Callable[[str | None], bool] = lambda _p: False) -> Guest:
        return self._guest(self._lookup(name), is_shared)

    def has_guest(self, name: str) -> bool:
        try:
            self._lookup(name)
        except NotFound:
            return False
        return True

    def postcopy_source(self, name: str) -> bool:
        """Whether ``name`` is paused here as the source of a post-copy migration (going on,
        or failed): the guest runs at the destination, or died with it, never here."""
        dom = self._lookup(name)
        with mapped_errors(f"{self.name}: reading the state of '{name}'"):
            state, reason = dom.state()
        return state == libvirt.VIR_DOMAIN_PAUSED and reason in POSTCOPY_SOURCE

    def _guest(self, dom: Any, is_shared: Callable[[str | None], bool]) -> Guest:
        with mapped_errors(f"{self.name}: reading guest"):
            xml = dom.XMLDesc(0)
            state, reason = dom.state()
            persistent = bool(dom.isPersistent())
        return parse_guest(xml, self.name, state_name(state, reason), persistent, is_shared)

    def set_guest_metadata(self, name: str, attribute: str, value: str | None) -> None:
        """Set one attribute of the guest's ``<evac:guest>`` metadata (None removes it),
        keeping its other attributes and elements: in the running guest and in its
        persistent definition, whichever it has, so the change holds now and after a
        restart. libvirt replaces the namespace's whole element, hence the read first."""
        dom = self._lookup(name)
        with mapped_errors(f"{self.name}: metadata of '{name}'"):
            scopes = [libvirt.VIR_DOMAIN_AFFECT_LIVE] if dom.isActive() else []
            scopes += [libvirt.VIR_DOMAIN_AFFECT_CONFIG] if dom.isPersistent() else []
            for scope in scopes:
                try:
                    current = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, EVAC_NS, scope)
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                        raise
                    current = None
                changed = with_attribute(current, attribute, value)
                dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, changed, "evac", EVAC_NS, scope)

    def _lookup(self, name: str) -> Any:
        with mapped_errors(f"{self.name}: guest '{name}'"):
            return self._conn.lookupByName(name)

    def agent_ping(self, name: str, timeout: int = 1) -> bool | None:
        """Whether the guest's QEMU guest agent answers a ``guest-ping``: True, False (not
        yet), or None when the guest has no agent channel and never will."""
        import libvirt_qemu

        domain = self._lookup(name)
        try:
            libvirt_qemu.qemuAgentCommand(domain, '{"execute": "guest-ping"}', timeout, 0)
        except libvirt.libvirtError as exc:
            # libvirt (qemuDomainAgentAvailable): no agent channel in the definition is
            # ARGUMENT_UNSUPPORTED ("not configured"); a channel nobody answers on yet is
            # AGENT_UNRESPONSIVE ("not connected") or a timeout, which a later ping may pass.
            return None if exc.get_error_code() == libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED else False
        return True

    def measure_dirty_rate(self, name: str) -> DirtyRateMeasurement:
        """Start QEMU measuring how fast the guest dirties memory (1 s; poll the answer)."""
        return DirtyRateMeasurement(self._lookup(name))

    def domain_xml(self, name: str, migratable: bool = True, inactive: bool = False) -> str:
        """The live definition, or with ``inactive`` the persistent one (what the next boot uses)."""
        flags = libvirt.VIR_DOMAIN_XML_MIGRATABLE if migratable else 0
        flags |= libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        with mapped_errors(f"{self.name}: guest '{name}'"):
            return str(self._lookup(name).XMLDesc(flags))

    def define(self, xml: str) -> None:
        with mapped_errors(f"{self.name}: defining guest"):
            self._conn.defineXML(xml)

    def start(self, name: str) -> None:
        with mapped_errors(f"{self.name}: starting '{name}'"):
            self._lookup(name).create()

    def destroy(self, name: str) -> None:
        dom = self._lookup(name)
        with mapped_errors(f"{self.name}: destroying '{name}'"):
            if dom.isActive():
                dom.destroy()

    def undefine(self, name: str) -> None:
        """Remove a definition evac no longer wants here (a stale copy, one it left behind).
        A managed save goes with it: restored, it would run the guest's old memory over a
        disk that moved on. Its NVRAM file is kept, as it may be the real guest's. Snapshot
        and checkpoint metadata still refuse the undefine: it may be their only record, so
        a person decides. A driver that knows fewer flags (the test driver) is asked with
        the one it knows."""
        dom = self._lookup(name)
        with mapped_errors(f"{self.name}: undefining '{name}'"):
            try:
                dom.undefineFlags(UNDEFINE_STALE)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
                    raise
                dom.undefineFlags(UNDEFINE_BASIC)

    def live_migrate(
        self,
        name: str,
        dest_uri: str,
        params: dict[str, Any] | None = None,
        flags: Iterable[str] = (),
        keep_source: bool = False,
    ) -> None:
        """Peer-to-peer live migration, persistent on the destination, undefined here.

        ``flags`` names extra ``VIR_MIGRATE_*`` flags without the prefix (``UNSAFE``,
        ``AUTO_CONVERGE``, ...). On failure the guest keeps running here.
        ``keep_source`` leaves the (now inactive) definition here, so the completed job's
        statistics can still be read from it, which post-copy leaves only on the source.
        """
        bits = MIGRATE_BASE & ~libvirt.VIR_MIGRATE_UNDEFINE_SOURCE if keep_source else MIGRATE_BASE
        for flag in flags:
            try:
                bits |= MIGRATE_FLAGS[flag]
            except KeyError:
                raise EvacError(f"unknown migration flag {flag!r}") from None
        dom = self._lookup(name)
        with mapped_errors(f"{self.name}: migrating '{name}' to {dest_uri}", MigrationError):
            dom.migrateToURI3(dest_uri, dict(params or {}), bits)

    def job_stats(self, name: str) -> dict[str, Any]:
        """The running job's statistics, or ``{}`` when no job runs."""
        try:
            stats = self._lookup(name).jobStats(0)
        except (libvirt.libvirtError, NotFound):
            return {}
        return dict(stats) if stats.get("type", 0) != libvirt.VIR_DOMAIN_JOB_NONE else {}

    def completed_stats(self, name: str) -> dict[str, Any]:
        """Statistics of the last finished job (downtime, bytes), or ``{}``."""
        try:
            stats = self._lookup(name).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        except (libvirt.libvirtError, NotFound):
            return {}
        return dict(stats) if stats.get("type", 0) != libvirt.VIR_DOMAIN_JOB_NONE else {}

    def set_max_speed(self, name: str, mib_per_second: int) -> None:
        with mapped_errors(f"{self.name}: bandwidth of '{name}'"):
            self._lookup(name).migrateSetMaxSpeed(mib_per_second, 0)

    def library_version(self) -> int:
        """libvirt's version on the host, as major * 1,000,000 + minor * 1,000 + release."""
        with mapped_errors(f"{self.name}: libvirt version"):
            return int(self._conn.getLibVersion())

    def hypervisor_version(self) -> int:
        """QEMU's version on the host (``conn.getVersion()``), encoded like :meth:`library_version`."""
        with mapped_errors(f"{self.name}: hypervisor version"):
            return int(self._conn.getVersion())

    def autostart(self, name: str) -> bool:
        """Does libvirtd start this guest by itself when it starts (``virsh autostart``)?"""
        dom = self._lookup(name)
        with mapped_errors(f"{self.name}: autostart of '{name}'"):
            return bool(dom.autostart())

    def set_autostart(self, name: str, on: bool) -> None:
        dom = self._lookup(name)
        with mapped_errors(f"{self.name}: autostart of '{name}'"):
            dom.setAutostart(1 if on else 0)

    def start_transient(self, xml: str, paused: bool = False) -> None:
        """Start a guest that leaves no definition behind once destroyed (the doctor's probe)."""
        flags = libvirt.VIR_DOMAIN_START_PAUSED if paused else 0
        with mapped_errors(f"{self.name}: starting a transient guest"):
            self._conn.createXML(xml, flags)

    def ensure_dir_pool(self, name: str, path: str) -> None:
        """A started, autostarted directory pool, so storage migration can create disks here."""
        with mapped_errors(f"{self.name}: storage pool '{name}'"):
            try:
                pool = self._conn.storagePoolLookupByName(name)
            except libvirt.libvirtError:
                xml = f"<pool type='dir'><name>{name}</name><target><path>{path}</path></target></pool>"
                pool = self._conn.storagePoolDefineXML(xml, 0)
            if not pool.isActive():
                pool.create(0)
            pool.setAutostart(1)

    def refresh_pools(self) -> None:
        """Rescan active pools: a volume deleted behind libvirt's back makes migration fail."""
        with mapped_errors(f"{self.name}: refreshing pools"):
            for pool in self._conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
                pool.refresh(0)

    def abort_job(self, name: str) -> None:
        with mapped_errors(f"{self.name}: aborting job of '{name}'"):
            self._lookup(name).abortJob()

    def set_max_downtime(self, name: str, milliseconds: int) -> None:
        with mapped_errors(f"{self.name}: max downtime of '{name}'"):
            self._lookup(name).migrateSetMaxDowntime(milliseconds, 0)

    def start_postcopy(self, name: str) -> None:
        with mapped_errors(f"{self.name}: post-copy of '{name}'"):
            self._lookup(name).migrateStartPostCopy(0)


def with_attribute(element: str | None, attribute: str, value: str | None) -> str:
    """The evac metadata element (as libvirt returns it: without its namespace) with one
    attribute set or removed; ``<guest/>`` when there was none. libvirt puts the namespace
    back on the element and its children when it stores it."""
    root = ET.fromstring(element) if element and element.strip() else ET.Element("guest")
    for node in root.iter():
        node.tag = node.tag.rsplit("}", 1)[-1]  # plain names: libvirt injects its own namespace
    if value is None:
        root.attrib.pop(attribute, None)
    else:
        root.set(attribute, value)
    return ET.tostring(root, encoding="unicode")
