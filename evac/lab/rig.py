"""The lab as one object: ``Lab`` combines its layout, processes, provisioning and faults.

Each concern lives in a module of its own (``layout``, ``processes``, ``daemons``,
``etcd``, ``provisioning``, ``faults``, ``replicas``, ``agents``, ``watchdog``); this
module joins them and keeps the names tests, benchmarks and ``evac lab`` import from
``evac.lab.rig`` working.
"""

from __future__ import annotations

from .agents import LabAgents
from .daemons import LIBVIRT_PORT, LIBVIRT_TLS_PORT, LIBVIRTD, SSHD, VIRTLOCKD
from .etcd import CLIENT_PORT
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


class Lab(Provisioning, Faults, LabAgents):
    """One lab instance. Several can coexist with different ``root``/``prefix``/``net``."""

    def down(self) -> None:
        """Stop the watchdogs first: a host whose processes die under an armed watchdog
        would be powered off twice."""
        self.stop_watchdogs()
        super().down()
        self.agent_secret_file.unlink(missing_ok=True)  # the agents died with their hosts

    def etcd_status(self) -> list[dict[str, object]]:
        """One row per etcd member: running, healthy, Raft leader, cut off etcd."""
        health = self.etcd_health()
        leader = self.etcd_leader()
        return [
            {
                "member": h.name,
                "endpoint": f"https://{h.address}:{CLIENT_PORT}",
                "running": bool(self.etcd_pids(h.name)),
                "healthy": health.get(h.name, False),
                "leader": h.name == leader,
                "cut": self.etcd_is_cut(h.name),
            }
            for h in self.etcd_hosts()
        ]

    def status(self) -> list[dict[str, object]]:
        """One row per host: power, network and daemons, as ``evac lab status`` shows them
        (and its etcd member's state, in a lab with etcd)."""
        rows: list[dict[str, object]] = []
        members = {str(m["member"]): m for m in self.etcd_status()} if self.has_etcd() else {}
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
            if h.name in members:
                rows[-1]["etcd"] = _member_state(members[h.name])
        return rows


def _member_state(member: dict[str, object]) -> str:
    if not member["running"]:
        return "down"
    if member["cut"]:
        return "cut"
    if not member["healthy"]:
        return "unhealthy"
    return "leader" if member["leader"] else "follower"
