"""The monitor: watches every host and reports hosts that died.

One thread per host polls the host's evidence sources (:mod:`evac.evidence`): the
monitor's own libvirt connection with keepalive, a port probe and the BMC's power
reading, the agent's lease where hosts run ``evac agent`` (:mod:`evac.agentevidence`),
plus any a plugin adds through ``evac_evidence_sources``. A source may also push
evidence (libvirt's close callback, a lease gone), which wakes the thread at once: no
fixed sleeps stand between a failure and its detection. :class:`evac.health.HostHealth`
weighs the evidence into up / suspect / down.

Probing costs CPU per host; a lease costs nothing. So while a host is up and its agent
holds its lease, the host is *hushed*: its probe and BMC are not asked and its libvirt
connection carries no keepalive (it still tells a dead host's EOF at once). The first
evidence of death (the lease gone, an EOF) un-hushes it, and every watch is asked again
at once, so detection is no slower than probing all along.

A host in maintenance is watched but never failed over; a fenced host that comes back
has its stale definitions of guests now running elsewhere removed, and stays out of
service until an operator enables it. Saving guests' definitions while hosts are up is
not the monitor's job: it runs whether or not the monitor does.

While HA is disarmed (``evac ha disarm``) every host is watched and reported as ever,
and one that goes down is an alert (``ha.held``) instead of a failover; once HA is
armed again, the hosts down then are judged at once, as when the storm brake is released.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Protocol, TypeVar

from .agentevidence import AgentSource, Leases
from .app import App
from .coordination import Coordination, Solo
from .errors import ConfigError, EvacError, HostUnreachable, JournalError
from .events import Event
from .evidence import (
    Connection,
    Evidence,
    EvidenceSource,
    Hushable,
    LibvirtSource,
    MonitorSettings,
    PowerSource,
    ProbeSource,
    Rule,
    Vouching,
    Watch,
)
from .fencedhost import Cleanable, clean
from .fencing import agent_for
from .fleet import answers, reachable
from .health import HostHealth
from .hooks import hookimpl
from .hypervisor import Hypervisor
from .inventory import HostSpec
from .journal import Disarmed, HostState, Journal
from .plugins import notify
from .states import EventKind, Health, HostMode, JobState
from .stormbrake import StormBrake

log = logging.getLogger("evac.monitor")

REASK_PAUSE = 300.0  # s at most between failovers asked of a host that stays down
T = TypeVar("T")

HEALTH_EVENTS = {Health.UP: EventKind.HOST_UP, Health.SUSPECT: EventKind.HOST_SUSPECT, Health.DOWN: EventKind.HOST_DOWN}


class HostConnection(Connection, Cleanable, Protocol):
    """What the monitor needs of a libvirt connection: the keepalive source's part, and
    enough to clean a fenced host that comes back. :class:`Hypervisor` is one."""


def connect_libvirt(spec: HostSpec, settings: MonitorSettings, keepalive: bool = True) -> Hypervisor:
    """The real connection. ``libvirt.open`` has no connect timeout, so a short TCP probe
    first keeps a silent host from stalling its thread, and an open that hangs anyway (the
    host cut off between the probe and the open) is given up after ``connect_timeout``.
    Without ``keepalive`` (a hushed host) the idle connection costs nothing and still
    reports the host's EOF."""
    if not reachable(spec.uri, settings.probe_timeout):
        raise HostUnreachable(f"{spec.name}: {spec.uri} does not answer")
    ping = settings.keepalive if keepalive else None
    opened = call_within(
        lambda: Hypervisor.connect(spec.name, spec.uri, keepalive=ping),
        settings.connect_timeout,
        late=Hypervisor.close,
        name=f"connect-{spec.name}",
    )
    if opened is None:
        raise HostUnreachable(f"{spec.name}: {spec.uri} did not open within {settings.connect_timeout:g} s")
    return opened


def call_within(call: Callable[[], T], timeout: float, late: Callable[[T], None], name: str) -> T | None:
    """``call()`` on a thread of its own, waited for ``timeout`` seconds; None when it has not
    returned by then: the caller goes on, and ``late`` gets the result whenever it comes."""
    lock = threading.Lock()
    done = threading.Event()
    result: list[T] = []
    error: list[Exception] = []
    gave_up = threading.Event()

    def run() -> None:
        try:
            value = call()
        except Exception as exc:
            with lock:
                error.append(exc)
            done.set()
            return
        with lock:
            if not gave_up.is_set():
                result.append(value)
                done.set()
                return
        late(value)

    threading.Thread(target=run, name=name, daemon=True).start()
    done.wait(timeout)
    with lock:
        if not result and not error:
            gave_up.set()
            return None
    if error:
        raise error[0]
    return result[0]


