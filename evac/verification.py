"""Which guests must answer on their network once they have moved, how, and how soon.

libvirt calling a guest "running" on its new host does not prove its users reach it (a
missing bridge, a switch that never learnt the new port, a guest that did not survive
the move). So ``vm.verify`` also asks the built-in ``reachability`` plugin, which probes
the guest at its address, and this module says what to probe: from the guest's own
metadata, which wins, then from the first of its tags that says, then from the
``verify:`` section of evac.yaml::

    verify:
      network:
        check: icmp          # every guest (optional; without it only the tags' and the guests' own)
        timeout: 5           # seconds a moved guest has to answer
        tags:
          web: {check: tcp 80}
          db: {check: tcp 5432, timeout: 60}
          batch: {check: none}

    <evac:guest address="198.19.3.17" tags="web" verify-network="icmp" verify-timeout="10"/>

A guest's tags are its ``tags`` and its ``ha-tags``. A check is ``icmp``, ``tcp PORT`` or
``udp-echo PORT`` (:class:`evac.reachability.Reachability`); ``none`` turns a check off
for a tag or a guest. A guest with a check and no ``address`` fails the check: it cannot
be verified, and saying so is better than passing it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .model import Guest
from .reachability import Kind, Reachability
from .yamldoc import Mapping, Where, seconds, section_mapping, shown

DEFAULT_TIMEOUT = 5.0  # a live-migrated guest answers within a second or two
MAX_TIMEOUT = 3600.0  # vm.verify waits this long at most: a bound like a runbook step's timeout
NONE = "none"
SECTION_KEYS = ("network",)
NETWORK_KEYS = ("check", "timeout", "tags")
TAG_KEYS = ("check", "timeout")
_HOST_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?$")


@dataclass(frozen=True)
class NetworkRule:
    """What the section or one of its tags sets (None: not set; ``off``: ``check: none``)."""

    check: Reachability | None = None
    off: bool = False
    timeout: float | None = None

    @property
    def decides(self) -> bool:
        """Whether it says anything about the check itself."""
        return self.check is not None or self.off


@dataclass(frozen=True)
class NetworkCheck:
    """One guest's check: how to probe it, where (None: it has no address) and for how long."""

    reach: Reachability
    address: str | None
    timeout: float


@dataclass(frozen=True)
class VerifySettings:
    """The ``verify:`` section of evac.yaml; without one, no guest is checked but those
    whose own metadata asks."""

    network: NetworkRule = NetworkRule()
    tags: dict[str, NetworkRule] = field(default_factory=dict)

    @classmethod
    def of(cls, sections: AbcMapping[str, Any]) -> VerifySettings:
        """The parsed section among a config's plugin sections, else the defaults."""
        found = sections.get("verify")
        return found if isinstance(found, VerifySettings) else cls()

    def network_check(self, guest: Guest) -> NetworkCheck | None:
        """The guest's check, or None when it has none. ``ConfigError`` naming the guest,
        its host and the attribute when its metadata is not valid."""
        rules = [self.tags[t] for t in dict.fromkeys((*guest.tags, *guest.ha.tags)) if t in self.tags]
        own = guest_rule(guest)
        decided = next((r for r in (own, *rules, self.network) if r.decides), None)
        if decided is None or decided.off or decided.check is None:
            return None
        timeout = next((r.timeout for r in (own, *rules, self.network) if r.timeout is not None), DEFAULT_TIMEOUT)
        return NetworkCheck(decided.check, guest_address(guest), timeout)


def guest_rule(guest: Guest) -> NetworkRule:
    """What the guest's own ``verify-*`` metadata sets, checked."""

    def bad(attribute: str, message: str) -> ConfigError:
        return ConfigError(f"guest {guest.name} on {guest.host}: metadata {attribute}: {message}")

    check: Reachability | None = None
    off = False
    text = guest.verify.network
    if text is not None:
        try:
            off, check = _check(text)
        except ValueError as exc:
            raise bad("verify-network", str(exc)) from None
    timeout: float | None = None
    if guest.verify.timeout is not None:
        try:
            timeout = _timeout(_number(guest.verify.timeout))
        except ValueError as exc:
            raise bad("verify-timeout", str(exc)) from None
    return NetworkRule(check, off, timeout)


def guest_address(guest: Guest) -> str | None:
    """The guest's ``address`` metadata: an IP address or a host name (None without one)."""
    text = guest.address
    if text is None:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if _HOST_NAME.match(text) and len(text) <= 253:
        return text
    raise ConfigError(
        f"guest {guest.name} on {guest.host}: metadata address: "
        f"expected an IP address or a host name, got {shown(text)}"
    )


def _check(text: str) -> tuple[bool, Reachability | None]:
    """``none`` turns the check off; anything else is a :class:`Reachability`."""
    if text.strip().lower() == NONE:
        return True, None
    words = text.split()
    if not words or words[0].lower() not in {str(kind) for kind in Kind}:
        raise ValueError(f"expected icmp, tcp PORT, udp-echo PORT or none, got {shown(text)}")
    return False, Reachability.parse(text)


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _timeout(value: Any) -> float:
    return seconds(value, MAX_TIMEOUT)


# ---------------------------------------------------------------- the section
def parse_verify(data: Any, source: str) -> VerifySettings:
    """The ``verify:`` section of evac.yaml (registered through ``evac_config_sections``)."""
    where = Where(source)
    section = section_mapping(data, source, "verify")
    where.reject_unknown(section, SECTION_KEYS, "verify.")
    raw = section.get("network")
    network = where.require_mapping(raw, section.line_of("network"), "verify.network") if raw is not None else Mapping()
    where.reject_unknown(network, NETWORK_KEYS, "verify.network.")
    top = _rule(where, network, "verify.network")
    tags = where.require_mapping(network.get("tags", Mapping()), network.line_of("tags"), "verify.network.tags")
    rules: dict[str, NetworkRule] = {}
    for tag, entry in tags.items():
        label = f"verify.network.tags.{tag}"
        if not tag or "," in tag or tag != tag.strip():
            raise where.error(tags.line_of(tag), label, "expected a tag as guests name it in tags (no commas)")
        checked = where.require_mapping(entry, tags.line_of(tag), label)
        where.reject_unknown(checked, TAG_KEYS, f"{label}.")
        rules[tag] = _rule(where, checked, label)
    return VerifySettings(network=top, tags=rules)


def _rule(where: Where, data: Mapping, label: str) -> NetworkRule:
    off, check = False, None
    text = where.require_str(data, "check", f"{label}.check")
    if text is not None:
        try:
            off, check = _check(text)
        except ValueError as exc:
            raise where.error(data.line_of("check"), f"{label}.check", str(exc)) from None
    timeout = None
    if "timeout" in data:
        try:
            timeout = _timeout(data["timeout"])
        except ValueError as exc:
            raise where.error(data.line_of("timeout"), f"{label}.timeout", str(exc)) from None
    return NetworkRule(check, off, timeout)
