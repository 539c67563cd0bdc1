"""``evac agent``: runs on every host, holds its lease in etcd and feeds its watchdog.

The agent is how a host without a BMC evac can reach is fenced: it feeds the host's
watchdog only while :func:`evac.selffence.feeds` allows, so a host cut off from etcd
and from its peers resets itself, and the leader can count it fenced after the timings
in :mod:`evac.selffence`. It also publishes what it sees (libvirtd alive, its guests'
states, which peers answer), and reports a guest whose QEMU died so the leader restarts
it (``Jobs.guest_failed``).

Order matters at both ends. On start the lease comes first, then the watchdog is armed,
then the live key is published, then ``running`` is recorded: a host the leader knows as
``running`` always has an armed watchdog, and its lease is timed from a real deletion.
An agent vouches for its peers only while running, and a lease it stopped trusting is
given up for a new one, so the leader can tell who held a lease throughout. A watchdog
that cannot be fed is recorded ``unarmed``. On a clean stop ``stopped`` is recorded first, then the lease is revoked,
then the watchdog is disarmed: a disarmed host is never counted as fenced. When etcd
cannot take the ``stopped`` record, the watchdog is left armed and resets the host,
since nothing else would make the leader's count sound. A crashed agent does not
disarm either: its watchdog resets the host, and that is the point.

While HA is disarmed (``evac ha disarm``, the journal's ``disarmed`` key) the agent feeds
whatever happens. It looks at that key every second while it holds its lease, and its
state record acknowledges what it saw (``"ha": "armed"|"disarmed"``), in the order that
keeps the leader's count sound (:func:`evac.selffence.mode_while_acknowledging`). Every
write of that record is a compare-and-swap on its last revision, so a write of its own
that etcd applies late can never undo a newer one.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from urllib.parse import unquote, urlsplit

from .agentpeers import PeerAsker, peer_app
from .agents import RUNNING, STOPPED, UNARMED, AgentState, guestdown_key, live_key, state_key
from .config import AgentSettings
from .errors import ConfigError, EvacError, JournalError
from .etcdclient import Cluster, EtcdSettings, mod_revision_is, put_op
from .etcdsession import Session
from .fleet import reachable
from .hypervisor import Hypervisor
from .inventory import HostSpec, Inventory
from .model import ACTIVE
from .selffence import Acknowledged, HaMode, feeds, mode_while_acknowledging
from .watchdog import Watchdog
from .web import WebServer, WebSettings

log = logging.getLogger("evac.agent")
STOP_RECORD_TRIES = 5  # attempts at recording "stopped" before leaving the watchdog armed
PEER_PROBE_EVERY = 5.0  # seconds between checks of which peers' ports answer
HA_EVERY = 1.0  # seconds between looks at the journal's disarmed key (evac/etcdjournal.py)


def disarmed_key(prefix: str) -> str:
    """The journal's record of HA disarmed (``EtcdJournal.disarm``): present while disarmed."""
    return f"{prefix}disarmed"


def acknowledged(cluster: Cluster, prefix: str, host: str) -> Acknowledged:
    """What ``host``'s agent record acknowledges of HA, with the record's revision."""
    kv = cluster.get(state_key(prefix, host))
    return Acknowledged.parse(kv.value if kv else None, kv.mod_revision if kv else 0)


def acknowledgments(cluster: Cluster, prefix: str) -> dict[str, tuple[str, Acknowledged]]:
    """Every agent's state (running, stopped, unarmed) and what it acknowledges of HA, in one read."""
    found = {}
    for kv in cluster.range(f"{prefix}agents/state/"):
        host = unquote(kv.key.removeprefix(f"{prefix}agents/state/"))
        state = AgentState.parse(host, kv.value, kv.mod_revision)
        found[host] = (state.state if state else "unreadable", Acknowledged.parse(kv.value, kv.mod_revision))
    return found


def host_address(spec: HostSpec) -> str:
    """Where a host's agent listens: its inventory address, else its libvirt URI's host."""
    return spec.address or urlsplit(spec.uri).hostname or spec.name