def bmc_power(app: App, spec: HostSpec) -> str:
    """The power state read through the host's first fence method: on, off or unknown."""
    if not spec.fence:
        return "unknown"
    try:
        return agent_for(app.pm, spec, spec.fence[0], app).power_state()
    except Exception:  # a BMC that does not answer is no signal either way
        return "unknown"


class Monitor:
    """Watches every inventory host. ``probe``, ``connect``, ``power`` and ``agents`` feed
    the built-in evidence sources; they default to the real port probe, libvirt, BMC and
    ``app.agents`` (None without an ``agent:`` section: no ``agent`` source), and unit
    specs replace them to drive the monitor without a fleet."""

    def __init__(
        self,
        app: App,
        on_down: Callable[[str, str], int | None],
        settings: MonitorSettings = MonitorSettings(),
        brake: StormBrake | None = None,
        *,
        probe: Callable[[HostSpec], bool] | None = None,
        connect: Callable[[HostSpec], HostConnection] | None = None,
        power: Callable[[HostSpec], str] | None = None,
        coordination: Coordination | None = None,
        agents: Leases | None = None,
    ) -> None:
        self.app = app
        self.coordination = coordination or Solo()
        self.on_down = on_down
        self.settings = settings
        self.brake = brake or StormBrake()
        held = app.journal.brake()
        if held:  # an engaged brake holds across restarts until an operator releases it
            self.brake.engaged, self.brake.reason = True, held.reason
        try:
            self.disarmed: Disarmed | None = app.journal.disarmed()  # as this monitor last knew it
        except JournalError:
            self.disarmed = None  # etcd away: each failover reads it again before it starts
        self._ha = HaFollower(self)
        self._probe = probe or (lambda spec: answers(spec, settings.probe_timeout))
        self._connect_to = connect or (lambda spec: connect_libvirt(spec, settings))
        self._connect_quiet = connect or (lambda spec: connect_libvirt(spec, settings, keepalive=False))
        self._power = power or (lambda spec: bmc_power(app, spec))
        self._agents = agents if agents is not None else app.agents
        self.sources = self._collect_sources()
        rules = {source.name: source.rule for source in self.sources}
        self.health = {h.name: HostHealth(h.name, rules) for h in app.inventory.hosts}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._failovers: list[threading.Thread] = []  # joined by stop() too: none may outlive the monitor
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._ready_count = 0
        self._deciding: set[str] = set()  # down, their storm-brake count not taken yet
        self._asks: dict[str, int] = {}  # host -> the generation of its newest failover thread
        self._wakes: list[threading.Event] = []
        self.started = threading.Event()

    def _collect_sources(self) -> list[EvidenceSource]:
        """The built-in sources, then plugins'; a name given twice is an error naming both."""
        own: list[EvidenceSource] = [
            LibvirtSource(self._connect, self._connect_quiet_host),
            ProbeSource(self._probe, rule=Rule(confirm=self.settings.confirm_misses)),
            PowerSource(self._power, every=self.settings.power_every),
        ]
        if self._agents is not None:
            agent = self.app.settings.agent
            ttl = agent.timings.lease_ttl if agent is not None else AgentSource.stale_after
            own.append(AgentSource(self._agents, stale_after=ttl))  # the view is read every second
        found: Sequence[Sequence[EvidenceSource]] = self.app.pm.hook.evac_evidence_sources(
            app=self.app, settings=self.settings
        )
        sources: dict[str, EvidenceSource] = {}
        for source in [*own, *(s for batch in found for s in batch)]:
            if source.name in sources:
                raise ConfigError(
                    f"evidence source '{source.name}' is given twice: by {_origin(sources[source.name])}"
                    f" and {_origin(source)} (block one with EVAC_BLOCK_PLUGINS)"
                )
            sources[source.name] = source
        return list(sources.values())

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        _RUNNING.add(self)
        self.app.pm.register(self._ha, name=f"evac.monitor.ha.{id(self)}")
        for name, health in self.health.items():
            self.coordination.publish(name, health.state, health.reason)
        for spec in self.app.inventory.hosts:
            thread = threading.Thread(target=self._watch, args=(spec,), daemon=True, name=f"monitor-{spec.name}")
            thread.start()
            self._threads.append(thread)
        thread = threading.Thread(target=self._watch_brake, daemon=True, name="monitor-brake")
        thread.start()
        self._threads.append(thread)
        if self.brake.engaged:
            self._emit(EventKind.MONITOR_STORM_BRAKE, "", f"still engaged: {self.brake.reason}")
        if self.disarmed is not None:
            held = self.disarmed
            message = f"HA still disarmed: {held.describe()}"
            self._record(Event(EventKind.HA_DISARMED, 0, item=held.actor, message=message, data=_ha_data(held)))

    def stop(self) -> None:
        _RUNNING.discard(self)
        if self.app.pm.is_registered(self._ha):
            self.app.pm.unregister(self._ha)
        self._stop.set()
        with self._lock:
            wakes = list(self._wakes)
            failovers = list(self._failovers)
        for wake in wakes:
            wake.set()  # a hushed host's thread may sleep long
        for thread in self._threads + failovers:
            if thread is not threading.current_thread():
                thread.join(10)

    def state(self, host: str) -> Health:
        return self.health[host].state

    def in_doubt(self, host: str) -> list[str]:
        """The other hosts a failover of ``host`` should wait for (:func:`undecided`)."""
        with self._lock:
            return undecided(host, {name: h.state for name, h in self.health.items()}, self._deciding)

    def _watch_brake(self) -> None:
        """Follow the brake in the journal: a release made from another process (``evac brake
        release``, Slack), or a brake another replica engaged (hosts failing together are
        counted once, whichever replica counted them). Each failover reads the brake again
        before it acts, so this watch need not look often: every look costs an etcd read."""
        while not self._stop.wait(self.settings.brake_every):
            try:
                held = self.app.journal.brake()
            except JournalError:
                continue  # etcd away: nothing is failed over meanwhile anyway
            with self._lock:
                released = self.brake.engaged and held is None
                if released:
                    self.brake.release()
                elif held is not None and not self.brake.engaged:
                    self.brake.engaged, self.brake.reason = True, held.reason
            if released:
                held_back = self._held_back()
                self._emit(
                    EventKind.MONITOR_BRAKE_RELEASED,
                    "",
                    "storm brake released by an operator"
                    + (f"; failing over {', '.join(held_back)}" if held_back else ""),
                )
                for host in held_back:
                    self._spawn_fail_over(host, f"{self.health[host].reason} (after the storm brake was released)")
            self._follow_ha()

    def _follow_ha(self) -> None:
        """HA armed or disarmed by another process (the CLI, another replica): this process's
        observers hear of it (the journal has its event already), and this monitor acts on it."""
        try:
            now = self.app.journal.disarmed()
        except JournalError:
            return
        with self._lock:
            changed = (now is None) != (self.disarmed is None)
        if not changed:
            return
        if now is None:
            data: dict[str, object] = {"actor": "", "was": ""}  # who and what: in the other process's event
            event = Event(EventKind.HA_ARMED, 0, message="HA armed (seen in the journal)", data=data)
        else:
            message = f"HA disarmed: {now.describe()}"
            event = Event(EventKind.HA_DISARMED, 0, item=now.actor, message=message, data=_ha_data(now))
        self._ha_changed(now)
        notify(self.app.pm, event)

    def _ha_changed(self, disarmed: Disarmed | None) -> None:
        """HA armed or disarmed, as told by an event or seen in the journal. Arming judges
        every host down now at once, as if it had just gone down: counted together by the
        storm brake (many hosts down then is what the brake is for), then failed over."""
        with self._lock:
            armed = self.disarmed is not None and disarmed is None
            self.disarmed = disarmed
        if not armed:
            return
        held_back = self._held_back()
        at = time.monotonic()
        allowed = [host for host in held_back if not self._braked(host, at, None)]
        if allowed:
            log.info("HA armed: failing over %s", ", ".join(allowed))
        for host in allowed:
            self._spawn_fail_over(host, f"{self.health[host].reason} (after HA was armed)")

    def _held_back(self) -> list[str]:
        """Hosts down now that the brake or a disarm kept from failover: releasing the brake,
        or arming, is the operator's go."""
        with self._lock:
            down = [name for name, health in self.health.items() if health.state is Health.DOWN]
        try:
            states = self.app.journal.host_states()
            return [name for name in down if exempt(states.get(name), self.app.journal) is None]
        except JournalError:
            return down  # each failover checks again before it acts

    # ---------------------------------------------------------------- one host
    def _watch(self, spec: HostSpec) -> None:
        """The host's one thread: it polls the host's watches, and weighs what they push (a
        libvirt close, on libvirt's event thread) too, so the host's evidence is weighed in
        order, and a slow journal write never holds up libvirt's event loop."""
        wake = threading.Event()
        pushed: queue.SimpleQueue[Evidence] = queue.SimpleQueue()
        with self._lock:
            self._wakes.append(wake)

        def report(evidence: Evidence) -> None:
            pushed.put(evidence)
            wake.set()

        watches: list[Watch] = []
        for source in self.sources:
            watch = source.watch(spec, report)
            if watch is not None:
                watches.append(watch)
        vouching = [w for w in watches if isinstance(w, Vouching)]
        hushable = [w for w in watches if isinstance(w, Hushable)]
        polled = [-float("inf")] * len(watches)
        quiet = False
        first = True
        try:
            while not self._stop.is_set():
                wake.clear()  # before looking: a push from here on wakes the next wait
                while not pushed.empty():
                    self._take(spec, pushed.get_nowait())
                if self._hushed(spec, vouching) != quiet:
                    quiet = not quiet
                    for watch in hushable:
                        self._hush(spec, watch, quiet)
                for index, watch in enumerate(watches):
                    now = time.monotonic()
                    if now - polled[index] < watch.every:
                        continue
                    polled[index] = now
                    evidence = self._poll(spec, watch)
                    if evidence is not None:
                        self._take(spec, evidence)
                if first:
                    first = False
                    self._ready()
                if self._hushed(spec, vouching) == quiet:  # else what was just seen (un)hushes it now
                    wake.wait(self._pause(spec, watches, polled, quiet))
        finally:
            for watch in watches:
                try:
                    watch.close()
                except Exception:
                    log.exception("closing a watch on %s", spec.name)

    def _hushed(self, spec: HostSpec, vouching: Sequence[Vouching]) -> bool:
        """Whether the host's costly watches may rest: it is up, and a watch vouches for it."""
        if self.health[spec.name].state is not Health.UP:
            return False
        for watch in vouching:
            try:
                if watch.vouches():
                    return True
            except Exception:  # a broken plugin source vouches for nothing
                log.exception("asking whether a watch vouches for %s", spec.name)
        return False

    def _hush(self, spec: HostSpec, watch: Hushable, quiet: bool) -> None:
        try:
            watch.hush(quiet)
        except Exception:
            log.exception("%s the watches of %s", "hushing" if quiet else "waking", spec.name)

    def _pause(self, spec: HostSpec, watches: list[Watch], polled: list[float], quiet: bool) -> float:
        """How long the host's thread sleeps unless a push wakes it: a round's interval, or
        while hushed until the next watch that still wants polling is due."""
        if not quiet:
            suspect = self.health[spec.name].state is Health.SUSPECT
            return self.settings.suspect_interval if suspect else self.settings.interval
        now = time.monotonic()
        due = [
            polled[i] + max(w.every, self.settings.interval) - now for i, w in enumerate(watches) if w.every != math.inf
        ]
        return max(0.0, min([self.settings.quiet_interval, *due]))

    def _poll(self, spec: HostSpec, watch: Watch) -> Evidence | None:
        try:
            return watch.poll()
        except Exception:  # a broken plugin source is no evidence, and must not end the watch
            log.exception("polling evidence about %s", spec.name)
            return None

    def _ready(self) -> None:
        with self._lock:
            self._ready_count += 1
            if self._ready_count == len(self.health):
                self.started.set()

    def _connect(self, spec: HostSpec) -> HostConnection:
        """Connect for the libvirt source; a fenced host that answers again is cleaned first."""
        return self._cleaned(spec, self._connect_to(spec))

    def _connect_quiet_host(self, spec: HostSpec) -> HostConnection:
        return self._cleaned(spec, self._connect_quiet(spec))

    def _cleaned(self, spec: HostSpec, conn: HostConnection) -> HostConnection:
        try:
            self._on_reconnect(spec, conn)
        except EvacError as exc:
            log.warning("cleaning %s after it came back: %s", spec.name, exc)
        return conn

    def _on_reconnect(self, spec: HostSpec, hv: HostConnection) -> None:
        if not self.coordination.leads():
            return  # with replicas, the leader cleans, under its fencing token
        state = self.app.journal.host_states().get(spec.name)
        if not state or state.state != HostMode.FENCED:
            return
        self.app.journal.fence_token(None)  # still ours to act on, or OwnershipLost
        for name in clean(self.app, spec, hv).removed:
            self._emit(EventKind.HOST_CLEANED, spec.name, f"{spec.name}: removed stale definition of {name}")

    # ---------------------------------------------------------------- transitions
    def _take(self, spec: HostSpec, evidence: Evidence) -> None:
        if evidence.host != spec.name:
            log.warning(
                "evidence from %s about %s dropped: its watch is %s's", evidence.source, evidence.host, spec.name
            )
            return
        try:
            self._observe(evidence)
        except Exception:  # whatever broke must not end the host's watch: the next evidence retries
            log.exception("weighing evidence about %s", spec.name)

    def _observe(self, evidence: Evidence) -> None:
        """Weigh one piece of evidence. The journal is written and read outside the lock: with
        etcd away each call may wait for a timeout, and other hosts' watches must not."""
        host = evidence.host
        with self._lock:
            health = self.health[host]
            was = health.state
            before = health.latest.get(evidence.source)
            changed = health.observe(evidence)
            flipped = was is not Health.UP and before is not None and before.verdict != evidence.verdict
            reason = health.reason
            if changed is Health.DOWN:
                self._deciding.add(host)
            if changed is not None:
                self._changed.notify_all()
        if flipped:  # why a host in doubt stays in doubt, or leaves it
            log.info("%s: %s now says %s (%s)", host, evidence.source, evidence.verdict, evidence.detail)
        if changed is None:
            return
        if changed is not Health.DOWN:
            self._publish(host, changed, reason)
            self._emit(HEALTH_EVENTS[changed], host, reason)
            if changed is Health.UP and was is Health.DOWN:
                self._back_without_agent(host)
            return
        try:
            self._decide(host, reason, evidence.at)
        finally:
            with self._lock:
                self._deciding.discard(host)
                self._changed.notify_all()

    def _decide(self, host: str, reason: str, at: float) -> None:
        """A host just went down: ignore it (maintenance, fenced), count it towards the storm
        brake, and fail it over if the brake allows. The brake is counted, and journaled,
        before the host's ``host.down`` is told: a failover of another host checks the
        journal's brake right before its fence, and every write before it is time lost."""
        try:
            mode = exempt(self.app.journal.host_states().get(host), self.app.journal)
        except JournalError:
            mode = None  # etcd away: the failover waits for agreement, and asks again then
        if mode is not None:
            self._tell_down(host, reason)
            self._emit(EventKind.HOST_IGNORED, host, f"{host} is in {mode}: no failover")
            return
        held = self._disarmed_now()
        if held is not None:  # nor counted by the brake: arming judges it again, and counts it then
            self._tell_down(host, reason)
            self._hold(host, held)
            return
        if self._braked(host, at, reason):
            return
        self._spawn_fail_over(host, reason)

    def _braked(self, host: str, at: float, reason: str | None) -> bool:
        """Count a host down towards the storm brake (and tell it down, given its ``reason``);
        True when the brake holds it back, which is said and journaled."""
        with self._lock:
            allowed = self.brake.host_down(host, at, len(self.health))
        if not allowed:
            try:
                self.app.journal.engage_brake(self.brake.reason)
            except JournalError as exc:  # held in this process; the journal is told when it can be
                log.error("storm brake engaged but not journaled: %s", exc)
        if reason is not None:
            self._tell_down(host, reason)
        if not allowed:
            self._emit(EventKind.MONITOR_STORM_BRAKE, host, self.brake.reason)
        return not allowed

    def _disarmed_now(self) -> Disarmed | None:
        """Whether HA is disarmed, read anew; while the journal does not answer, what this
        monitor last knew (the failover reads it again before it starts)."""
        try:
            return self.app.journal.disarmed()
        except JournalError:
            with self._lock:
                return self.disarmed

    def _hold(self, host: str, held: Disarmed) -> None:
        """While HA is disarmed a host down is an alert, not a failover. The disarm is this
        monitor's from now on, even before its follower would see it: an arm that comes
        soon after must be seen as one, and fail this host over."""
        with self._lock:
            if self.disarmed is None:
                self.disarmed = held
        self._emit(
            EventKind.HA_HELD,
            host,
            f"HA disarmed: {host} not failed over ({held.describe()}); `evac ha arm` fails it over",
            {"host": host, "level": "alert"},
        )

    def _tell_down(self, host: str, reason: str) -> None:
        self._publish(host, Health.DOWN, reason)
        self._emit(HEALTH_EVENTS[Health.DOWN], host, reason)

    def _publish(self, host: str, state: Health, reason: str) -> None:
        """Tell the other replicas, unless the host has changed state since: a transition
        whose thread was held up (the libvirt event thread waiting on an etcd write while
        the host's own watch went on) must not overwrite a newer view with its older one,
        or the replicas never agree a dead host is down. Before the journal's event, so a
        slow etcd write never delays the agreement."""
        with self._lock:
            if self.health[host].state is state:
                self.coordination.publish(host, state, reason)

    def _back_without_agent(self, host: str) -> None:
        """A host back from the dead whose agent holds no lease runs without a watchdog that
        evac could count (reset by it, or its agent never came back): its leftover
        ``running`` record must not make a later cut count as fenced."""
        unarm = getattr(self._agents, "unarm", None)
        if unarm is None or self._agents is None or self._agents.holds_lease(host) is not False:
            return
        if unarm(host, "its host came back without its agent's lease: a new agent start arms it again"):
            log.info("%s came back without its agent: its watchdog no longer counts as a fence", host)

    def _spawn_fail_over(self, host: str, reason: str) -> None:
        """One failover thread per host that counts: a newer one (the host went down again,
        the brake was released, HA was armed) ends the older one at its next pause."""
        with self._lock:
            self._asks[host] = generation = self._asks.get(host, 0) + 1
            thread = threading.Thread(
                target=self._fail_over, args=(host, reason, generation), daemon=True, name=f"failover-{host}"
            )
            self._failovers = [t for t in self._failovers if t.is_alive()] + [thread]
        thread.start()

    def _fail_over(self, host: str, reason: str, generation: int) -> None:
        """Fail over at once when the host failed alone; while other hosts are in doubt, wait
        for them (up to ``settle_max``): hosts failing together must be counted together by
        the storm brake. Doubts that arrive later are the fence step's to catch: it waits
        for them again (:func:`doubts`) and reads the brake right before it fences."""
        if self.settings.settle and self._stop.wait(self.settings.settle):
            return
        deadline = time.monotonic() + self.settings.settle_max
        with self._changed:
            waited = False
            while doubts := undecided(host, {name: h.state for name, h in self.health.items()}, self._deciding):
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    break
                if not waited:
                    log.info("%s down: its failover waits for %s, in doubt too", host, ", ".join(doubts))
                    waited = True
                self._changed.wait(left)
            if self.brake.engaged:
                self._emit(EventKind.MONITOR_STORM_BRAKE, host, f"{host} not failed over: {self.brake.reason}")
                return
        asked = 0
        while (agreement := self._agreement(host)) is not None:
            job = self.on_down(host, reason if agreement == "one controller" else f"{reason}; {agreement}")
            if job is None:
                return
            self._wait_for_job(host, job)
            # Still down and not fenced: the failover ended without a fence (its check found
            # the host answering a moment before it died, or the fence failed), or a drain
            # or a return held the lock. The pause doubles from ten monitor intervals up to
            # REASK_PAUSE: a host that stays down while its failovers find it answering, or
            # whose fence keeps failing, must not start a job and an alert every round.
            asked += 1
            pause = min(REASK_PAUSE, 10 * self.settings.interval * 2 ** (asked - 1))
            if self._stop.wait(pause) or self._asks.get(host, generation) != generation:
                return

    def _wait_for_job(self, host: str, job: int) -> None:
        """Until ``job`` ends (or cannot be found), while ``host`` stays down."""
        while not self._stop.wait(self.settings.interval) and self.health[host].state is Health.DOWN:
            try:
                record = self.app.journal.job(job)
            except JournalError:
                continue
            if record is None or record.state.terminal:
                return

    def _agreement(self, host: str) -> str | None:
        """Wait, while the host stays down, until this controller may fail it over (with
        replicas: it leads and enough of them see the host dead). None: no longer needed."""
        waiting = ""
        while not self._stop.is_set():
            if self.health[host].state is not Health.DOWN:
                return None
            try:
                if exempt(self.app.journal.host_states().get(host), self.app.journal) is not None:
                    return None  # fenced or in maintenance meanwhile, by another replica or a person
                held = self.app.journal.brake()  # engaged elsewhere since the brake watch last looked
            except EvacError:
                held = None  # etcd away: the agreement below says so
            with self._lock:
                if held is not None and not self.brake.engaged:
                    self.brake.engaged, self.brake.reason = True, held.reason
                engaged = self.brake.engaged
            if engaged:  # engaged meanwhile, here or by another replica
                self._emit(EventKind.MONITOR_STORM_BRAKE, host, f"{host} not failed over: {self.brake.reason}")
                return None
            disarmed = self._disarmed_now()
            if disarmed is not None:  # disarmed meanwhile
                self._hold(host, disarmed)
                return None
            agreement = self.coordination.agreed_down(host)
            if agreement.ok:
                return agreement.why
            if agreement.why != waiting:
                waiting = agreement.why
                log.info("%s down, not failed over yet: %s", host, waiting)
            self._stop.wait(self.settings.interval)
        return None

    def _emit(self, kind: EventKind, host: str, message: str, data: Mapping[str, object] | None = None) -> None:
        self._record(Event(kind, 0, item=host, message=message, data={"host": host, **(data or {})}))

    def _record(self, event: Event) -> None:
        """To the journal when it answers, to every observer anyway."""
        try:
            self.app.journal.add_event(event)
        except JournalError as exc:
            log.warning("journal did not record %s (%s): %s", event.kind, event.message, exc)
        except Exception:
            log.exception("journal failed to record %s", event.kind)
        notify(self.app.pm, event)


