"""The monitor: watches every host, snapshots its guests, and reports hosts that died.

One thread per host keeps a libvirt connection with keepalive and a close callback
(which wakes the thread at once: no fixed sleeps stand between a failure and its
detection), probes the host's ports, and asks the BMC where the first fence method can
tell. :class:`evac.health.HostHealth` turns those signals into up / suspect / down.

While a host is up its running guests' definitions are saved to the journal, so they
can be restarted after it dies. A host in maintenance is watched but never failed
over; a fenced host that comes back has its stale definitions of guests now running
elsewhere removed, and stays out of service until an operator enables it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .app import App
from .errors import EvacError, LockedError
from .events import Event
from .fencing import agent_for
from .fleet import answers, reachable
from .health import HostHealth
from .hypervisor import Hypervisor
from .inventory import HostSpec
from .runbook import Runbook, bind_params
from .stormbrake import StormBrake

log = logging.getLogger("evac.monitor")


@dataclass(frozen=True)
class MonitorSettings:
    interval: float = 0.5  # between probes
    suspect_interval: float = 0.1  # between probes while a host is suspect: confirm fast
    probe_timeout: float = 1.0
    keepalive: tuple[int, int] = (1, 3)  # libvirt keepalive: interval s, missed replies
    confirm_misses: int = 2
    snapshot_every: float = 5.0
    power_every: float = 2.0  # BMC polls (0: never)
    settle: float = 0.5  # wait before failing over, so hosts failing together engage the storm brake
    settle_max: float = 6.0  # ...and up to this long while other hosts are still only suspect


class Monitor:
    def __init__(
        self,
        app: App,
        on_down: Callable[[str, str], None],
        settings: MonitorSettings = MonitorSettings(),
        brake: StormBrake | None = None,
    ) -> None:
        self.app = app
        self.on_down = on_down
        self.settings = settings
        self.brake = brake or StormBrake()
        held = app.journal.brake()
        if held:  # an engaged brake holds across restarts until an operator releases it
            self.brake.engaged, self.brake.reason = True, held.reason
        self.health = {h.name: HostHealth(h.name, settings.confirm_misses) for h in app.inventory.hosts}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._ready_count = 0
        self.started = threading.Event()

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        for spec in self.app.inventory.hosts:
            thread = threading.Thread(target=self._watch, args=(spec,), daemon=True, name=f"monitor-{spec.name}")
            thread.start()
            self._threads.append(thread)
        thread = threading.Thread(target=self._watch_brake, daemon=True, name="monitor-brake")
        thread.start()
        self._threads.append(thread)
        if self.brake.engaged:
            self._emit("monitor.storm_brake", "", f"still engaged: {self.brake.reason}")

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def state(self, host: str) -> str:
        return self.health[host].state

    def _watch_brake(self) -> None:
        """Follow a release made from another process (``evac brake release``, Slack)."""
        while not self._stop.wait(self.settings.interval):
            with self._lock:
                released = self.brake.engaged and self.app.journal.brake() is None
                if released:
                    self.brake.release()
            if released:
                held_back = self._held_back()
                self._emit(
                    "monitor.brake_released",
                    "",
                    "storm brake released by an operator"
                    + (f"; failing over {', '.join(held_back)}" if held_back else ""),
                )
                for host in held_back:
                    self._spawn_fail_over(host, f"{self.health[host].reason} (after the storm brake was released)")

    def _held_back(self) -> list[str]:
        """Hosts down now that the brake kept from failover: releasing it is the operator's go."""
        states = self.app.journal.host_states()
        with self._lock:
            return [
                name
                for name, health in self.health.items()
                if health.state == "down" and name not in states  # not in maintenance, not fenced yet
            ]

    # ---------------------------------------------------------------- one host
    def _watch(self, spec: HostSpec) -> None:
        wake = threading.Event()
        hv: Hypervisor | None = None
        last_snapshot = last_power = 0.0
        first = True
        while not self._stop.is_set():
            now = time.monotonic()
            if hv is None and reachable(spec.uri, self.settings.probe_timeout):
                hv = self._connect(spec, wake)
                if hv is not None:
                    self._observe(spec, "libvirt", True, now)
                    self._on_reconnect(spec, hv)
                    last_snapshot = 0.0
            elif hv is not None and not hv.alive():
                hv.close()
                hv = None
            if hv is None:
                self._observe(spec, "libvirt", False, now, "no connection")
            self._observe(spec, "probe", self._probe(spec), time.monotonic())
            if self.settings.power_every and now - last_power >= self.settings.power_every:
                last_power = now
                power = self._power(spec)
                if power in ("on", "off"):
                    self._observe(spec, "power", power == "on", time.monotonic())
            if hv is not None and now - last_snapshot >= self.settings.snapshot_every:
                last_snapshot = now
                self._snapshot(spec, hv)
            if first:
                first = False
                self._ready()
            suspect = self.health[spec.name].state == "suspect"
            wake.wait(self.settings.suspect_interval if suspect else self.settings.interval)
            wake.clear()
        if hv is not None:
            hv.close()

    def _ready(self) -> None:
        with self._lock:
            self._ready_count += 1
            if self._ready_count == len(self.health):
                self.started.set()

    def _connect(self, spec: HostSpec, wake: threading.Event) -> Hypervisor | None:
        try:
            hv = Hypervisor.connect(spec.name, spec.uri, keepalive=self.settings.keepalive)
        except EvacError:
            return None

        def closed(reason: str) -> None:
            self._observe(spec, "libvirt", False, time.monotonic(), reason)
            wake.set()

        hv.on_close(closed)
        return hv

    def _probe(self, spec: HostSpec) -> bool:
        return answers(spec, self.settings.probe_timeout)

    def _power(self, spec: HostSpec) -> str:
        if not spec.fence:
            return "unknown"
        try:
            return agent_for(self.app.pm, spec, spec.fence[0]).power_state()
        except Exception:  # a BMC that does not answer is no signal either way
            return "unknown"

    def _snapshot(self, spec: HostSpec, hv: Hypervisor) -> None:
        try:
            definitions = {
                g.name: hv.domain_xml(g.name, migratable=True)
                for g in hv.guests(self.app.inventory.is_shared)
                if g.state in ("running", "paused")
            }
        except EvacError:
            return
        self.app.journal.save_definitions(spec.name, definitions)

    def _on_reconnect(self, spec: HostSpec, hv: Hypervisor) -> None:
        state = self.app.journal.host_states().get(spec.name)
        if not state or state.state != "fenced":
            return
        from .fleet import snapshot

        elsewhere = {
            g.name
            for h in snapshot(self.app.inventory)
            if h.name != spec.name and h.state == "up"
            for g in h.guests
            if g.state in ("running", "paused")
        }
        for guest in hv.guests(self.app.inventory.is_shared):
            if guest.name in elsewhere:
                try:
                    if guest.state in ("running", "paused"):
                        hv.destroy(guest.name)  # cannot happen after a real fence; never leave two
                    hv.undefine(guest.name)
                    self._emit("host.cleaned", spec.name, f"{spec.name}: removed stale definition of {guest.name}")
                except EvacError as exc:
                    log.warning("cleaning %s on %s: %s", guest.name, spec.name, exc)

    # ---------------------------------------------------------------- transitions
    def _observe(self, spec: HostSpec, signal: str, ok: bool, now: float, detail: str = "") -> None:
        with self._lock:
            health = self.health[spec.name]
            changed = health.observe(signal, ok, now, detail)
            if changed is None:
                return
            self._changed.notify_all()
            reason = health.reason
            self._emit(f"host.{changed}", spec.name, reason)
            if changed != "down":
                return
            state = self.app.journal.host_states().get(spec.name)
            if state and state.state in ("maintenance", "fenced"):
                self._emit("host.ignored", spec.name, f"{spec.name} is in {state.state}: no failover")
                return
            if not self.brake.host_down(spec.name, now, len(self.health)):
                self.app.journal.engage_brake(self.brake.reason)
                self._emit("monitor.storm_brake", spec.name, self.brake.reason)
                return
        self._spawn_fail_over(spec.name, reason)

    def _spawn_fail_over(self, host: str, reason: str) -> None:
        threading.Thread(target=self._fail_over, args=(host, reason), daemon=True, name=f"failover-{host}").start()

    def _fail_over(self, host: str, reason: str) -> None:
        """Fail over after a short settle, and not while other hosts are undecided: hosts
        failing together must be counted together by the storm brake."""
        if self._stop.wait(self.settings.settle):
            return
        deadline = time.monotonic() + self.settings.settle_max
        with self._changed:
            while any(h.state == "suspect" for name, h in self.health.items() if name != host):
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    break
                self._changed.wait(left)
            if self.brake.engaged:
                self._emit("monitor.storm_brake", host, f"{host} not failed over: {self.brake.reason}")
                return
        self.on_down(host, reason)

    def _emit(self, kind: str, host: str, message: str) -> None:
        event = Event(kind, 0, item=host, message=message, data={"host": host})
        try:
            self.app.journal.add_event(event)
            self.app.pm.hook.evac_event(event=event)
        except Exception:
            log.exception("observer failed on %s", kind)


def failover_runbook(app: App, runbook: str = "host-failure") -> Callable[[str, str], None]:
    """What the monitor does with a down host: run the host-failure runbook once for it."""

    def on_down(host: str, reason: str) -> None:
        book = app.runbook(runbook)
        params = bind_params(book, failover_params(book, host, reason), app.host_names())
        try:
            job = app.engine.submit(book, params, host)
        except LockedError as exc:
            log.info("failover of %s not started: %s", host, exc)
            return
        app.journal.audit("monitor", "failover", host, {"job": job, "reason": reason})
        app.engine.run(job, book)

    return on_down


def failover_params(book: Runbook, host: str, reason: str) -> dict[str, Any]:
    """What the monitor tells a failover runbook. Its own verdict rests on two signals
    seconds old, so one last reachability check before the fence is enough."""
    given: dict[str, Any] = {"host": host, "reason": reason}
    if any(p.name == "checks" for p in book.params):
        given["checks"] = 1
    return given
