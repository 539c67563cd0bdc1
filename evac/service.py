"""``evac serve``: monitor, HTTP API and plugin services (the Slack bot) in one process.

On start it resumes the jobs a previous process left unfinished. On stop (SIGTERM) it
takes no new work, then lets in-flight calls finish (``shutdown.in_flight: finish``) or
aborts them (``abort``: migrations roll back to their source), within
``shutdown.grace``; interrupted jobs stay ``running`` in the journal for the next start.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pluggy

from .app import App
from .config import ServiceConfig
from .errors import EvacError
from .httpapi import HttpApi
from .metrics import Metrics
from .monitor import Monitor, MonitorSettings, failover_params
from .plugins import plugin_manager
from .runbook import bind_params, load_runbook
from .stormbrake import StormBrake

log = logging.getLogger("evac.service")


class Service:
    def __init__(self, config: ServiceConfig, pm: pluggy.PluginManager | None = None) -> None:
        self.config = config
        self.app = App(inventory_path=config.inventory, journal_path=config.journal, pm=pm or plugin_manager())
        self.app.inventory  # noqa: B018 - a bad inventory stops the start, not the first alert
        self.metrics = Metrics()
        self.metrics.watch_journal(self.app.journal)
        self.app.pm.register(self.metrics, name="evac.metrics")
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
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.started_at = time.time()

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self.resume()
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
        abort = self.config.shutdown_in_flight == "abort"
        self.app.engine.shutdown(abort_in_flight=abort)
        deadline = time.monotonic() + self.config.shutdown_grace
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        if self.app.engine.running_jobs() and not abort:
            log.warning("grace period over: aborting in-flight work")
            self.app.engine.shutdown(abort_in_flight=True)
            for thread in list(self._threads):
                thread.join(30)
        for extra in self.extras:
            extra.stop()
        self.http.stop()
        log.info("evac serve: stopped; unfinished jobs: %s", [j.id for j in self.app.journal.unfinished_jobs()])

    def resume(self) -> list[int]:
        resumed = []
        for job in self.app.journal.unfinished_jobs():
            if job.dry_run:
                self.app.journal.finish_job(job.id, "cancelled", "dry run left unfinished")
                continue
            if self.app.journal.claim(job.id):
                self._spawn(job.id, load_runbook(job.source))
                resumed.append(job.id)
        if resumed:
            log.info("resumed jobs %s", resumed)
        return resumed

    # ---------------------------------------------------------------- work
    def start_job(self, runbook: str, given: dict[str, Any], target: str, actor: str) -> int:
        book = self.app.runbook(runbook)
        params = bind_params(book, {**self._defaults(book.name), **given}, self.app.host_names())
        job = self.app.engine.submit(book, params, target)
        self.app.journal.audit(actor, "run", target, {"job": job, "runbook": book.name})
        self._spawn(job, book)
        return job

    def _defaults(self, runbook: str) -> dict[str, Any]:
        return dict(self.config.drain_params) if runbook == "maintenance" else {}

    def _spawn(self, job: int, book: Any) -> None:
        def run() -> None:
            try:
                self.app.engine.run(job, book)
            except EvacError:
                log.exception("job %s", job)

        thread = threading.Thread(target=run, daemon=True, name=f"job-{job}")
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def fail_over(self, host: str, reason: str) -> None:
        try:
            book = self.app.runbook("host-failure")
            self.start_job("host-failure", failover_params(book, host, reason), host, "monitor")
        except EvacError as exc:
            log.info("failover of %s not started: %s", host, exc)

    def host_named(self, name: str) -> str | None:
        """An inventory host by name or address (alerts often carry the address)."""
        for spec in self.app.inventory.hosts:
            if name in (spec.name, spec.address):
                return spec.name
        return None

    def health(self) -> dict[str, Any]:
        hosts = {h: m.state for h, m in self.monitor.health.items()} if self.monitor else {}
        return {
            "ok": True,
            "uptime": round(time.time() - self.started_at, 1),
            "jobs_running": self.app.engine.running_jobs(),
            "jobs_orphaned": [job.id for job in self.app.journal.unfinished_jobs() if job.orphaned],
            "hosts": hosts,
            "storm_brake": bool(self.monitor and self.monitor.brake.engaged),
        }
