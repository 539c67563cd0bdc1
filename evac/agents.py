"""What the controllers know of the hosts' agents, from etcd alone.

Keys (under the journal's ``etcd.prefix``)::

    agents/state/<host>          {"state": "running"|"stopped", "watchdog_timeout", "pid", "at", "reason",
                                  "ha": "armed"|"disarmed" (what the agent acknowledged)}
                                 no lease: it outlives the agent, so a crash is told from a clean stop
    agents/live/<host>           the agent's view (libvirtd, guests, peers), under its lease:
                                 deleted by etcd when the lease expires, or by a clean stop's revoke
    agents/guestdown/<host>/<guest>
                                 {"reason": "failed"|"crashed", "at"}: a guest's QEMU died; the
                                 leader restarts it (``Jobs.guest_failed``) and deletes the key

The leader counts a host fenced by its watchdog (:meth:`AgentView.self_fenced`) only
when its agent was running with a watchdog no longer than the configured one, its live
key is gone and was seen gone for the watchdog timeout plus the margin, the host answers
nothing, and a majority of the other running agents still hold their leases. Keepalives
raise no watch events, so "gone since" is the moment this process first saw the key
missing: never earlier than the deletion, so a late observer only waits longer.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from .errors import JournalError
from .etcdclient import Cluster, mod_revision_is, put_op
from .selffence import Timings

log = logging.getLogger(__name__)

RUNNING = "running"  # armed, and its lease published: the only state the watchdog fence counts
STOPPED = "stopped"  # a clean stop: disarmed
UNARMED = "unarmed"  # feeding failed, or seen alive without its lease, or already counted fenced


def live_key(prefix: str, host: str) -> str:
    return f"{prefix}agents/live/{quote(host, safe='')}"


def state_key(prefix: str, host: str) -> str:
    return f"{prefix}agents/state/{quote(host, safe='')}"


def guestdown_key(prefix: str, host: str, guest: str) -> str:
    return f"{prefix}agents/guestdown/{quote(host, safe='')}/{quote(guest, safe='')}"


@dataclass(frozen=True)
class AgentState:
    """An agent's last word about itself, kept without a lease."""

    host: str
    state: str  # RUNNING, STOPPED or UNARMED
    watchdog_timeout: float = 0.0
    pid: int = 0
    at: float = 0.0  # wall clock
    reason: str = ""
    min_margin: float = 0.0  # the margin the agent's own timings need (``Timings.minimum_margin``)
    revision: int = 0  # the record's mod_revision in etcd (0: not read from etcd)

    def record(self) -> str:
        return json.dumps(
            {
                "state": self.state,
                "watchdog_timeout": self.watchdog_timeout,
                "pid": self.pid,
                "at": self.at,
                "reason": self.reason,
                "min_margin": self.min_margin,
            }
        )

    @classmethod
    def parse(cls, host: str, value: str, revision: int = 0) -> AgentState | None:
        try:
            data = json.loads(value)
            return cls(
                host,
                str(data["state"]),
                float(data.get("watchdog_timeout", 0)),
                int(data.get("pid", 0)),
                float(data.get("at", 0)),
                str(data.get("reason", "")),
                float(data.get("min_margin", 0)),
                revision,
            )
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class GuestDown:
    """A guest whose QEMU died, as its host's agent reported it."""

    host: str
    guest: str
    reason: str
    at: float
    key: str
    revision: int


