"""Faults the lab injects, and its out-of-band power switch.

Power works from the root namespace, so it reaches a host that is cut off the network,
as a BMC on its own management network would. A cut takes the host's veth down: the
host keeps running, nobody reaches it. Packet loss uses ``tc netem`` where the kernel
has it, else nftables in the host's namespace.
"""

from __future__ import annotations

import signal
import subprocess
import time

from .daemons import HostDaemons
from .layout import LabError
from .processes import alive, daemon_name, is_reaper, port_open, run, signal_pids


class Faults(HostDaemons):
    """Power a host off and on, cut it off the network, make it lose packets."""

    def power_state(self, name: str) -> str:
        """The out-of-band view: ``on`` while the host's libvirtd process exists."""
        self.host(name)
        return "on" if any(daemon_name(p) == "libvirtd" for p in self.pids(name)) else "off"

    def kill_host(self, name: str) -> None:
        """Power off: SIGKILL every process of the host at once (reapers exit by themselves)."""
        self.host(name)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            # listed again each round: a child forked while its parent was dying is killed too
            victims = [p for p in self.pids(name) if not is_reaper(p) and alive(p)]
            if not victims:
                break
            signal_pids(victims, signal.SIGKILL)
            time.sleep(0.02)
        (self.host_dir(name) / "run" / "libvirtd.pid").unlink(missing_ok=True)

    def start_host(self, name: str) -> None:
        """Power on after ``kill_host``: libvirtd and sshd start again in the same host."""
        h = self.host(name)
        if not self.libvirtd_ready(name):
            self._start_daemons(h)
        self._wait_libvirtd(h)
        if not port_open(h.address, 22):
            self._start_sshd(h)
        self._wait_port(h, 22, "sshd")
        self._ensure_pool(h)

    def cut(self, name: str) -> None:
        """Network partition: the host keeps running but nobody can reach it."""
        run("ip", "link", "set", self.host(name).veth, "down")

    def heal(self, name: str) -> None:
        run("ip", "link", "set", self.host(name).veth, "up")

    def is_cut(self, name: str) -> bool:
        out = run("ip", "-o", "link", "show", self.host(name).veth, check=False).stdout
        return "state DOWN" in out or ",UP" not in out

    def set_loss(self, name: str, percent: int) -> str:
        """Drop ``percent`` % of the host's packets each way (0 clears); returns the means used.

        ``tc netem`` where the kernel has it, else nftables' random ``numgen`` in the
        host's namespace (some kernels are built without netem).
        """
        h = self.host(name)
        if not 0 <= percent <= 100:
            raise LabError(f"loss: expected 0 to 100 %, got {percent}")
        run("tc", "qdisc", "del", "dev", h.veth, "root", check=False)
        run("ip", "netns", "exec", h.netns, "nft", "delete", "table", "inet", "evac_loss", check=False)
        if percent == 0:
            return "none"
        if (
            run("tc", "qdisc", "add", "dev", h.veth, "root", "netem", "loss", f"{percent}%", check=False).returncode
            == 0
        ):
            return "netem"
        rules = (
            "table inet evac_loss {\n"
            f"  chain input {{ type filter hook input priority -300; numgen random mod 100 < {percent} drop; }}\n"
            f"  chain output {{ type filter hook output priority -300; numgen random mod 100 < {percent} drop; }}\n"
            "}\n"
        )
        proc = subprocess.run(
            ["ip", "netns", "exec", h.netns, "nft", "-f", "-"], input=rules, capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise LabError(f"loss on {name}: neither tc netem nor nftables works here: {proc.stderr.strip()}")
        return "nftables"
