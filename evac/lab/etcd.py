"""A 3-member etcd cluster inside the lab's hosts, so evac itself can be made highly available.

Each host runs one member, spawned in the host's namespaces like libvirtd, so powering
the host off (``kill_host``) takes its member down with it. Members listen on the
host's address only (client ``2379``, peer ``2380``; nothing on loopback, where a
distribution's own etcd may sit), with TLS both ways from the lab CA: a client needs a
certificate the CA signed (``--client-cert-auth``), and so does a peer.

A member's data lives on a small tmpfs mounted inside the host's mount namespace: it
survives ``kill_host`` (a power-off keeps the disk) and vanishes with the namespace at
``down``. Timing is tuned for a busy two-core machine rather than for a data centre:
heartbeats every 100 ms and an election after 1 s of silence (etcd's defaults, 100/1000,
kept on purpose: a loaded lab with QEMU guests and a test run stayed free of spurious
elections with them, and a killed leader is replaced within about 1.6 s). Pre-vote is on,
so a member coming back from ``cut_etcd`` does not depose a healthy leader. Old revisions
are compacted every 5 minutes, the backend is capped at 128 MiB, a snapshot every 10,000
entries lets all but two WAL files go, and watchers get a progress notification every
2 s so a client can tell a quiet watch from a dead one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from .daemons import HostDaemons
from .layout import LabError, LabHost
from .pki import ensure_ca, issue_etcd_member, issue_libvirt_client
from .processes import alive, daemon_name, port_open, signal_pids

ETCD = "/usr/bin/etcd"
ETCDCTL = "/usr/bin/etcdctl"
CLIENT_PORT = 2379
PEER_PORT = 2380
HEARTBEAT_MS = 100
ELECTION_MS = 1000
QUOTA_BYTES = 128 * 2**20
# The backend (its quota), two 64 MiB WAL segments (``--max-wals``) and a spare one being
# cut. With etcd's defaults (5 WAL files, a snapshot every 100,000 entries) a 256 MiB
# tmpfs filled after about 30 minutes of the nemesis and every member died of ENOSPC.
TMPFS_SIZE = "512m"
SNAPSHOT_COUNT = 10_000  # entries between snapshots, after which older WAL files can go
MAX_WALS = 2
MEMBERS = 3  # the first three hosts run a member; more hosts sit beside the cluster


class EtcdCluster(HostDaemons):
    """One etcd member per host: start, stop and ask it; the lab remembers whether it has one."""

    def has_etcd(self) -> bool:
        """Whether the lab was brought up with etcd (``lab.json``)."""
        if not self.state_file.exists():
            return False
        return bool(json.loads(self.state_file.read_text()).get("etcd", False))

    def etcd_hosts(self) -> list[LabHost]:
        """The hosts that run a member: the first three. A fourth host and beyond run
        without one, as hypervisors beside a 3-member cluster do, so one of them can fail
        while another host is cut from etcd and the cluster keeps its quorum."""
        return self.hosts()[:MEMBERS]

    def etcd_member_names(self) -> list[str]:
        return [h.name for h in self.etcd_hosts()]

    def etcd_endpoints(self) -> list[str]:
        return [f"https://{h.address}:{CLIENT_PORT}" for h in self.etcd_hosts()]

    def etcd_url(self) -> str:
        """The cluster as evac's ``journal:`` setting names it."""
        return "etcd://" + ",".join(f"{h.address}:{CLIENT_PORT}" for h in self.etcd_hosts())

    def etcd_tls(self) -> tuple[Path, Path, Path]:
        """(CA, client certificate, client key) for a client of the cluster: evac's own pair,
        whose certificate allows client authentication."""
        d = self.client_pki_dir
        return d / "cacert.pem", d / "clientcert.pem", d / "clientkey.pem"

    def etcd_data_dir(self, name: str) -> Path:
        """The tmpfs mount point of the host's member (mounted inside the host only)."""
        return self.host_dir(name) / "etcd"

    def etcd_pki_dir(self, name: str) -> Path:
        return self.host_dir(name) / "etc" / "pki-etcd"

    def etcd_pids(self, name: str) -> list[int]:
        return [p for p in self.pids(name) if daemon_name(p) == "etcd" and alive(p)]

    def etcdctl(
        self, *argv: str, endpoints: list[str] | None = None, timeout: float = 10
    ) -> subprocess.CompletedProcess[str]:
        """``etcdctl`` from the root namespace with evac's client certificate (never raises)."""
        ca, cert, key = self.etcd_tls()
        command = [
            ETCDCTL,
            f"--endpoints={','.join(endpoints or self.etcd_endpoints())}",
            f"--cacert={ca}",
            f"--cert={cert}",
            f"--key={key}",
            "--dial-timeout=1s",
            "--command-timeout=2s",
            *argv,
        ]
        try:
            return subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, env={**os.environ, "ETCDCTL_API": "3"}
            )
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(command, 124, "", f"etcdctl timed out after {timeout:.0f} s")

    def _listening(self) -> list[str]:
        """The endpoints that accept a TCP connection: etcdctl spends its whole command
        timeout retrying one that refuses, so a dead member is left out beforehand."""
        return [f"https://{h.address}:{CLIENT_PORT}" for h in self.etcd_hosts() if port_open(h.address, CLIENT_PORT)]

    def etcd_health(self) -> dict[str, bool]:
        """Each member: does it answer a quorum read over TLS?"""
        hosts = self.etcd_hosts()
        by_endpoint = {f"https://{h.address}:{CLIENT_PORT}": h.name for h in hosts}
        health = dict.fromkeys((h.name for h in hosts), False)
        listening = self._listening()
        if not listening:
            return health
        proc = self.etcdctl("endpoint", "health", "-w", "json", endpoints=listening)
        for entry in _json_list(proc.stdout):
            name = by_endpoint.get(str(entry.get("endpoint")))
            if name is not None:
                health[name] = bool(entry.get("health"))
        return health

    def etcd_leader(self) -> str | None:
        """The host whose member a majority of the members follow as Raft leader, if any."""
        hosts = self.etcd_hosts()
        listening = self._listening()
        if not listening:
            return None
        statuses = _json_list(self.etcdctl("endpoint", "status", "-w", "json", endpoints=listening).stdout)
        votes = Counter(int(s["Status"]["leader"]) for s in statuses if int(s["Status"].get("leader", 0)))
        if not votes:
            return None
        leader, count = votes.most_common(1)[0]
        if count < len(hosts) // 2 + 1:
            return None
        members = self.etcdctl("member", "list", "-w", "json", endpoints=listening).stdout
        for member in _json_obj(members).get("members", []):
            if int(member.get("ID", 0)) == leader:
                return str(member.get("name")) or None
        return None

    def move_etcd_leader(self, name: str) -> None:
        """Make the host's member etcd's Raft leader (``etcdctl move-leader``), to set up the
        case where the host that fails also leads etcd."""
        members = _json_obj(self.etcdctl("member", "list", "-w", "json").stdout).get("members", [])
        target = next((int(m["ID"]) for m in members if m.get("name") == name), None)
        leader = self.etcd_leader()
        if target is None or leader is None:
            raise LabError(f"move the etcd leader to {name}: no such member, or no leader now")
        if leader == name:
            return
        proc = self.etcdctl(
            "move-leader", f"{target:x}", endpoints=[f"https://{self.host(leader).address}:{CLIENT_PORT}"]
        )
        if proc.returncode != 0:
            raise LabError(f"move the etcd leader to {name}: {proc.stderr.strip() or proc.stdout.strip()}")
        deadline = time.monotonic() + 10
        while self.etcd_leader() != name:
            if time.monotonic() > deadline:
                raise LabError(f"move the etcd leader to {name}: {self.etcd_leader()} still leads")
            time.sleep(0.1)

    def kill_etcd(self, name: str) -> None:
        """SIGKILL only the host's member (its reaper exits by itself); the host stays up."""
        self.host(name)
        deadline = time.monotonic() + 5
        while (victims := self.etcd_pids(name)) and time.monotonic() < deadline:
            signal_pids(victims, signal.SIGKILL)
            time.sleep(0.02)

    def start_etcd(self, name: str, wait: bool = True, timeout: float = 30) -> None:
        """Start the host's member if it is not running; with ``wait``, until it is healthy
        (only when enough members run for a quorum: a lone member cannot be)."""
        h = self.host(name)
        if not self.has_etcd():
            raise LabError(f"the lab at {self.root} has no etcd cluster (evac lab up --etcd)")
        if h not in self.etcd_hosts():
            raise LabError(f"{name} runs no etcd member: the members are on {', '.join(self.etcd_member_names())}")
        if not self.etcd_pids(name):
            self._spawn_etcd(h)
        running = sum(1 for other in self.etcd_hosts() if self.etcd_pids(other.name))
        if wait and running >= len(self.etcd_hosts()) // 2 + 1:
            self._wait_etcd([name], timeout)

    def _ensure_etcd(self) -> None:
        """Certificates, tmpfs and a running member on every host, then a healthy cluster."""
        if not Path(ETCD).exists():
            raise LabError(f"etcd is not installed ({ETCD}; apt-get install etcd-server etcd-client)")
        ca = ensure_ca(self.root / "pki")
        issue_libvirt_client(ca, self.client_pki_dir)
        for h in self.etcd_hosts():
            issue_etcd_member(ca, self.etcd_pki_dir(h.name), h.name, h.address)
            if not self.etcd_pids(h.name):
                self._spawn_etcd(h)
        self._wait_etcd([h.name for h in self.etcd_hosts()], 60)

    def _remove_etcd(self) -> None:
        """Stop every member and drop its data (``up`` without etcd on a lab that had it)."""
        for h in self.etcd_hosts():
            self.kill_etcd(h.name)
            self.exec(h.name, "umount", "-l", str(self.etcd_data_dir(h.name)), check=False)

    def _spawn_etcd(self, h: LabHost) -> None:
        data = self.etcd_data_dir(h.name)
        data.mkdir(parents=True, exist_ok=True)
        self.exec(
            h.name,
            "sh",
            "-c",
            f"mountpoint -q {data} || mount -t tmpfs -o size={TMPFS_SIZE},mode=0700 evac-etcd {data}",
        )
        pki = self.etcd_pki_dir(h.name)
        ca, cert, key = (str(pki / f) for f in ("ca.pem", "member.pem", "member-key.pem"))
        client, peer = f"https://{h.address}:{CLIENT_PORT}", f"https://{h.address}:{PEER_PORT}"
        cluster = ",".join(f"{o.name}=https://{o.address}:{PEER_PORT}" for o in self.etcd_hosts())
        argv = [
            ETCD,
            f"--name={h.name}",
            f"--data-dir={data / 'data'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={cluster}",
            "--initial-cluster-state=new",  # ignored once the data directory has a member
            f"--initial-cluster-token={self.prefix}-etcd",
            "--client-cert-auth",
            f"--trusted-ca-file={ca}",
            f"--cert-file={cert}",
            f"--key-file={key}",
            "--peer-client-cert-auth",
            f"--peer-trusted-ca-file={ca}",
            f"--peer-cert-file={cert}",
            f"--peer-key-file={key}",
            f"--heartbeat-interval={HEARTBEAT_MS}",
            f"--election-timeout={ELECTION_MS}",
            "--pre-vote",  # a member back from a cut must not depose a healthy leader (3.4: off by default)
            "--auto-compaction-mode=periodic",
            "--auto-compaction-retention=5m",
            f"--quota-backend-bytes={QUOTA_BYTES}",
            f"--snapshot-count={SNAPSHOT_COUNT}",
            f"--max-wals={MAX_WALS}",
            "--experimental-watch-progress-notify-interval=2s",
            "--logger=zap",
            "--log-outputs=stderr",
        ]
        self._spawn(h, argv, self.host_dir(h.name) / "log" / "etcd.log")

    def _wait_etcd(self, names: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        health: dict[str, bool] = {}
        while time.monotonic() < deadline:
            health = self.etcd_health()
            if all(health.get(n) for n in names):
                return
            time.sleep(0.2)
        sick = [n for n in names if not health.get(n)]
        tails = []
        for name in sick:
            log = self.host_dir(name) / "log" / "etcd.log"
            tail = log.read_text()[-800:] if log.exists() else "(no log)"
            tails.append(f"--- {name} ({log}):\n{tail}")
        raise LabError(f"etcd on {', '.join(sick)} not healthy within {timeout:.0f} s; log tail:\n" + "\n".join(tails))


def _json_list(text: str) -> list[dict[str, Any]]:
    """etcdctl's ``-w json`` output for several endpoints (a list), or nothing on failure."""
    try:
        data = json.loads(text)
    except ValueError:
        return []
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []


def _json_obj(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
