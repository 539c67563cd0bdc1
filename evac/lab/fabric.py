"""The guests' network: one L2 segment across every lab host, and a client on it.

Each host's guest bridge ``br0`` gets a VXLAN port (``vx0``) whose underlay is the host's
own ``eth0``, with head-end replication to every other host and to the client. A cut
(the host's veth down) and packet loss therefore reach the host's guests too, as they
would on real hosts whose guest VLAN shares the uplink. The client is a namespace of
its own (``<prefix>-client``) on the management bridge and on the segment; it also
routes between them, so evac's processes (in the root namespace or inside a host) reach
guests at their addresses as a controller on a routed network would.

A guest's address and MAC are derived from its name: the MAC is a hash (the same on
every host, so the fabric learns one station move), the address the first free one from
the hash's slot in the lab's /24 of ``198.19.0.0/16``, recorded in ``guest-addresses.json``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from .layout import LabError
from .processes import HostProcesses, run

if TYPE_CHECKING:
    from .capture import Capture
    from .probe import ProbeRun

VNI = 4242
VXLAN_PORT = 4789
MTU = 1450  # 1500 on the underlay, less VXLAN's 50 bytes
FIRST, LAST = 10, 249  # guest addresses; .254 is the client


class Fabric(HostProcesses):
    """The guest segment: VXLAN ports on the hosts' bridges, the client, addresses."""

    @property
    def guest_net(self) -> str:
        """The guests' /24, one per lab (its management network's third octet)."""
        return f"198.19.{self.net.split('.')[2]}"

    @property
    def client_netns(self) -> str:
        return f"{self.prefix}-client"

    @property
    def client_address(self) -> str:
        """The client on the guest segment: the guests' gateway to the management network."""
        return f"{self.guest_net}.254"

    @property
    def client_mgmt_address(self) -> str:
        return f"{self.net}.250"

    @property
    def client_veth(self) -> str:
        return f"{self.prefix}c0"

    @property
    def addresses_file(self) -> Path:
        return self.root / "guest-addresses.json"

    def client_exec(self, *argv: str, check: bool = True) -> None:
        run("ip", "netns", "exec", self.client_netns, *argv, check=check)

    def ensure_fabric(self) -> None:
        """Create what is missing: the client, each host's VXLAN port, the routes."""
        peers = [h.address for h in self.hosts()] + [self.client_mgmt_address]
        if not self._client_complete():
            self._remove_client()
            self._create_client(peers)
        run("ip", "route", "replace", f"{self.guest_net}.0/24", "via", self.client_mgmt_address)
        for h in self.hosts():
            if not Path(f"/sys/class/net/{h.veth}").exists():
                raise LabError(f"{h.name}: its veth {h.veth} is missing; run evac lab down, then up")
            if run("ip", "-n", h.netns, "link", "show", "vx0", check=False).returncode != 0:
                _add_vxlan(h.netns, h.address, [p for p in peers if p != h.address])
                run("ip", "-n", h.netns, "link", "set", "vx0", "master", "br0", "up")
            run("ip", "-n", h.netns, "route", "replace", f"{self.guest_net}.0/24", "via", self.client_mgmt_address)

    def remove_fabric(self) -> None:
        """The client namespace and its veth (the hosts' ports go with their namespaces)."""
        self._remove_client()
        self.addresses_file.unlink(missing_ok=True)

    def _client_complete(self) -> bool:
        """The client as ``_create_client`` leaves it (an interrupted ``up`` leaves it half built)."""
        if not Path(f"/run/netns/{self.client_netns}").exists():
            return False
        listed = run("ip", "-n", self.client_netns, "-o", "addr", "show", "dev", "vx0", check=False)
        return self.client_address in listed.stdout

    def _remove_client(self) -> None:
        if Path(f"/run/netns/{self.client_netns}").exists():
            pids = run("ip", "netns", "pids", self.client_netns, check=False).stdout.split()
            for pid in pids:
                run("kill", "-9", pid, check=False)
            run("ip", "netns", "del", self.client_netns, check=False)
        if Path(f"/sys/class/net/{self.client_veth}").exists():
            run("ip", "link", "del", self.client_veth, check=False)

    def _create_client(self, peers: list[str]) -> None:
        ns = self.client_netns
        run("ip", "netns", "add", ns)
        if Path(f"/sys/class/net/{self.client_veth}").exists():
            run("ip", "link", "del", self.client_veth)
        run("ip", "link", "add", self.client_veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        run("ip", "link", "set", self.client_veth, "master", self.bridge, "up")
        run("ip", "-n", ns, "addr", "add", f"{self.client_mgmt_address}/24", "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        _add_vxlan(ns, self.client_mgmt_address, [p for p in peers if p != self.client_mgmt_address])
        self.client_exec("sysctl", "-qw", "net.ipv4.ip_forward=1")
        run("ip", "-n", ns, "link", "set", "vx0", "up")
        run(
            "ip", "-n", ns, "addr", "add", f"{self.client_address}/24", "dev", "vx0"
        )  # last: the mark of a whole client

    def guest_address(self, name: str) -> str:
        """The guest's address: recorded, or the first free one from its name's slot."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "guest-addresses.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            taken: dict[str, str] = json.loads(self.addresses_file.read_text()) if self.addresses_file.exists() else {}
            if name in taken:
                return taken[name]
            address = self._free_address(name, set(taken.values()))
            if address is None:  # full: forget the guests no host defines any more
                defined = self._defined_guests()
                taken = {n: a for n, a in taken.items() if n in defined}
                address = self._free_address(name, set(taken.values()))
            if address is None:
                raise LabError(f"guest {name}: no free address left in {self.guest_net}.0/24")
            taken[name] = address
            self.addresses_file.write_text(json.dumps(taken, indent=1, sort_keys=True))
            return address

    def _free_address(self, name: str, used: set[str]) -> str | None:
        span = LAST - FIRST + 1
        start = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") % span
        for step in range(span):
            address = f"{self.guest_net}.{FIRST + (start + step) % span}"
            if address not in used:
                return address
        return None

    def _defined_guests(self) -> set[str]:
        """Every guest some host defines; a host that does not answer may define any."""
        names: set[str] = set()
        for h in self.hosts():
            listed = run("virsh", "-q", "-c", h.uri, "list", "--all", "--name", check=False)
            if listed.returncode != 0:
                raise LabError(f"guest addresses: {self.guest_net}.0/24 is full and {h.name} does not answer")
            names.update(listed.stdout.split())
        return names

    def known_guest_addresses(self) -> dict[str, str]:
        """Every guest's address this lab handed out, by name."""
        return json.loads(self.addresses_file.read_text()) if self.addresses_file.exists() else {}

    def probe(self, names: Sequence[str], interval: float = 0.01) -> AbstractContextManager[ProbeRun]:
        """Echo the guests from the client while the block runs (see :mod:`evac.lab.probe`)."""
        from .probe import probing

        known = self.known_guest_addresses()
        unknown = [n for n in names if n not in known]
        if unknown:
            raise LabError(f"probe: no address for {', '.join(unknown)} (guests with a NIC on br0 have one)")
        return probing(self.client_netns, {n: known[n] for n in names}, interval)

    def capture(self) -> AbstractContextManager[Capture]:
        """Record the announces (broadcast RARP and ARP) on the segment while the block runs."""
        from .capture import capturing

        return capturing(self.client_netns)


def guest_mac(name: str) -> str:
    """A locally administered-looking QEMU MAC (52:54:00 prefix) from the guest's name."""
    digest = hashlib.sha256(name.encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def _add_vxlan(netns: str, local: str, peers: list[str]) -> None:
    run(
        "ip", "-n", netns, "link", "add", "vx0", "mtu", str(MTU), "type", "vxlan", "id", str(VNI),
        "local", local, "dstport", str(VXLAN_PORT), "dev", "eth0",
    )  # fmt: skip
    for peer in peers:
        run("bridge", "-n", netns, "fdb", "append", "00:00:00:00:00:00", "dev", "vx0", "dst", peer)
