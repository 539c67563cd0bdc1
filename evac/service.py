"""``evac serve``: monitor, snapshots, HTTP API and plugin services (the Slack bot) in one process.

On start it resumes the jobs a previous process left unfinished. On stop (SIGTERM) it
takes no new work, then lets in-flight calls finish (``shutdown.in_flight: finish``) or
aborts them (``abort``: migrations roll back to their source), within
``shutdown.grace``; interrupted jobs stay ``running`` in the journal for the next start.

Whether or not the monitor acts, the snapshotter records what runs where, so a failover
started by an alert knows the dead host's guests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from .app import App
from .errors import ConfigError, JournalError
from .evidence import MonitorSettings
from .jobs import Actor, Channel
from .metrics import Metrics
from .monitor import Monitor
from .retention import prune
from .snapshots import Snapshotter
from .stormbrake import StormBrake
from .web import ASGIApp, WebServer, WebSettings, build_app
from .webmetrics import RequestMetrics

log = logging.getLogger("evac.service")
SERVICE = Actor(Channel.SERVICE)


class Service:
    def __init__(self, app: App) -> None:
        self.app = app
        self.config = config = app.settings
        self.app.inventory  # noqa: B018 - a bad inventory stops the start, not the first alert
        self.app.jobs.check()
        self.metrics = Metrics()
        self.metrics.watch_journal(self.app.journal)
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
            self.monitor = Monitor(self.app, on_down, settings, StormBrake(m.max_down, m.max_fraction, m.window))
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
        self.resume()
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
        log.info("evac serve: stopped; unfinished jobs: %s", [j.id for j in self.app.journal.unfinished_jobs()])

    def resume(self) -> list[int]:
        claimed = self.app.jobs.resumable(SERVICE)
        for started in claimed:
            self.app.jobs.spawn(started)
        resumed = [started.job for started in claimed]
        if resumed:
            log.info("resumed jobs %s", resumed)
        return resumed

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
    def fail_over(self, host: str, reason: str) -> None:
        self.app.jobs.host_down(host, reason, background=True)

    def health(self) -> dict[str, Any]:
        hosts = {h: m.state for h, m in self.monitor.health.items()} if self.monitor else {}
        return {
            "ok": True,
            "uptime": round(time.time() - self.started_at, 1),
            "jobs_running": self.app.engine.running_jobs(),
            "jobs_orphaned": [job.id for job in self.app.journal.unfinished_jobs() if job.orphaned],
            "hosts": hosts,
            "storm_brake": bool(self.monitor and self.monitor.brake.engaged),
            "snapshots": self.snapshots.ages(),
        }
