"""The lab as one object: ``Lab`` combines its layout, processes, provisioning and faults.

Each concern lives in a module of its own (``layout``, ``processes``, ``daemons``,
``provisioning``, ``faults``); this module joins them and keeps the names tests,
benchmarks and ``evac lab`` import from ``evac.lab.rig`` working.
"""

from __future__ import annotations

from .daemons import LIBVIRT_PORT, LIBVIRT_TLS_PORT, LIBVIRTD, SSHD, VIRTLOCKD
from .faults import Faults
from .layout import DEFAULT_DIR, LabError, LabHost
from .processes import run
from .provisioning import INVENTORY_PLUGINS, Provisioning

__all__ = [
    "DEFAULT_DIR",
    "INVENTORY_PLUGINS",
    "LIBVIRTD",
    "LIBVIRT_PORT",
    "LIBVIRT_TLS_PORT",
    "SSHD",
    "VIRTLOCKD",
    "Lab",
    "LabError",
    "LabHost",
    "run",
]


class Lab(Provisioning, Faults):
    """One lab instance. Several can coexist with different ``root``/``prefix``/``net``."""

    def status(self) -> list[dict[str, object]]:
        """One row per host: power, network and daemons, as ``evac lab status`` shows them."""
        rows: list[dict[str, object]] = []
        for h in self.hosts():
            pids = self.pids(h.name)
            rows.append(
                {
                    "host": h.name,
                    "address": h.address,
                    "uri": h.uri,
                    "power": self.power_state(h.name),
                    "network": "cut" if self.is_cut(h.name) else "ok",
                    "libvirtd": self.libvirtd_ready(h.name),
                    "processes": len(pids),
                }
            )
        return rows