class Agent:
    """One host's agent. ``start`` returns once the watchdog is armed and fed by the loop;
    ``stop`` is the clean stop (``systemctl stop``)."""

    def __init__(
        self,
        host: HostSpec,
        inventory: Inventory,
        settings: AgentSettings,
        etcd: EtcdSettings,
        watchdog: Watchdog,
        connect: Callable[[str, str], Hypervisor] = lambda name, uri: Hypervisor.connect(name, uri, keepalive=(1, 3)),
    ) -> None:
        self.host = host
        self.settings = settings
        self.timings = t = settings.timings
        self.watchdog = watchdog
        self.cluster = Cluster(replace(etcd, lease_ttl=int(t.lease_ttl)))
        self.prefix = etcd.prefix
        self.session = Session(self.cluster, int(t.lease_ttl), name=f"agent {host.name}")
        peers = {h.name: f"http://{host_address(h)}:{settings.port}" for h in inventory.hosts if h.name != host.name}
        if _loopback(host_address(host)) and not all(_loopback(host_address(h)) for h in inventory.hosts):
            raise ConfigError(
                f"{host.name}: address {host_address(host)} is loopback: its peers could never ask its agent "
                "about etcd; give the host its network address in the inventory"
            )
        self.asker = PeerAsker(peers, settings.secret, t.peer_timeout)
        self.server = WebServer(
            peer_app(host.name, lambda: self.answer(), settings.secret),
            host_address(host),
            settings.port,
            WebSettings(header_deadline=2.0, body_deadline=2.0, max_body_bytes=1024, keep_alive=2, shutdown_grace=1),
        )
        self._connect = connect
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._published: tuple[int, str] | None = None  # (lease, view) last put
        self._view: dict[str, object] = {"libvirtd": False, "guests": {}, "peers": {}}
        self._view_lock = threading.Lock()
        self._reported: set[str] = set()  # stopped guests already judged (reported dead, or stopped on purpose)
        self._reported_lock = threading.Lock()
        self.running = False  # armed, published and recorded: only then does it vouch for peers
        self.armed_timeout = 0.0
        self.unarmed = False  # feeding failed: recorded, so the leader does not count the watchdog
        self.decision = ""  # why the watchdog is (not) fed, for the log and tests
        self.feeding = False
        self.ha = HaMode.ARMED  # how it feeds: self-fencing until it sees HA disarmed
        self.acknowledged = HaMode.ARMED  # what its state record says of HA (written with every record)
        self._record_lock = threading.Lock()  # one write of the state record at a time
        self._revision: int | None = None  # the record's revision after its last write; None: read it first
        self._last: tuple[str, str, float] = (RUNNING, "", 0.0)  # (state, reason, timeout) last recorded

    # ---------------------------------------------------------------- lifecycle
    def start(self, wait_for_etcd: float = float("inf"), stopping: threading.Event | None = None) -> bool:
        """Serve peers, take the lease (waiting for etcd), arm the watchdog, publish the
        live key, then say ``running``. False when ``stopping`` was set first (a SIGTERM
        while waiting): nothing is left armed then."""
        if stopping is not None:
            self._stop = stopping
        self.server.start()
        deadline = time.monotonic() + wait_for_etcd
        said = ""
        while True:
            try:
                self.session.start()
                break
            except JournalError as exc:
                if str(exc) != said:
                    log.warning("agent %s: no lease yet, watchdog not armed: %s", self.host.name, exc)
                    said = str(exc)
                if time.monotonic() > deadline or self._stop.wait(1.0):
                    self.server.stop()
                    if self._stop.is_set():
                        return False
                    raise
        armed = self.watchdog.arm(self.timings.watchdog_timeout)
        if armed > self.timings.watchdog_timeout:
            self.watchdog.disarm()
            self.session.stop(revoke=True)
            self.server.stop()
            raise ConfigError(
                f"agent.watchdog.timeout: the watchdog runs {armed:g} s, longer than the "
                f"{self.timings.watchdog_timeout:g} s the leader waits for; nothing armed"
            )
        self.armed_timeout = armed
        thread = threading.Thread(target=self._feed_loop, name="agent-feed", daemon=True)
        thread.start()
        self._threads.append(thread)
        while not self._publish() and not self._stop.wait(min(1.0, self.timings.lease_ttl / 3)):
            pass  # the live key first: "running" without it would be timed from an old absence
        if not self._record(RUNNING, f"watchdog armed, {armed:g} s", armed, tries=None):
            return False  # stopping: stop() records stopped and disarms
        self.running = True
        for target, name in ((self._observe_loop, "agent-observe"), (self._ha_loop, "agent-ha")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("agent %s: lease %x, watchdog %g s armed, running", self.host.name, self.session.id, armed)
        return True

    def stop(self) -> bool:
        """The clean stop; True when the watchdog was disarmed (``stopped`` recorded)."""
        self.running = False  # vouches for nobody from here on
        recorded = self._record(STOPPED, "agent stopped cleanly", 0.0, tries=STOP_RECORD_TRIES)
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        if recorded:
            self.session.stop(revoke=True)
            self.watchdog.disarm()
            log.info("agent %s: stopped; watchdog disarmed", self.host.name)
        else:
            self.watchdog.abandon()
            self.session.stop(revoke=False)
            log.error(
                "agent %s: etcd did not take the 'stopped' record, so the watchdog stays armed and resets this "
                "host: otherwise evac could count it fenced while it runs",
                self.host.name,
            )
        self.server.stop()
        self.asker.close()
        self.cluster.close()
        return recorded

    # ---------------------------------------------------------------- the rule
    def reaches_etcd(self) -> bool:
        """Whether it holds its lease by its own clock. A lease it stopped trusting is given
        up for a new one: an agent that vouched for a peer must never look, to the leader,
        like one that held its lease all along."""
        if self.session.valid(self.timings.session_margin):
            return True
        self.session.give_up()
        return False

    def answer(self) -> bool | None:
        """What it tells a peer: whether it reaches etcd; None (no answer) unless running,
        so an agent starting or stopping vouches for nobody."""
        if not self.running:
            return None
        return self.reaches_etcd()

    def decide(self) -> tuple[bool, str]:
        holds = self.reaches_etcd()  # asked while disarmed too: a lost lease is replaced
        mode = self.ha
        answers = {} if holds or mode is HaMode.DISARMED else self.asker.ask_all()
        return feeds(mode, holds, answers, len(self.asker.peers))

    # ---------------------------------------------------------------- HA
    def _ha_loop(self) -> None:
        while not self._stop.wait(min(HA_EVERY, self.timings.lease_ttl / 3)):
            try:
                self.follow_ha()
            except Exception:  # the loop must live on: it is how an arm is seen
                log.exception("agent %s: following HA", self.host.name)

    def follow_ha(self) -> None:
        """Look at the journal's disarmed key, while the lease holds (an agent cut off keeps
        the mode it last saw), and acknowledge a change in the order that keeps the leader's
        count sound: armed at once, then recorded; disarmed once recorded."""
        if not self.running or not self.session.valid(self.timings.session_margin):
            return  # starting or stopping: the state record is start()'s or stop()'s alone
        try:
            seen = HaMode.DISARMED if self.cluster.get(disarmed_key(self.prefix)) is not None else HaMode.ARMED
        except JournalError as exc:
            log.debug("agent %s: reading whether HA is disarmed: %s", self.host.name, exc)
            return
        if seen == self.ha == self.acknowledged:
            return
        self.ha = mode_while_acknowledging(self.ha, seen)
        if not self._record(None, "", 0.0, tries=1, ha=seen):
            return  # looked at again next round
        self.ha = seen
        if seen is HaMode.DISARMED:
            log.warning("agent %s: HA disarmed: the watchdog is fed whatever happens", self.host.name)
        else:
            log.info("agent %s: HA armed: the watchdog is fed only while this host is healthy", self.host.name)

    def _feed_loop(self) -> None:
        while not self._stop.wait(self.timings.feed_every):
            try:
                feed, why = self.decide()
                if feed:
                    self._feed()
                if why != self.decision:
                    (log.info if feed else log.error)(
                        "agent %s: watchdog %s: %s", self.host.name, "fed" if feed else "NOT fed", why
                    )
                self.decision, self.feeding = why, feed
            except Exception:  # the loop must live on: a missed feed is what resets the host
                log.exception("agent %s: feeding the watchdog", self.host.name)

    def _feed(self) -> None:
        """Feed; a watchdog that cannot be fed cannot reset the host either, so the leader is
        told (``unarmed``) until feeding works again."""
        try:
            self.watchdog.feed()
        except Exception as exc:
            if not self.unarmed:
                log.error("agent %s: the watchdog cannot be fed (%s): recorded unarmed", self.host.name, exc)
                self.unarmed = self._record(UNARMED, f"feeding failed: {exc}", self.armed_timeout, tries=1)
            return
        if self.unarmed and self.running:
            self.unarmed = not self._record(RUNNING, "feeding works again", self.armed_timeout, tries=1)

    # ---------------------------------------------------------------- etcd
    def _record(
        self, state: str | None, reason: str, timeout: float, tries: int | None, ha: HaMode | None = None
    ) -> bool:
        """Write the state record, with what it acknowledges of HA (``ha``, else what the
        record says now); ``tries=None`` keeps trying until it works or the agent stops.
        ``state`` None writes the last state again, as it is when the lock is held: an
        acknowledgement must never bring back a ``running`` that ``stop()`` or a failed
        feed has replaced meanwhile."""
        margin = self.timings.minimum_margin()
        attempt = 0
        while tries is not None or not self._stop.is_set():
            attempt += 1
            try:
                with self._record_lock:
                    mode = ha or self.acknowledged
                    now = (state, reason, timeout) if state is not None else self._last
                    fields = AgentState(self.host.name, now[0], now[2], os.getpid(), time.time(), now[1], margin)
                    self._swap(json.dumps({**json.loads(fields.record()), "ha": str(mode)}))
                    self.acknowledged, self._last = mode, now
                return True
            except JournalError as exc:
                log.warning("agent %s: recording '%s' in etcd: %s", self.host.name, state, exc)
                if tries is not None and attempt >= tries:
                    return False
                time.sleep(min(1.0, self.timings.lease_ttl / 3))
        return False

    def _swap(self, record: str) -> None:
        """Put the state record if it is still the one this agent last wrote: a put of its
        own that timed out here but reaches etcd later then finds the revision moved."""
        key = state_key(self.prefix, self.host.name)
        try:
            if self._revision is None:
                kv = self.cluster.get(key)
                self._revision = kv.mod_revision if kv else 0
            done = self.cluster.txn([mod_revision_is(key, self._revision)], [put_op(key, record)])
        except JournalError:
            self._revision = None  # the put may land yet: read the revision again first
            raise
        if not done.succeeded:
            self._revision = None
            raise JournalError(f"{key} was rewritten meanwhile (a controller marked it?): read again")
        self._revision = done.revision

    def _publish(self) -> bool:
        """The live key under the current lease, when the lease or the view changed; whether
        it is there. Never from the feeding thread: a put may wait for etcd's timeouts."""
        lease, _ = self.session.identity()
        with self._view_lock:
            view = json.dumps({"host": self.host.name, "pid": os.getpid(), **self._view}, sort_keys=True)
        if self._published == (lease, view):
            return True
        try:
            self.cluster.put(live_key(self.prefix, self.host.name), view, lease)
        except JournalError as exc:
            log.warning("agent %s: publishing its view: %s", self.host.name, exc)
            return False
        self._published = (lease, view)
        return True

    def _update(self, key: str, value: object) -> None:
        with self._view_lock:
            self._view[key] = value

    # ---------------------------------------------------------------- what it sees
    def _observe_loop(self) -> None:
        """libvirtd and the guests every round, peers' ports every ``PEER_PROBE_EVERY`` s;
        a guest's death is reported the moment libvirt tells it."""
        hv: Hypervisor | None = None
        probed = -float("inf")
        every = max(0.5, self.timings.lease_ttl / 3)
        while not self._stop.is_set():
            try:
                if hv is None or not hv.alive():
                    if hv is not None:
                        hv.close()
                    hv = self._connect(self.host.name, self.settings.libvirt or self.host.uri)
                    hv.on_guest_down(self._guest_down)
                guests = {g.name: g.state for g in hv.guests()}
                self._update("libvirtd", True)
                self._update("guests", guests)
                self._sweep(hv, guests)
            except EvacError as exc:
                hv = None
                self._update("libvirtd", False)
                log.debug("agent %s: libvirtd: %s", self.host.name, exc)
            if time.monotonic() - probed > PEER_PROBE_EVERY:
                probed = time.monotonic()
                self._update("peers", {name: reachable(url, 0.3) for name, url in self.asker.peers.items()})
            if self.session.valid(self.timings.session_margin):
                self._publish()
            self._stop.wait(every)
        if hv is not None:
            hv.close()

    def _sweep(self, hv: Hypervisor, guests: dict[str, str]) -> None:
        """A death whose event was missed (libvirtd restarted, the agent was down) is
        found by the guest's stop reason; each stop is judged once (one libvirt call), not
        every round."""
        with self._reported_lock:
            self._reported &= {name for name, state in guests.items() if state not in ACTIVE}
            unreported = [n for n, state in guests.items() if state not in ACTIVE and n not in self._reported]
        for name in unreported:
            try:
                reason = hv.guest_stop_reason(name)
            except EvacError:
                continue
            if reason is not None:
                self._guest_down(name, reason)  # judged once the report is in etcd
            else:
                with self._reported_lock:
                    self._reported.add(name)  # stopped on purpose

    def _guest_down(self, guest: str, reason: str) -> None:
        """Libvirt says a guest's QEMU died: tell the leader, which restarts it."""
        record = json.dumps({"reason": reason, "at": time.time()})
        try:
            self.cluster.put(guestdown_key(self.prefix, self.host.name, guest), record)
            with self._reported_lock:
                self._reported.add(guest)
            log.warning("agent %s: guest %s stopped (%s): reported", self.host.name, guest, reason)
        except JournalError as exc:
            log.error("agent %s: guest %s stopped (%s), not reported: %s", self.host.name, guest, reason, exc)


def _loopback(address: str) -> bool:
    """Whether ``address`` (a name resolved here) is this machine's loopback: a host name
    that maps to 127.0.1.1 in /etc/hosts is the usual way to get there."""
    try:
        return ipaddress.ip_address(socket.gethostbyname(address)).is_loopback
    except (OSError, ValueError):
        return False
