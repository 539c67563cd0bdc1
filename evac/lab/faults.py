"""Faults the lab injects, and its out-of-band power switch.

Power works from the root namespace, so it reaches a host that is cut off the network,
as a BMC on its own management network would. A cut takes the host's veth down: the
host keeps running, nobody reaches it. An etcd cut is narrower: nftables in the host's
namespace drop its etcd traffic only (ports 2379 and 2380 either way), so libvirt and
ssh still answer while the host's member and its local clients lose the cluster.
Packet loss uses ``tc netem`` where the kernel has it, else nftables in the host's
namespace.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from typing import Any

from ..errors import FencingError
from .etcd import CLIENT_PORT, PEER_PORT, EtcdCluster
from .layout import LabError
from .processes import alive, daemon_name, is_reaper, port_open, run, signal_pids

ETCD_CUT_TABLE = "evac_etcd_cut"


class Faults(EtcdCluster):
    """Power a host off and on, cut it off the network, make it lose packets."""

    def power_state(self, name: str) -> str:
        """The out-of-band view: ``on`` while the host's libvirtd process exists."""
        self.host(name)
        return "on" if any(daemon_name(p) == "libvirtd" for p in self.pids(name)) else "off"

    def boot(self, name: str) -> str | None:
        """What tells one power-on of the host from the next (``boot``, written when its
        daemons start after a power off and removed by the power off); None while off. A
        libvirtd restarted on its own is no new boot."""
        try:
            return (self.host_dir(name) / "boot").read_text().strip() or None
        except OSError:
            return None

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
        (self.host_dir(name) / "boot").unlink(missing_ok=True)

    def power_off(self, name: str, token: int | None) -> None:
        """The power switch's off button, as a fence agent presses it: refuse a fencing token
        older than the newest one accepted (for any host), then kill the host.

        Every press is one line of ``power.log`` (accepted or not). Checking, recording and
        killing happen under one lock shared by every process, so a deposed controller
        that passed the check cannot act after a newer token was accepted. A press with
        no token, or token 0 (a SQLite journal: no leader, nothing to compare), is
        accepted and recorded as it came.
        """
        self.host(name)
        with open(self.root / "power.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            seen = [e["token"] for e in self.power_log() if e["accepted"] and e["token"]]
            newest = max(seen, default=None)
            accepted = not token or newest is None or token >= newest
            if not token:
                reason = "no fencing token (a journal without a leader, or a press by hand)"
            elif accepted:
                reason = f"token {token} is not older than any seen (newest seen {newest})"
            else:
                reason = f"stale fencing token {token} (newest seen {newest})"
            entry = {
                "ts": time.time(),
                "host": name,
                "caller": f"{socket.gethostname()}:{os.getpid()}",
                "token": token,
                "accepted": accepted,
                "reason": reason,
            }
            with open(self.root / "power.log", "a") as log:
                log.write(json.dumps(entry) + "\n")
            if not accepted:
                raise FencingError(f"lab power switch: refused a {reason} for {name}")
            self.kill_host(name)

    def power_log(self) -> list[dict[str, Any]]:
        """Every press of the power switch's off button, oldest first."""
        path = self.root / "power.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def start_host(self, name: str) -> None:
        """Power on after ``kill_host``: libvirtd, sshd and (in a lab with etcd) the etcd
        member start again in the same host; ``evac serve`` replicas do not."""
        h = self.host(name)
        if not self.libvirtd_ready(name):
            self._start_daemons(h)
        self._wait_libvirtd(h)
        if not port_open(h.address, 22):
            self._start_sshd(h)
        self._wait_port(h, 22, "sshd")
        self._ensure_pool(h)
        if self.has_etcd() and name in self.etcd_member_names():
            self.start_etcd(name)

    def cut(self, name: str) -> None:
        """Network partition: the host keeps running but nobody can reach it."""
        run("ip", "link", "set", self.host(name).veth, "down")

    def heal(self, name: str) -> None:
        run("ip", "link", "set", self.host(name).veth, "up")

    def is_cut(self, name: str) -> bool:
        out = run("ip", "-o", "link", "show", self.host(name).veth, check=False).stdout
        return "state DOWN" in out or ",UP" not in out

    def cut_etcd(self, name: str) -> None:
        """Partition the host from etcd only: its member from its peers and clients, and
        its local clients from every member. libvirt and ssh stay reachable."""
        h = self.host(name)
        ports = f"{{ {CLIENT_PORT}, {PEER_PORT} }}"
        drop = f"tcp dport {ports} drop; tcp sport {ports} drop;"
        rules = (
            f"table inet {ETCD_CUT_TABLE} {{\n"
            f"  chain input {{ type filter hook input priority -300; {drop} }}\n"
            f"  chain output {{ type filter hook output priority -300; {drop} }}\n"
            "}\n"
        )
        if self.etcd_is_cut(name):
            return
        proc = subprocess.run(
            ["ip", "netns", "exec", h.netns, "nft", "-f", "-"], input=rules, capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise LabError(f"cut etcd on {name}: nftables refused the rules: {proc.stderr.strip()}")

    def heal_etcd(self, name: str) -> None:
        h = self.host(name)
        run("ip", "netns", "exec", h.netns, "nft", "delete", "table", "inet", ETCD_CUT_TABLE, check=False)

    def etcd_is_cut(self, name: str) -> bool:
        h = self.host(name)
        listed = run("ip", "netns", "exec", h.netns, "nft", "list", "table", "inet", ETCD_CUT_TABLE, check=False)
        return listed.returncode == 0

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
