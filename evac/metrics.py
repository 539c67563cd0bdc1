"""Prometheus metrics from the event stream: an ``evac_event`` observer with its own registry."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .coordination import Coordination
from .errors import JournalError
from .events import Event
from .hooks import hookimpl
from .journal import Journal
from .states import EventKind, Health, ItemState

# The health each host event reports: one gauge per (host, health), 1 for the current one.
HOST_HEALTH = {EventKind.HOST_UP: Health.UP, EventKind.HOST_SUSPECT: Health.SUSPECT, EventKind.HOST_DOWN: Health.DOWN}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs = Counter("evac_jobs", "Jobs finished, by runbook and final state", ["runbook", "state"], registry=r)
        self.running = Gauge("evac_jobs_running", "Jobs running now", registry=r)
        self.migrations = Counter("evac_migrations", "Live migrations, by result", ["result"], registry=r)
        self.duration = Histogram(
            "evac_migration_seconds",
            "Live migration wall time",
            registry=r,
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900),
        )
        self.downtime = Histogram(
            "evac_migration_downtime_seconds",
            "Guest pause at switch-over",
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
        )
        self.migrated = Counter("evac_migration_bytes", "Bytes live migrations sent (memory and disks)", registry=r)
        self.hosts = Gauge("evac_host_state", "1 for the state each host is in", ["host", "state"], registry=r)
        self.fences = Counter("evac_fence_attempts", "Fence steps, by result", ["result"], registry=r)
        self.webhooks = Counter(
            "evac_webhooks", "Webhook requests, by hook and outcome", ["hook", "outcome"], registry=r
        )
        # HTTP: labelled by route template (never the raw path or query), method and status,
        # so no request can add a series of its own.
        self.http_requests = Counter(
            "evac_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_refused = Counter(
            "evac_http_refused",
            "HTTP requests refused (4xx, 503), by route template and status",
            ["route", "status"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "evac_http_request_seconds",
            "Time from a request's headers to the end of its answer, by route template",
            ["route"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )
        self._actions: dict[tuple[int, str], str] = {}
        self._runbooks: dict[int, str] = {}
        self._lock = threading.Lock()

    def watch_journal(self, journal: Journal) -> None:
        """Jobs whose process died stay 'running' in the journal: count them at each scrape."""
        orphaned = Gauge("evac_jobs_orphaned", "Running jobs whose evac process is gone", registry=self.registry)

        def count() -> float:
            try:
                return sum(1 for job in journal.unfinished_jobs() if job.orphaned)
            except JournalError:
                return math.nan  # unknown while etcd is unavailable (evac_cluster_available says so)

        orphaned.set_function(count)

    def watch_coordination(self, coordination: Coordination) -> None:
        """With replicas on etcd: whether this one leads, and whether etcd answers."""
        leads = Gauge(
            "evac_cluster_leader",
            "1 while this evac decides failovers (one controller: always)",
            registry=self.registry,
        )
        leads.set_function(lambda: float(coordination.leads()))
        available = Gauge(
            "evac_cluster_available", "0 while etcd has no quorum or does not answer", registry=self.registry
        )
        available.set_function(lambda: float(coordination.status().get("etcd", "ok") == "ok"))

    def watch_ha(self, journal: Journal) -> None:
        """Whether HA is armed, read from the journal at each scrape: an arm or a disarm from
        any process (the CLI, Slack, another replica) shows at once."""
        armed = Gauge(
            "evac_ha_armed", "1 while HA is armed, 0 while disarmed (`evac ha disarm`)", registry=self.registry
        )
        armed.set_function(lambda: _read(lambda: journal.disarmed() is None))

    def watch_brake(self, journal: Journal) -> None:
        """Whether the storm brake holds, read from the journal at each scrape, as HA's state."""
        brake = Gauge(
            "evac_storm_brake", "1 while the storm brake holds automatic failover back", registry=self.registry
        )
        brake.set_function(lambda: _read(lambda: journal.brake() is not None))

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def count_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request; ``route`` is a route template (``/hooks/evacuate``), never a raw path."""
        self.http_requests.labels(route, method, str(status)).inc()
        self.http_seconds.labels(route).observe(seconds)
        if 400 <= status < 500 or status == 503:
            self.count_refusal(route, status)

    def count_refusal(self, route: str, status: int) -> None:
        """A refused request, counted rather than audited one row each (a flood must not
        grow the journal). Every HTTP answer of 4xx or 503 is counted here already."""
        self.http_refused.labels(route, str(status)).inc()

    @hookimpl
    def evac_event(self, event: Event) -> None:
        with self._lock:
            self._observe(event)

    def _observe(self, event: Event) -> None:
        kind = event.kind
        if kind in (EventKind.JOB_STARTED, EventKind.JOB_RESUMED) and not event.data.get("dry_run"):
            self._runbooks[event.job_id] = str(event.data.get("runbook"))
            self.running.inc()
        elif kind == EventKind.JOB_FINISHED and event.job_id in self._runbooks:
            self.jobs.labels(self._runbooks.pop(event.job_id), str(event.data.get("state"))).inc()
            self.running.dec()
        elif kind == EventKind.STEP_STARTED:
            self._actions[(event.job_id, event.step)] = str(event.data.get("action"))
        elif kind == EventKind.ITEM_FINISHED and self._actions.get((event.job_id, event.step)) == "vm.live_migrate":
            ok = event.data.get("state") == ItemState.SUCCEEDED
            self.migrations.labels(ItemState.SUCCEEDED if ok else ItemState.FAILED).inc()
            out = event.data.get("outputs") or {}
            if ok and out.get("seconds"):
                self.duration.observe(float(out["seconds"]))
            if ok and out.get("downtime_ms") is not None:
                self.downtime.observe(float(out["downtime_ms"]) / 1000)
            if ok and out.get("bytes"):
                self.migrated.inc(float(out["bytes"]))
        elif kind == EventKind.STEP_FINISHED and self._actions.get((event.job_id, event.step)) == "host.fence":
            self.fences.labels(str(event.data.get("state"))).inc()
        elif kind in HOST_HEALTH:
            health = HOST_HEALTH[EventKind(kind)]
            for state in Health:
                self.hosts.labels(event.item, state).set(1 if state == health else 0)


def _read(holds: Callable[[], bool]) -> float:
    """1 or 0 from the journal; NaN while it cannot say (etcd unavailable)."""
    try:
        return 1.0 if holds() else 0.0
    except JournalError:
        return math.nan