class HaFollower:
    """Tells a monitor at once of HA armed or disarmed in its own process (Slack, the REST
    API): ``Jobs.arm`` announces it as an event. Other processes' are read from the journal."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = weakref.ref(monitor)

    @hookimpl
    def evac_event(self, event: Event) -> None:
        monitor = self.monitor()
        if monitor is None or event.job_id or event.kind not in (EventKind.HA_ARMED, EventKind.HA_DISARMED):
            return
        if event.kind == EventKind.HA_ARMED:
            monitor._ha_changed(None)
            return
        data = event.data
        monitor._ha_changed(
            Disarmed(str(data.get("reason", "")), str(data.get("actor", "")), float(data.get("since", event.ts)))
        )


def _ha_data(held: Disarmed) -> dict[str, object]:
    return {"actor": held.actor, "reason": held.reason, "since": held.since}


_RUNNING: weakref.WeakSet[Monitor] = weakref.WeakSet()


def doubts(app: object, host: str) -> list[str]:
    """The other hosts that the monitors running in this process for ``app`` are in doubt
    about (suspect, or down and not yet counted by the storm brake): a failover's fence
    waits for them, since hosts failing together are detected up to about a second apart.
    Empty where no monitor runs (a failover started by hand from the CLI)."""
    return sorted({name for monitor in list(_RUNNING) if monitor.app is app for name in monitor.in_doubt(host)})


def undecided(host: str, states: Mapping[str, Health], deciding: Collection[str] = ()) -> list[str]:
    """The other hosts that ``host``'s failover waits for: suspect ones, which may be failing
    with it, and down ones the storm brake has not counted yet (``deciding``). Hosts failing
    together must be counted together by the brake; a host that failed alone (every other
    one up, or down and counted) has nothing to wait for."""
    return sorted(
        name for name, state in states.items() if name != host and (state is Health.SUSPECT or name in deciding)
    )


def exempt(state: HostState | None, journal: Journal) -> HostMode | None:
    """The mode that keeps a host from automatic failover (fenced, or in maintenance), if
    any. Maintenance that a drain set (the actor ``job:N`` is only ever a drain's) keeps a
    host from failover only once that drain succeeded: a host that died while its drain
    ran, or after it ended partial, still has guests the drain did not move, and they are
    restarted as any dead host's are. (A failed drain gives the host back, enabled.)"""
    if state is None or state.state not in (HostMode.MAINTENANCE, HostMode.FENCED):
        return None
    if state.state == HostMode.MAINTENANCE and state.actor.startswith("job:") and state.actor[4:].isdigit():
        drain = journal.job(int(state.actor[4:]))
        if drain is not None and drain.state != JobState.SUCCEEDED:
            return None
    return HostMode(state.state)


def _origin(source: object) -> str:
    kind = type(source)
    return f"{kind.__module__}.{kind.__qualname__}"
