"""The fleet as the operator declares it (``hosts.yaml``), validated with file:line errors.

The inventory says what should exist and how to reach it; what actually runs there is
read live through the hypervisor adapter. Given the registered fence methods
(``evac.fencing.fence_methods(pm)``), each ``fence:`` entry is checked too: the method
exists, its required settings are there, and it has no setting the method does not know.

Every host is named one way only: names and addresses are unique, and no address is
another host's name, so an alert naming a host (:meth:`Inventory.lookup`) can never pick
the wrong one. The file itself must be one only root or the current user can change
(:func:`check_trusted_file`): whoever can edit the inventory chooses what evac fences.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import stat
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import ConfigError, NotFound
from .networks import Networks
from .yamldoc import Mapping, Sequence, Where, load_file, suggest


class MethodSettings(Protocol):
    """What the loader checks a ``fence:`` entry against: a registered method's settings
    (``evac.fencing.FenceMethod`` is one; ``optional=None`` accepts any other)."""

    @property
    def required(self) -> tuple[str, ...]: ...
    @property
    def optional(self) -> tuple[str, ...] | None: ...
    @property
    def settings(self) -> tuple[str, ...]: ...


# Patterns are used with fullmatch only: ``$`` would let a trailing newline through.
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
HOSTNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,252}")  # a DNS name (or an IPv4 address)


def is_address(text: str) -> bool:
    """A host name, or any IP address Python parses (``::1`` too)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return bool(HOSTNAME.fullmatch(text))
    return True


# driver[+transport]://[user@]host[:port]/system[?options]
URI = re.compile(r"(?P<driver>[a-z0-9]+)(?:\+(?P<transport>[a-z0-9]+))?://[^\s/]*/[a-z]+(?:\?\S*)?")
URI_DRIVERS = ("qemu", "test")
URI_TRANSPORTS = ("tcp", "tls", "ssh", "libssh", "libssh2", "unix", "ext")
BRIDGE = re.compile(r"[A-Za-z0-9_.:-]{1,15}")  # a Linux interface name
# Fence settings that name a file holding a secret: resolved against the inventory's
# directory, and checked by ``evac config check`` (exists, not readable by others).
FENCE_SECRET_FILES = ("password_file", "identity_file")


@dataclass(frozen=True)
class SshSpec:
    host: str
    user: str = "root"
    port: int = 22
    key: str | None = None
    known_hosts: str | None = None


@dataclass(frozen=True)
class FenceSpec:
    method: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HostSpec:
    name: str
    uri: str
    address: str | None = None
    ssh: SshSpec | None = None
    fence: tuple[FenceSpec, ...] = ()
    tags: tuple[str, ...] = ()
    reserved_memory_mib: int = 0
    reserved_cpus: int = 0
    spare: bool = False
    capacity_memory_mib: int | None = None
    capacity_cpus: int | None = None
    networks: Networks = ()  # (network, bridge): this host's bridge for each named network


class AmbiguousHost(ConfigError):
    """A name or address that could mean more than one host; ``candidates`` names them all."""

    def __init__(self, source: str, key: str, candidates: list[tuple[str, str]]) -> None:
        named = " and ".join(f"the {how} of host '{name}'" for name, how in candidates)
        super().__init__(
            f"{source}: '{key}' is ambiguous: it is {named}; nothing done. "
            "Give each host an address no other host has as its name or address"
        )
        self.candidates = [name for name, _ in candidates]


