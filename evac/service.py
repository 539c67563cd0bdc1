"""``evac serve``: monitor, snapshots, HTTP API and plugin services (the Slack bot) in one process.

On start it resumes the jobs a previous process left unfinished. On stop (SIGTERM) it
takes no new work, then lets in-flight calls finish (``shutdown.in_flight: finish``) or
aborts them (``abort``: migrations roll back to their source), within
``shutdown.grace``; interrupted jobs stay ``running`` in the journal for the next start.

With the journal on etcd (docs/ha.md) several replicas run this service: every one
serves the API, watches the fleet and publishes what it sees; the leader alone fails
hosts over and resumes the jobs of a replica that died, as soon as its lease is gone.
A replica that stops resigns the leadership and lets its interrupted jobs go at once.

Whether or not the monitor acts, the snapshotter records what runs where, so a failover
started by an alert knows the dead host's guests.

While HA is disarmed (``evac ha disarm``) a guest whose QEMU died is an alert, once per
report, and its agent's report is kept: once HA is armed again it is restarted as any.
``/healthz`` and the ``evac_ha_armed`` gauge say whether HA is armed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from .agents import AgentView
from .app import App
from .errors import ConfigError, EvacError, JournalError, LockedError
from .etcdclient import delete_op, mod_revision_is
from .events import Event
from .evidence import MonitorSettings
from .jobs import Actor, Channel
from .journal import Disarmed
from .metrics import Metrics
from .monitor import Monitor
from .plugins import notify
from .retention import prune
from .snapshots import Snapshotter
from .stormbrake import StormBrake
from .web import ASGIApp, WebServer, WebSettings, build_app
from .webmetrics import RequestMetrics

log = logging.getLogger("evac.service")
SERVICE = Actor(Channel.SERVICE)
HELD_AGAIN = 86400.0  # seconds: a guest left down while HA is disarmed is alerted again daily


class Service:
    def __init__(self, app: App) -> None:
        self.app = app
        self.config = config = app.settings
        self.app.inventory  # noqa: B018 - a bad inventory stops the start, not the first alert
        self.app.jobs.check()
        self.metrics = Metrics()
        self.metrics.watch_journal(self.app.journal)
        self.metrics.watch_coordination(app.coordination)
        self.metrics.watch_ha(self.app.journal)
        self.metrics.watch_brake(self.app.journal)
        self.app.pm.register(self.metrics, name="evac.metrics")
        self.snapshots = Snapshotter(app, every=config.snapshots.every)
        self.accepting = True  # False once stopping: the webhooks answer 503 to new work
        self.monitor: Monitor | None = None
        if config.monitor.enabled:
            m = config.monitor
            settings = MonitorSettings(
                interval=m.interval, probe_timeout=m.probe_timeout, confirm_misses=m.confirm_misses
            )
            on_down = self.fail_over if m.failover else (lambda host, reason: None)
            self.monitor = Monitor(
                self.app,
                on_down,
                settings,
                StormBrake(m.max_down, m.max_fraction, m.window),
                coordination=app.coordination,
            )
        self.extras: list[Any] = [
            s for found in self.app.pm.hook.evac_services(app=self.app, config=config) for s in found
        ]
        self.web = build_app(self, self.mounts())
        limits = WebSettings(body_limits=(("/hooks/", config.webhooks.max_body_bytes),))
        observe = RequestMetrics(self.web.router.routes, self.metrics)
        # Binds now: a port in use stops `evac serve` before anything starts.
        self.http = WebServer(self.web, config.address, config.port, limits, observe)
        self.started_at = time.time()
        self._stopping = threading.Event()
        self._pruner = threading.Thread(target=self._prune, daemon=True, name="journal-retention")
        self._leader = threading.Thread(target=self._lead, daemon=True, name="orphaned-jobs")

    def mounts(self) -> Mapping[str, ASGIApp]:
        """The paths plugin services mount (``ServicePart.mounts()``); one owner per path."""
        found: dict[str, ASGIApp] = {}
        for extra in self.extras:
            for path, mounted in (extra.mounts() if hasattr(extra, "mounts") else {}).items():
                if path in found:
                    raise ConfigError(f"two plugin services mount {path}: {type(extra).__name__} and another")
                found[path] = mounted
        return found

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self.app.coordination.start(self._announce)
        if self.app.agents is not None:  # leases followed from now: a host's lease seen gone is timed from here
            log.info("evac serve: following the agents of %s hosts", len(self.app.inventory.hosts))
        if self.config.cluster is None:
            self.resume()  # one controller: what it left unfinished is its own to finish
        else:
            self._leader.start()  # replicas: the leader resumes, whenever an owner is gone
        self.snapshots.start()
        for extra in self.extras:
            extra.start()
        if self.monitor:
            self.monitor.start()
        self._pruner.start()
        self.http.start()
        log.info("evac serve: listening on %s:%s", self.config.address, self.http.port)

    def stop(self) -> None:
        """New work is refused at once; /healthz answers until running jobs had their grace;
        the HTTP server stops before the plugin services, so no request reaches a stopped bot."""
        self.accepting = False
        self._stopping.set()
        if self.monitor:
            self.monitor.stop()
        self.app.coordination.stop()
        self.snapshots.stop()
        abort = self.config.shutdown_in_flight == "abort"
        self.app.engine.shutdown(abort_in_flight=abort)
        self.app.jobs.join(self.config.shutdown_grace)
        if self.app.engine.running_jobs() and not abort:
            log.warning("grace period over: aborting in-flight work")
            self.app.engine.shutdown(abort_in_flight=True)
            self.app.jobs.join(30)
        self.http.stop()
        for extra in self.extras:
            extra.stop()
        try:
            unfinished = str([j.id for j in self.app.journal.unfinished_jobs()])
        except JournalError as exc:
            unfinished = f"unknown ({exc})"
        self.app.close()
        log.info("evac serve: stopped; unfinished jobs: %s", unfinished)

    def resume(self) -> list[int]:
        claimed = self.app.jobs.resumable(SERVICE)
        for started in claimed:
            self.app.jobs.spawn(started)
        resumed = [started.job for started in claimed]
        if resumed:
            log.info("resumed jobs %s", resumed)
        return resumed

    def _lead(self) -> None:
        """With replicas, the leader resumes a job as soon as its owner's lease is gone."""
        every = self.config.monitor.interval
        said = ""
        while True:
            try:
                if self.app.coordination.leads() and any(j.orphaned for j in self.app.journal.unfinished_jobs()):
                    self.resume()
                if self.app.coordination.leads() and self.app.agents is not None:
                    self.restart_guests(self.app.agents)
                said = ""
            except EvacError as exc:  # etcd away, or another replica claimed first: look again
                if str(exc) != said:
                    log.warning("orphaned jobs not resumed yet: %s", exc)
                    said = str(exc)
            if self._stopping.wait(every):
                return

    def restart_guests(self, agents: AgentView) -> None:
        """Guests whose QEMU died, as their agents reported: one recovery job each (in
        place, else elsewhere: ``Jobs.guest_failed``); the report is deleted once handled.
        While HA is disarmed each report is alerted once and kept for when it is armed."""
        held = self.app.journal.disarmed()
        for down in agents.guests_down():
            if held is not None and not self.app.journal.first_seen(f"ha-held:{down.key}@{down.revision}", HELD_AGAIN):
                continue  # alerted already; restarted once HA is armed
            try:
                started = self.app.jobs.guest_failed(down.host, down.guest, down.reason)
                if started is not None:
                    self.app.jobs.spawn(started)
            except LockedError as exc:
                log.info("guest %s on %s: %s", down.guest, down.host, exc)
            except JournalError as exc:  # kept: the next round tries again
                log.warning("guest %s on %s died (%s), not handled yet: %s", down.guest, down.host, down.reason, exc)
                continue
            except EvacError as exc:
                log.error("guest %s on %s died (%s) and was not restarted: %s", down.guest, down.host, down.reason, exc)
            if held is None and self.app.journal.disarmed() is None:  # read again: disarmed meanwhile keeps it
                agents.cluster.txn([mod_revision_is(down.key, down.revision)], [delete_op(down.key)])

    def _announce(self, event: Event) -> None:
        """Leadership and quorum changes: to the journal when it answers, to every observer."""
        try:
            self.app.journal.add_event(event)
        except JournalError:
            pass  # etcd is what failed: the log and the observers still hear it
        notify(self.app.pm, event)

    def _prune(self) -> None:
        """Apply the journal's retention at start, then every ``retention.every`` seconds."""
        while True:
            try:
                events, audit = prune(self.app.journal, self.config.retention)
                if events or audit:
                    log.info("journal pruned: %s events, %s audit rows", events, audit)
            except JournalError as exc:
                log.warning("journal retention: %s", exc)
            if self._stopping.wait(self.config.retention.every):
                return

    # ---------------------------------------------------------------- work
    def fail_over(self, host: str, reason: str) -> int | None:
        return self.app.jobs.host_down(host, reason, background=True)

    def health(self) -> dict[str, Any]:
        hosts = {h: m.state for h, m in self.monitor.health.items()} if self.monitor else {}
        cluster = self.app.coordination.status()
        orphaned: list[int] | None = None  # unknown while etcd is unavailable: "cluster" says so
        snapshots: dict[str, float | None] | None = None
        ha: dict[str, Any] = {"armed": None, "reason": None, "by": None, "since": None}  # None: unknown
        if cluster.get("etcd") != "unavailable":  # answer at once, not after a timeout per endpoint
            try:
                ha = ha_health(self.app.journal.disarmed())
                orphaned = [job.id for job in self.app.journal.unfinished_jobs() if job.orphaned]
                snapshots = self.snapshots.ages()
            except JournalError:
                pass
        return {
            "ok": True,
            "uptime": round(time.time() - self.started_at, 1),
            "jobs_running": self.app.engine.running_jobs(),
            "jobs_orphaned": orphaned,
            "hosts": hosts,
            "storm_brake": bool(self.monitor and self.monitor.brake.engaged),
            "ha": ha,
            "cluster": cluster,
            "snapshots": snapshots,
        }


def ha_health(held: Disarmed | None) -> dict[str, Any]:
    """``/healthz``'s ``ha``: whether HA is armed, and who disarmed it, when and why."""
    if held is None:
        return {"armed": True, "reason": None, "by": None, "since": None}
    return {"armed": False, "reason": held.reason, "by": held.actor, "since": held.since}