class AgentView:
    """The agents' keys as this controller last read them, and since when each host's
    lease has been seen gone. ``start`` follows them with an etcd watch; every verdict
    that matters (:meth:`self_fenced`) reads etcd again first."""

    def __init__(self, cluster: Cluster, clock: Callable[[], float] = time.monotonic) -> None:
        self.cluster = cluster
        self.prefix = cluster.settings.prefix
        self.clock = clock
        self.live: dict[str, dict[str, Any]] = {}
        self.leases: dict[str, int] = {}  # the lease each live key is under
        self.states: dict[str, AgentState] = {}
        self.gone_since: dict[str, float] = {}
        # each live agent's lease, and when this view first saw it: an agent that vouched for
        # a peer gave its lease up, so one seen since t has vouched for nobody since t
        self.lease_since: dict[str, tuple[int, float]] = {}
        self.read_at = -float("inf")  # monotonic time of the last successful read
        self.changed: list[Callable[[], None]] = []  # called after each read that changed a lease
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---------------------------------------------------------------- following
    def start(self, every: float = 1.0) -> None:
        if self._threads:
            return
        self._threads.append(self.cluster.watch(f"{self.prefix}agents/", self._wake.set, self._stop))
        thread = threading.Thread(target=self._follow, args=(every,), name="agent-view", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(5)
        self._threads.clear()

    def _follow(self, every: float) -> None:
        while not self._stop.is_set():
            self._wake.wait(every)
            self._wake.clear()
            try:
                self.refresh()
            except JournalError:
                continue  # etcd away: nothing is judged until it answers
            except Exception:
                log.exception("reading the agents' keys")

    def refresh(self) -> None:
        """Read every agent's keys in one consistent read; note leases seen gone.

        A failed read forgets every "gone since": a key that came back and went again
        unseen must not be timed from its first disappearance. A state record rewritten
        (an agent started again) restarts its host's count too."""
        try:
            kvs = self.cluster.range(f"{self.prefix}agents/")
        except JournalError:
            with self._lock:
                self.gone_since.clear()
                self.lease_since.clear()
            raise
        live: dict[str, dict[str, Any]] = {}
        leases: dict[str, int] = {}
        states: dict[str, AgentState] = {}
        for kv in kvs:
            rest = kv.key.removeprefix(f"{self.prefix}agents/")
            kind, _, name = rest.partition("/")
            host = unquote(name)
            if kind == "live":
                try:
                    view = json.loads(kv.value)
                except ValueError:
                    view = {}
                live[host] = view if isinstance(view, dict) else {}
                leases[host] = kv.lease
            elif kind == "state":
                state = AgentState.parse(host, kv.value, kv.mod_revision)
                if state is not None:
                    states[host] = state
        now = self.clock()
        with self._lock:
            before = set(self.live)
            for host, state in states.items():
                old = self.states.get(host)
                if old is not None and old.revision != state.revision:
                    self.gone_since.pop(host, None)
            self.live, self.leases, self.states, self.read_at = live, leases, states, now
            self.lease_since = {
                h: self.lease_since[h] if self.lease_since.get(h, (0, 0.0))[0] == lease else (lease, now)
                for h, lease in leases.items()
            }
            for host in set(states) | before:
                if host in live:
                    self.gone_since.pop(host, None)
                elif host not in self.gone_since:
                    self.gone_since[host] = now
            moved = before != set(live)
        if moved:
            for callback in list(self.changed):
                callback()

    def unarm(self, host: str, reason: str) -> bool:
        """Mark ``host``'s agent record as not counting as an armed watchdog (it was counted
        fenced already, or its host was seen alive without its lease), unless the agent
        rewrote it meanwhile. A new start of the agent records ``running`` again."""
        with self._lock:
            state = self.states.get(host)
        if state is None or state.state != RUNNING or not state.revision:
            return False
        unarmed = AgentState(host, UNARMED, state.watchdog_timeout, state.pid, time.time(), reason, state.min_margin)
        key = state_key(self.prefix, host)
        try:
            done = self.cluster.txn([mod_revision_is(key, state.revision)], [put_op(key, unarmed.record())])
        except JournalError as exc:
            log.warning("could not mark %s's agent unarmed (%s): %s", host, reason, exc)
            return False
        return done.succeeded

    # ---------------------------------------------------------------- verdicts
    def holds_lease(self, host: str) -> bool | None:
        """Whether the host's agent holds its lease, by the last read; None: it has no agent."""
        with self._lock:
            if host in self.live:
                return True
            return False if host in self.states else None

    def self_fenced(
        self, host: str, timings: Timings, answers: Callable[[], bool], peers: Sequence[str] = ()
    ) -> tuple[bool | None, str]:
        """Whether ``host`` was reset by its watchdog: True (why), False (never will be
        counted so: why), None (not yet: what is awaited). ``peers`` are the other hosts
        of the inventory, as the agents that vouch count them: the wait runs from when a
        majority of them have held their present leases (an agent that vouched for a peer
        gave its lease up), or from ``host``'s lease seen gone, whichever is later. ``answers()`` says whether the host
        still answers on any port; it is asked last, as it takes time."""
        try:
            self.refresh()
        except JournalError as exc:
            return None, f"etcd unavailable: {exc}"
        with self._lock:
            state = self.states.get(host)
            since = self.gone_since.get(host)
            held = dict(self.lease_since)
            now = self.read_at
            others = sorted(set(peers) - {host}) or sorted(h for h in self.states if h != host)
        if state is None:
            return False, f"no evac agent ever ran on {host}: its watchdog cannot fence it"
        if state.state != RUNNING:
            return (
                False,
                f"{host}'s agent is {state.state} ({state.reason or state.state}): its watchdog does not count",
            )
        if state.watchdog_timeout > timings.watchdog_timeout:
            return False, (
                f"{host}'s agent armed a {state.watchdog_timeout:g} s watchdog, longer than agent.watchdog.timeout "
                f"{timings.watchdog_timeout:g} s that this controller waits for"
            )
        if state.min_margin > timings.margin + 1e-9:
            return False, (
                f"{host}'s agent runs timings that need a {state.min_margin:.2f} s margin, more than this "
                f"controller's agent.margin {timings.margin:g} s"
            )
        if host in held or since is None:
            return None, f"{host}'s agent still holds its lease"
        need = len(others) // 2 + 1
        holding = sorted(held[h][1] for h in others if h in held)
        if len(holding) < need:
            return None, (
                f"only {len(holding)} of {len(others)} other agents hold their leases ({need} must): agents that "
                f"lost etcd may be vouching for each other and still running"
            )
        # From when a majority of the others have held their present leases, no majority can
        # have vouched for the host: its watchdog is timed from then, or from its lease's end.
        start = max(since, holding[need - 1])
        wait = timings.watchdog_timeout + timings.margin
        left = start + wait - now
        if left > 0:
            return None, f"{host}'s lease seen gone {now - since:.1f} s ago; its watchdog fires within {left:.1f} s"
        if answers():
            return None, f"{host} still answers although its lease is gone"
        return True, (
            f"{host}'s lease gone {now - since:.1f} s (watchdog {timings.watchdog_timeout:g} s + margin "
            f"{timings.margin:g} s), {len(holding)} of {len(others)} other agents have held theirs since, "
            f"and {host} answers nothing"
        )

    # ---------------------------------------------------------------- guests
    def guests_down(self) -> list[GuestDown]:
        found = []
        for kv in self.cluster.range(f"{self.prefix}agents/guestdown/"):
            host, _, guest = kv.key.removeprefix(f"{self.prefix}agents/guestdown/").partition("/")
            try:
                data = json.loads(kv.value)
                found.append(
                    GuestDown(
                        unquote(host), unquote(guest), str(data["reason"]), float(data["at"]), kv.key, kv.mod_revision
                    )
                )
            except (ValueError, KeyError, TypeError):
                continue
        return found