def address_key(address: str) -> str:
    """How addresses compare: IP addresses by value (``::1`` is ``0::1``), names without case."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address.lower()


@dataclass(frozen=True)
class Inventory:
    hosts: tuple[HostSpec, ...]
    shared_storage: tuple[str, ...] = ()
    source: str = "<memory>"
    plugins: tuple[str, ...] = ()  # plugin modules this fleet needs (the lab's fence), opted in by name

    def host(self, name: str) -> HostSpec:
        for spec in self.hosts:
            if spec.name == name:
                return spec
        known = [h.name for h in self.hosts]
        raise ConfigError(f"unknown host '{name}'{suggest(name, known)}; known: {', '.join(known)}")

    def lookup(self, name_or_address: str) -> HostSpec:
        """The host an alert or a webhook names: by name, then by address (IP addresses
        compared as addresses, names without case).

        ``NotFound`` when no host matches. ``AmbiguousHost``, naming every candidate, when
        more than one could be meant (one host's name and another's address, or two
        addresses): a webhook for kvm4 never drains kvm3. The loader refuses inventories
        where that can happen; only one built in memory gets this far.
        """
        key = name_or_address
        candidates = [(h, "name") for h in self.hosts if h.name == key]
        wanted = address_key(key)
        for spec in self.hosts:
            if (
                spec.address is not None
                and address_key(spec.address) == wanted
                and spec not in (h for h, _ in candidates)
            ):
                candidates.append((spec, "address"))
        if len(candidates) == 1:
            return candidates[0][0]
        if candidates:
            raise AmbiguousHost(self.source, key, [(h.name, how) for h, how in candidates])
        known = [h.name for h in self.hosts]
        raise NotFound(f"unknown host '{key}'{suggest(key, known)}; known: {', '.join(known)}")

    def is_shared(self, path: str | None) -> bool:
        """True when ``path`` lies on storage that every host sees at the same path."""
        if not path:
            return False
        real = os.path.normpath(path)
        return any(
            real == root or real.startswith(root.rstrip("/") + "/")
            for root in (os.path.normpath(s) for s in self.shared_storage)
        )


TOP_FIELDS = ("hosts", "shared_storage", "plugins")
MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
HOST_FIELDS = ("name", "uri", "address", "ssh", "fence", "tags", "reserved", "capacity", "spare", "networks")
SSH_FIELDS = ("host", "user", "port", "key", "known_hosts")
RESERVED_FIELDS = ("memory_mib", "cpus")


def load_inventory(
    path: Path | str,
    fence_methods: AbcMapping[str, MethodSettings] | None = None,
    *,
    allow_unlisted_methods: bool = False,
) -> Inventory:
    """Load and check ``hosts.yaml``; every problem is a ``ConfigError`` naming file:line and field.

    ``fence_methods`` (``evac.fencing.fence_methods(pm)``) turns on the checks of ``fence:``
    entries; None skips them. ``allow_unlisted_methods`` lets a method no registration
    names pass: a plugin may still provide it through the older ``evac_fence_agent`` hook
    (``evac.fencing.legacy_fence_agent_plugins(pm)`` says whether one is loaded).
    """
    check_trusted_file(Path(path))
    return parse_inventory(load_file(path), str(path), fence_methods, allow_unlisted_methods=allow_unlisted_methods)


def check_trusted_file(path: Path, kind: str = "inventory") -> None:
    """Refuse a file (the inventory, ``evac.yaml``) that someone other than root or the
    current user could have written or replaced: the file and every directory above it
    must be owned by one of them and not writable by group or others; a directory with
    the sticky bit (``/tmp``) is fine above the file's own, since nobody else may rename
    what is in it. A file that does not exist is left to the loader's "cannot read"."""
    me = os.geteuid()
    for target in dict.fromkeys((path, path.resolve())):  # a symlink: its own directories and the file's
        chain = [(target, "file"), (target.parent, "directory")]
        chain += [(above, "directory") for above in target.parent.parents]
        for item, what in chain:
            try:
                info = item.stat()
            except OSError:
                return
            mode = stat.S_IMODE(info.st_mode)
            home = f"/etc/evac/{'hosts.yaml' if kind == 'inventory' else 'evac.yaml'}"
            if info.st_uid not in (0, me):
                raise ConfigError(
                    f"{path}: refusing an {kind} whose {what} {item} is owned by uid {info.st_uid}, "
                    f"not root or you (uid {me}); fix: chown root {item}, or move it to {home}"
                )
            shared_but_sticky = item != target.parent and item != target and mode & stat.S_ISVTX
            if mode & (stat.S_IWGRP | stat.S_IWOTH) and not shared_but_sticky:
                raise ConfigError(
                    f"{path}: refusing an {kind} whose {what} {item} is writable by "
                    f"{'others' if mode & stat.S_IWOTH else 'its group'} (mode {mode:04o}); "
                    f"fix: chmod go-w {item}, or move it to {home}"
                )


