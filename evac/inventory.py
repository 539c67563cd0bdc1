"""The fleet as the operator declares it (``hosts.yaml``), validated with file:line errors.

The inventory says what should exist and how to reach it; what actually runs there is
read live through the hypervisor adapter. Given the registered fence methods
(``evac.fencing.fence_methods(pm)``), each ``fence:`` entry is checked too: the method
exists, its required settings are there, and it has no setting the method does not know.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import ConfigError
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


HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
URI = re.compile(r"^[a-z0-9+]+://[^\s/]*/[a-z]+(\?\S*)?$")  # transport://[user@]host[:port]/system[?options]
BRIDGE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")  # a Linux interface name


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
    return parse_inventory(load_file(path), str(path), fence_methods, allow_unlisted_methods=allow_unlisted_methods)


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
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        spec = _parse_host(where, entry, entries.line_of(index), f"hosts[{index}]", fence_check)
        line = entries.line_of(index)
        if spec.name in seen:
            raise where.error(
                line, f"hosts[{index}].name", f"duplicate host '{spec.name}' (first at line {seen[spec.name]})"
            )
        seen[spec.name] = line
        hosts.append(spec)
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


@dataclass(frozen=True)
class _FenceCheck:
    methods: AbcMapping[str, MethodSettings] | None
    allow_unlisted: bool


def _parse_host(where: Where, entry: Any, line: int, field: str, fence_check: _FenceCheck) -> HostSpec:
    host = where.require_mapping(entry, line, field)
    where.reject_unknown(host, HOST_FIELDS, f"{field}.")
    for required in ("name", "uri"):
        if required not in host:
            raise where.error(host.line, f"{field}.{required}", "required field missing")
    name = where.require_str(host, "name", f"{field}.name", "")
    if not HOST_NAME.match(name):
        raise where.error(host.line_of("name"), f"{field}.name", f"invalid host name {name!r}")
    uri = where.require_str(host, "uri", f"{field}.uri", "")
    if not URI.match(uri):
        raise where.error(
            host.line_of("uri"), f"{field}.uri", f"expected a libvirt URI like qemu+tcp://HOST/system, got {uri!r}"
        )
    address = where.require_str(host, "address", f"{field}.address") if host.get("address") is not None else None
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
        ssh=_parse_ssh(where, host, field, address),
        fence=_parse_fence(where, host, field, fence_check),
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


def _parse_networks(where: Where, host: Mapping, field: str) -> Networks:
    if "networks" not in host:
        return ()
    nets = where.require_mapping(host["networks"], host.line_of("networks"), f"{field}.networks")
    for net, bridge in nets.items():
        if not isinstance(bridge, str) or not BRIDGE.match(bridge):
            raise where.error(
                nets.line_of(net), f"{field}.networks.{net}", f"expected a bridge name like br0, got {bridge!r}"
            )
    bridges = [b for _, b in nets.items()]
    twice = sorted({b for b in bridges if bridges.count(b) > 1})
    if twice:
        raise where.error(nets.line, f"{field}.networks", f"bridge '{twice[0]}' is named by two networks")
    return tuple(sorted((str(net), str(bridge)) for net, bridge in nets.items()))


def _parse_ssh(where: Where, host: Mapping, field: str, address: str | None) -> SshSpec | None:
    if "ssh" not in host:
        return None
    ssh = where.require_mapping(host["ssh"], host.line_of("ssh"), f"{field}.ssh")
    where.reject_unknown(ssh, SSH_FIELDS, f"{field}.ssh.")
    target = where.require_str(ssh, "host", f"{field}.ssh.host") if "host" in ssh else address
    if target is None:
        raise where.error(ssh.line, f"{field}.ssh.host", "required when the host has no address")
    port = ssh.get("port", 22)
    if not isinstance(port, int) or not 0 < port < 65536:
        raise where.error(ssh.line_of("port"), f"{field}.ssh.port", f"expected a port number, got {port!r}")
    return SshSpec(
        host=target,
        user=where.require_str(ssh, "user", f"{field}.ssh.user", "root"),
        port=port,
        key=where.require_str(ssh, "key", f"{field}.ssh.key"),
        known_hosts=where.require_str(ssh, "known_hosts", f"{field}.ssh.known_hosts"),
    )


def _parse_fence(where: Where, host: Mapping, field: str, check: _FenceCheck) -> tuple[FenceSpec, ...]:
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
        specs.append(FenceSpec(method=method, options={k: v for k, v in entry.items() if k != "method"}))
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
