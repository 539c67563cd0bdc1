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
import time
from typing import Any

from .app import App
from .evidence import MonitorSettings
from .httpapi import HttpApi
from .jobs import Actor, Channel
from .metrics import Metrics
from .monitor import Monitor
from .snapshots import Snapshotter
from .stormbrake import StormBrake

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
        self.http = HttpApi(self, config.address, config.port, config.webhooks)
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
        for extra in self.extras:
            if hasattr(extra, "routes"):
                self.http.mount(extra.routes())
        self.started_at = time.time()

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self.resume()
        self.snapshots.start()
        for extra in self.extras:
            extra.start()
        if self.monitor:
            self.monitor.start()
        self.http.start()
        log.info("evac serve: listening on %s:%s", self.config.address, self.http.port)

    def stop(self) -> None:
        self.http.accepting = False
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
        for extra in self.extras:
            extra.stop()
        self.http.stop()
        log.info("evac serve: stopped; unfinished jobs: %s", [j.id for j in self.app.journal.unfinished_jobs()])

    def resume(self) -> list[int]:
        claimed = self.app.jobs.resumable(SERVICE)
        for started in claimed:
            self.app.jobs.spawn(started)
        resumed = [started.job for started in claimed]
        if resumed:
            log.info("resumed jobs %s", resumed)
        return resumed

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