def parse_inventory(
    data: Any,
    source: str,
    fence_methods: AbcMapping[str, MethodSettings] | None = None,
    *,
    allow_unlisted_methods: bool = False,
) -> Inventory:
    where = Where(source)
    fence_check = _FenceCheck(fence_methods, allow_unlisted_methods)
    top = where.require_mapping(data, 1, "inventory")
    where.reject_unknown(top, TOP_FIELDS, "")
    if "hosts" not in top:
        raise where.error(top.line, "hosts", "required field missing")
    entries = where.require_sequence(top["hosts"], top.line_of("hosts"), "hosts")
    if not entries:
        raise where.error(top.line_of("hosts"), "hosts", "at least one host is required")
    hosts: list[HostSpec] = []
    base = Path(source).parent
    for index, entry in enumerate(entries):
        hosts.append(_parse_host(where, entry, entries.line_of(index), f"hosts[{index}]", fence_check, base))
    _check_unambiguous(where, entries, hosts)
    shared_list = where.require_sequence(
        top.get("shared_storage", Sequence()), top.line_of("shared_storage"), "shared_storage"
    )
    for index, item in enumerate(shared_list):
        if not isinstance(item, str) or not item.startswith("/"):
            raise where.error(shared_list.line_of(index), f"shared_storage[{index}]", "expected an absolute path")
    plugin_list = where.require_sequence(top.get("plugins", Sequence()), top.line_of("plugins"), "plugins")
    for index, item in enumerate(plugin_list):
        if not isinstance(item, str) or not MODULE_NAME.fullmatch(item):
            raise where.error(
                plugin_list.line_of(index), f"plugins[{index}]", "expected a module name (evac.lab.plugin)"
            )
    return Inventory(hosts=tuple(hosts), shared_storage=tuple(shared_list), source=source, plugins=tuple(plugin_list))


def _check_unambiguous(where: Where, entries: Sequence, hosts: list[HostSpec]) -> None:
    """Each name and address picks one host: no duplicate names (DNS ignores case, so
    neither does this), no duplicate addresses (compared by :func:`address_key`), no
    address that is another host's name."""
    by_name: dict[str, int] = {}
    for index, spec in enumerate(hosts):
        first = by_name.setdefault(address_key(spec.name), index)
        if first != index:
            raise where.error(
                entries.line_of(index),
                f"hosts[{index}].name",
                f"duplicate host '{spec.name}' (first at line {entries.line_of(first)})",
            )
    by_address: dict[str, int] = {}
    for index, spec in enumerate(hosts):
        if spec.address is None:
            continue
        line = entries[index].line_of("address")
        named = by_name.get(address_key(spec.address))
        if named is not None and named != index:
            raise where.error(
                line,
                f"hosts[{index}].address",
                f"'{spec.address}' is the name of host '{hosts[named].name}' (line {entries.line_of(named)}): "
                f"an alert naming it would match two hosts; give '{spec.name}' its own address",
            )
        first = by_address.setdefault(address_key(spec.address), index)
        if first != index:
            raise where.error(
                line,
                f"hosts[{index}].address",
                f"duplicate address '{spec.address}': host '{hosts[first].name}' has it too "
                f"(line {entries[first].line_of('address')}); each host needs its own address",
            )


@dataclass(frozen=True)
class _FenceCheck:
    methods: AbcMapping[str, MethodSettings] | None
    allow_unlisted: bool


