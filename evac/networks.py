"""Bridge names across hosts.

Fleets grow unevenly: the guests' network is ``br0`` on the old hosts and ``br-vm`` on the
new ones. The inventory names each host's bridges by network (``networks: {vm: br-vm}``);
a guest's bridge on its source maps through that name to the target's bridge. A bridge
that no map mentions keeps its name on every host.
"""

from __future__ import annotations

from collections.abc import Iterable

from .model import Guest

Networks = tuple[tuple[str, str], ...]  # (network, bridge) pairs of one host


def bridge_on(target: Networks, source: Networks, bridge: str) -> str:
    """The bridge on the target for a guest plugged into ``bridge`` on the source."""
    network = next((net for net, br in source if br == bridge), None)
    if network is None:
        return bridge
    return dict(target).get(network, bridge)


def renames(bridges: Iterable[str], source: Networks, target: Networks) -> dict[str, str]:
    """The bridges whose name differs on the target: what a destination XML must change."""
    return {b: new for b in bridges if (new := bridge_on(target, source, b)) != b}


def guest_renames(guest: Guest, source: Networks, target: Networks) -> dict[str, str]:
    return renames((nic.source for nic in guest.interfaces if nic.kind == "bridge"), source, target)