def _parse_host(where: Where, entry: Any, line: int, field: str, fence_check: _FenceCheck, base: Path) -> HostSpec:
    host = where.require_mapping(entry, line, field)
    where.reject_unknown(host, HOST_FIELDS, f"{field}.")
    for required in ("name", "uri"):
        if required not in host:
            raise where.error(host.line, f"{field}.{required}", "required field missing")
    name = where.require_str(host, "name", f"{field}.name", "")
    if not HOST_NAME.fullmatch(name):
        raise where.error(
            host.line_of("name"), f"{field}.name", f"invalid host name {name!r}: expected letters, digits, _ . -"
        )
    uri = _parse_uri(where, host, field)
    address = where.require_str(host, "address", f"{field}.address") if host.get("address") is not None else None
    if address is not None and not is_address(address):
        raise where.error(
            host.line_of("address"), f"{field}.address", f"expected a host name or IP address, got {address!r}"
        )
    reserved = host.get("reserved", Mapping())
    if "reserved" in host:
        reserved = where.require_mapping(reserved, host.line_of("reserved"), f"{field}.reserved")
        where.reject_unknown(reserved, RESERVED_FIELDS, f"{field}.reserved.")
    capacity = Mapping()
    if "capacity" in host:
        capacity = where.require_mapping(host["capacity"], host.line_of("capacity"), f"{field}.capacity")
        where.reject_unknown(capacity, RESERVED_FIELDS, f"{field}.capacity.")
    tags = host.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise where.error(host.line_of("tags"), f"{field}.tags", "expected a list of strings")
    spare = host.get("spare", False)
    if not isinstance(spare, bool):
        raise where.error(host.line_of("spare"), f"{field}.spare", "expected true or false")
    return HostSpec(
        name=name,
        uri=uri,
        address=address,
        ssh=_parse_ssh(where, host, field, address, base),
        fence=_parse_fence(where, host, field, fence_check, base),
        tags=tuple(tags),
        reserved_memory_mib=_count(where, reserved, "memory_mib", f"{field}.reserved"),
        reserved_cpus=_count(where, reserved, "cpus", f"{field}.reserved"),
        spare=spare,
        capacity_memory_mib=_count(where, capacity, "memory_mib", f"{field}.capacity")
        if "memory_mib" in capacity
        else None,
        capacity_cpus=_count(where, capacity, "cpus", f"{field}.capacity") if "cpus" in capacity else None,
        networks=_parse_networks(where, host, field),
    )


def _parse_uri(where: Where, host: Mapping, field: str) -> str:
    uri = where.require_str(host, "uri", f"{field}.uri", "")
    found = URI.fullmatch(uri)
    if found is None:
        raise where.error(
            host.line_of("uri"), f"{field}.uri", f"expected a libvirt URI like qemu+tcp://HOST/system, got {uri!r}"
        )
    driver, transport = found["driver"], found["transport"]
    if driver not in URI_DRIVERS:
        raise where.error(
            host.line_of("uri"),
            f"{field}.uri",
            f"unknown libvirt driver '{driver}' in {uri!r}{suggest(driver, URI_DRIVERS)}; "
            f"expected {' or '.join(URI_DRIVERS)}, like qemu+tcp://HOST/system",
        )
    if transport is not None and transport not in URI_TRANSPORTS:
        raise where.error(
            host.line_of("uri"),
            f"{field}.uri",
            f"unknown libvirt transport '{transport}' in {uri!r}{suggest(transport, URI_TRANSPORTS)}; "
            f"known: {', '.join(URI_TRANSPORTS)}",
        )
    return uri


def _beside(base: Path, value: str | None) -> str | None:
    """A path from the inventory, relative ones taken from the inventory's directory."""
    if value is None or value.startswith("/"):
        return value
    return str(base / value)


def _parse_networks(where: Where, host: Mapping, field: str) -> Networks:
    if "networks" not in host:
        return ()
    nets = where.require_mapping(host["networks"], host.line_of("networks"), f"{field}.networks")
    for net, bridge in nets.items():
        if not isinstance(bridge, str) or not BRIDGE.fullmatch(bridge):
            raise where.error(
                nets.line_of(net), f"{field}.networks.{net}", f"expected a bridge name like br0, got {bridge!r}"
            )
    bridges = [b for _, b in nets.items()]
    twice = sorted({b for b in bridges if bridges.count(b) > 1})
    if twice:
        raise where.error(nets.line, f"{field}.networks", f"bridge '{twice[0]}' is named by two networks")
    return tuple(sorted((str(net), str(bridge)) for net, bridge in nets.items()))


def _parse_ssh(where: Where, host: Mapping, field: str, address: str | None, base: Path) -> SshSpec | None:
    if "ssh" not in host:
        return None
    ssh = where.require_mapping(host["ssh"], host.line_of("ssh"), f"{field}.ssh")
    where.reject_unknown(ssh, SSH_FIELDS, f"{field}.ssh.")
    target = where.require_str(ssh, "host", f"{field}.ssh.host") if "host" in ssh else address
    if target is None:
        raise where.error(ssh.line, f"{field}.ssh.host", "required when the host has no address")
    if not is_address(target):
        raise where.error(
            ssh.line_of("host"), f"{field}.ssh.host", f"expected a host name or IP address, got {target!r}"
        )
    port = ssh.get("port", 22)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise where.error(ssh.line_of("port"), f"{field}.ssh.port", f"expected a port number (1-65535), got {port!r}")
    return SshSpec(
        host=target,
        user=where.require_str(ssh, "user", f"{field}.ssh.user", "root"),
        port=port,
        key=_beside(base, where.require_str(ssh, "key", f"{field}.ssh.key")),
        known_hosts=_beside(base, where.require_str(ssh, "known_hosts", f"{field}.ssh.known_hosts")),
    )


def _parse_fence(where: Where, host: Mapping, field: str, check: _FenceCheck, base: Path) -> tuple[FenceSpec, ...]:
    if "fence" not in host:
        return ()
    methods = where.require_sequence(host["fence"], host.line_of("fence"), f"{field}.fence")
    specs = []
    for index, item in enumerate(methods):
        item_field = f"{field}.fence[{index}]"
        entry = where.require_mapping(item, methods.line_of(index), item_field)
        if entry.get("method") in (None, ""):
            raise where.error(entry.line, f"{item_field}.method", "required: the fence method's name")
        method = where.require_str(entry, "method", f"{item_field}.method", "")
        if check.methods is not None:
            _check_fence_entry(where, entry, method, item_field, check)
        options = {k: v for k, v in entry.items() if k != "method"}
        if "timeout" in options:
            timeout = options["timeout"]
            number = isinstance(timeout, int | float) and not isinstance(timeout, bool)
            if not number or not math.isfinite(timeout) or timeout <= 0:
                raise where.error(
                    entry.line_of("timeout"), f"{item_field}.timeout", f"expected seconds > 0, got {timeout!r}"
                )
        for key in FENCE_SECRET_FILES:
            value = options.get(key)
            if key in options and (not isinstance(value, str) or not value):
                raise where.error(entry.line_of(key), f"{item_field}.{key}", "expected the path of a file")
            if isinstance(value, str):
                options[key] = _beside(base, value)
        specs.append(FenceSpec(method=method, options=options))
    return tuple(specs)


def _check_fence_entry(where: Where, entry: Mapping, name: str, field: str, check: _FenceCheck) -> None:
    assert check.methods is not None
    method = check.methods.get(name)
    if method is None:
        if check.allow_unlisted:
            return
        known = sorted(check.methods)
        raise where.error(
            entry.line_of("method"),
            f"{field}.method",
            f"unknown fence method '{name}'{suggest(name, known)}; known: {', '.join(known) or 'none'}",
        )
    for key in method.required:
        if key not in entry:
            raise where.error(entry.line, f"{field}.{key}", f"required by fence method '{name}'")
    if method.optional is None:
        return
    allowed = ["method", *method.settings]
    for key in entry:
        if key not in allowed:
            raise where.error(
                entry.line_of(key),
                f"{field}.{key}",
                f"unknown setting for fence method '{name}'{suggest(key, allowed)}; "
                f"it takes: {', '.join(method.settings) or 'none'}",
            )


def _count(where: Where, data: Mapping, key: str, field: str) -> int:
    value = data.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise where.error(data.line_of(key), f"{field}.{key}", f"expected a whole number >= 0, got {value!r}")
    return value
