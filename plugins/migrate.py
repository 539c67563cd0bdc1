"""``vm.live_migrate``: one guest, live, peer-to-peer, watched until it lands.

The call is idempotent: it first looks where the guest really is. It holds a slot on the
source (outgoing) and the target (incoming), kept in the journal, so that migrations from
every evac process stay within per-host limits; samples the job's statistics into progress
events; lets the convergence policy escalate; aborts on cancel (the guest stays on its
source). A failed target is remembered in the journal with its cause, per job and guest,
so a retry of the step (in this process or in the one that resumes the job) picks another
host and the report says why. It reaches the hosts through the job's connections (one
per host for the whole job, ``evac.connections``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import Any

from evac import Action, StepContext, hookimpl
from evac.appview import AppView
from evac.connections import current
from evac.convergence import ConvergencePolicy, Escalation, MeasuringPolicy, MigrationTuning, Sample
from evac.errors import Cancelled, ConfigError, EvacError, MigrationError, NotFound
from evac.fleet import views
from evac.hypervisor import Hypervisor
from evac.inventory import HostSpec
from evac.journal import Journal
from evac.model import Guest
from evac.placement import place
from evac.reachability import OutageWatch
from evac.verification import VerifySettings

from .drain import app_of, policy

INPUTS = (
    "guest",
    "source",
    "target",
    "max_out",
    "max_in",
    "bandwidth_mib",
    "max_downtime_ms",
    "downtime_limit_ms",
    "compression",
    "xbzrle_cache_mib",
    "mt_threads",
    "mt_level",
    "allow_postcopy",
    "parallel_connections",
    "tls",
    "memory_mib",
    "vcpus",
    "reason",
    "priority",
    "local_disks",
    "strategy",
    "disks",
)
SAMPLE_EVERY = 0.25
OUTAGE_EVERY = 0.02  # s between probes of a guest's network while it moves


class HostSlots:
    """Limits on concurrent migrations out of and into each host, kept in the journal so
    that every evac process (the service, an operator's CLI) shares them."""

    def __init__(self, journal: Journal, holder: str) -> None:
        self.journal = journal
        self.holder = holder
        self.taken: list[str] = []

    def acquire(self, ctx: StepContext, direction: str, host: str, limit: int) -> None:
        slot = f"{direction}:{host}"
        announced = False
        while not self.journal.take_slot(slot, limit, self.holder):
            if not announced:
                ctx.progress(f"waiting for a free {direction} slot on {host} (limit {limit})")
                announced = True
            ctx.abort.wait(0.1)
            ctx.check_abort()
        self.taken.append(slot)

    def release(self) -> None:
        for slot in reversed(self.taken):
            self.journal.release_slot(slot, self.holder)
        self.taken.clear()


class FailedTargets:
    """The targets one guest of one job failed to reach, with why, kept in the journal so a
    resumed job (same id, another process) still avoids them and still reports why. They
    belong to the job: the journal forgets them when it finishes, however it ends."""

    def __init__(self, journal: Journal, job_id: int, guest: str) -> None:
        self.journal = journal
        self.job_id = job_id
        self.key = f"failed-targets:{job_id}:{guest}"

    def load(self) -> dict[str, str]:
        """Target -> why it failed; empty when nothing failed (or the guest has landed)."""
        raw = self.journal.recall(self.key)
        return dict(json.loads(raw)) if raw else {}

    def add(self, target: str, why: str) -> None:
        self.journal.remember(self.key, json.dumps({**self.load(), target: why}, sort_keys=True), job=self.job_id)

    def clear(self) -> None:
        """The guest landed: nothing is left to avoid."""
        self.journal.forget(self.key)


def merge_tuning(answers: list[MigrationTuning | None]) -> MigrationTuning:
    params: dict[str, object] = {}
    flags: list[str] = []
    notes: list[str] = []
    for answer in answers:
        if answer is None:
            continue
        for key, value in answer.params.items():
            if key in params and params[key] != value:
                raise ConfigError(f"migration parameter '{key}' set twice by plugins: {params[key]!r} and {value!r}")
            params[key] = value
        flags += [f for f in answer.flags if f not in flags]
        notes += answer.notes
    return MigrationTuning(params, tuple(flags), tuple(notes))


def sample(stats: Mapping[str, Any], started: float) -> Sample:
    page = int(stats.get("memory_page_size", 4096) or 4096)
    return Sample(
        elapsed=time.monotonic() - started,
        processed=int(stats.get("memory_processed", 0)),
        remaining=int(stats.get("memory_remaining", 0)),
        total=int(stats.get("memory_total", 0)),
        dirty_rate=float(stats.get("memory_dirty_rate", 0)) * page,
        bandwidth=float(stats.get("memory_bps", 0)),
        iteration=int(stats.get("memory_iteration", 0)),
    )


def locate(app: AppView, name: str, hosts: list[HostSpec]) -> dict[str, Guest]:
    found = {}
    for spec in hosts:
        try:
            with current().use(spec) as hv:
                if hv.has_guest(name):
                    found[spec.name] = hv.guest(name, app.inventory.is_shared)
        except EvacError:
            continue
    return found


def migrate(ctx: StepContext) -> Mapping[str, Any]:
    app = app_of(ctx)
    inv = app.inventory
    name = str(ctx.inputs["guest"])
    source = inv.host(str(ctx.inputs["source"]))
    failed_targets = FailedTargets(app.journal, ctx.job_id, name)
    failed = failed_targets.load()
    target = inv.host(str(ctx.inputs["target"]))
    if target.name in failed:
        target = retarget(ctx, app, name, source.name, failed)

    where = locate(app, name, [source, target])
    on_target = where.get(target.name)
    if on_target and on_target.state == "running":
        if source.name in where:  # a crash between the switch-over and the undefine
            with current().use(source) as hv:
                hv.undefine(name)
        failed_targets.clear()
        return {"guest": name, "source": source.name, "target": target.name, "already": True, "seconds": 0}
    guest = where.get(source.name)
    if guest is None:
        raise NotFound(f"{name}: not on {source.name} nor {target.name}")
    if guest.state != "running":
        raise MigrationError(f"{name} on {source.name} is {guest.state}, not running: nothing to live-migrate")

    options = {**ctx.inputs, "learned": app.journal.recall(f"convergence:{name}") or ""}
    tuning = merge_tuning(app.pm.hook.evac_migration_tuning(guest=guest, source=source, target=target, options=options))
    conv: ConvergencePolicy | None = app.pm.hook.evac_convergence_policy(guest=guest, options=options)
    flags = list(tuning.flags) + [f for f in (conv.start_flags(guest) if conv else ()) if f not in tuning.flags]
    slots = HostSlots(app.journal, f"{ctx.job_id}:{name}")
    watch: OutageWatch | None = None
    try:
        slots.acquire(ctx, "out", source.name, int(ctx.inputs.get("max_out", 2)))
        slots.acquire(ctx, "in", target.name, int(ctx.inputs.get("max_in", 2)))
        ctx.progress(f"{source.name} -> {target.name} ({', '.join(flags) or 'plain'})", flags=flags)
        watch = outage_watch(ctx, app, guest)
        result = run_migration(ctx, guest, source, target, tuning, flags, conv)
    except MigrationError as exc:
        failed_targets.add(target.name, str(exc))
        raise
    finally:
        outage = watch.stop() if watch else None
        slots.release()
    if outage is not None:
        result["outage"] = {
            "check": outage.check,
            "address": outage.address,
            "longest_gap_s": round(outage.longest_gap, 3),
            "lost": outage.lost,
        }
    failed_targets.clear()
    needed = "postcopy" if any(e.startswith("postcopy") for e in result["escalations"]) else "plain"
    app.journal.remember(f"convergence:{name}", needed)
    return {"guest": name, "source": source.name, "target": target.name, "notes": list(tuning.notes), **result}


def outage_watch(ctx: StepContext, app: AppView, guest: Guest) -> OutageWatch | None:
    """Probe the guest the way its verify check would, all through the move, when it has
    one: what its users saw goes into the report. None without a check or an address, or
    when the probe cannot run here (said in the progress, the move goes on)."""
    try:
        check = VerifySettings.of(app.settings.sections).network_check(guest)
    except ConfigError:
        return None  # vm.verify reports the guest's bad metadata
    if check is None or check.address is None:
        return None
    try:
        return OutageWatch(check.reach, check.address, OUTAGE_EVERY).start()
    except EvacError as exc:
        ctx.progress(f"{guest.name}: not watching its network during the move: {exc}")
        return None


def retarget(ctx: StepContext, app: AppView, name: str, source: str, failed: dict[str, str]) -> HostSpec:
    """A new target for a retry, excluding hosts this guest already failed to reach."""
    hosts = views(app)
    guest = next((g for v in hosts if v.name == source for g in v.guests if g.name == name), None)
    if guest is None:
        raise NotFound(f"{name}: no longer on {source}")
    moves, stuck = place([guest], source, hosts, policy(ctx.inputs), exclude=failed)
    if stuck:
        causes = "; ".join(f"{t} failed: {why.removeprefix(name + ': ')}" for t, why in sorted(failed.items()))
        raise MigrationError(f"{name}: no other target ({stuck[0].reason}); {causes}")
    ctx.progress(f"retrying on {moves[0].target} (failed: {', '.join(sorted(failed))})")
    return app.inventory.host(moves[0].target)


def run_migration(
    ctx: StepContext,
    guest: Guest,
    source: HostSpec,
    target: HostSpec,
    tuning: MigrationTuning,
    flags: list[str],
    conv: ConvergencePolicy | None,
) -> dict[str, Any]:
    name = guest.name
    errors: list[BaseException] = []
    done = threading.Event()
    with current().use(source) as hv:
        ctx.guard()
        measurer = conv if isinstance(conv, MeasuringPolicy) and conv.wants_dirty_rate(guest) else None
        measuring = hv.measure_dirty_rate(name) if measurer else None  # started before the job holds the guest

        def worker() -> None:
            try:
                hv.live_migrate(name, target.uri, dict(tuning.params), flags, keep_source=True)
            except BaseException as exc:
                errors.append(exc)
            finally:
                done.set()

        started = time.monotonic()
        threading.Thread(target=worker, daemon=True, name=f"migrate-{name}").start()
        samples: list[Sample] = []
        applied: list[Escalation] = []
        aborted = False
        initial_downtime = int(ctx.inputs.get("max_downtime_ms", 0))
        last_report = 0.0
        while not done.wait(SAMPLE_EVERY):
            if measurer and measuring and (rate := measuring.poll()) is not None:
                measurer.use_dirty_rate(rate)
                ctx.progress(f"{name}: {rate}")
                measuring = None
            stats = hv.job_stats(name)
            if not stats:
                continue
            if initial_downtime and not samples:
                hv.set_max_downtime(name, initial_downtime)
            samples.append(sample(stats, started))
            postcopy_on = any(e.kind == "postcopy" for e in applied)
            if ctx.abort.is_set() and not aborted and not postcopy_on:
                hv.abort_job(name)
                aborted = True
            if samples[-1].total and time.monotonic() - last_report >= 1.0:
                last_report = time.monotonic()
                s = samples[-1]
                pct = 100 * s.processed / s.total if s.total else 0
                ctx.progress(
                    f"{pct:.0f}% sent, pass {s.iteration}, dirty {s.dirty_rate / 2**20:.0f} MiB/s, "
                    f"link {s.bandwidth / 2**20:.0f} MiB/s",
                    **_numbers(s),
                )
            if conv and not aborted:
                step = conv.decide(samples, applied)
                if step is not None:
                    apply_escalation(ctx, hv, name, step)
                    applied.append(step)
                    if step.kind == "abort":
                        aborted = True
        seconds = time.monotonic() - started
        if errors:
            if aborted and ctx.abort.is_set():
                raise Cancelled(f"{name}: migration aborted; it keeps running on {source.name}")
            why = "; ".join(f"{e.kind}: {e.reason}" for e in applied)
            raise MigrationError(f"{name}: {errors[0]}" + (f" (after {why})" if why else ""))
        completed = hv.completed_stats(name)
        try:
            hv.undefine(name)
        except NotFound:
            pass
    return {
        "seconds": round(seconds, 3),
        "downtime_ms": completed.get("downtime"),
        "bytes": int(completed.get("memory_processed", 0)) + int(completed.get("disk_processed", 0)),
        "iterations": completed.get("memory_iteration"),
        "escalations": [f"{e.kind}{'=' + str(e.value) if e.value else ''}: {e.reason}" for e in applied],
        "flags": flags,
    }


def _numbers(s: Sample) -> dict[str, Any]:
    return {
        "processed": s.processed,
        "remaining": s.remaining,
        "total": s.total,
        "dirty_rate": s.dirty_rate,
        "bandwidth": s.bandwidth,
        "iteration": s.iteration,
    }


def apply_escalation(ctx: StepContext, hv: Hypervisor, name: str, step: Escalation) -> None:
    ctx.progress(
        f"escalation: {step.kind}{' ' + str(step.value) if step.value else ''}: {step.reason}",
        escalation=step.kind,
        value=step.value,
    )
    try:
        if step.kind == "max_downtime":
            hv.set_max_downtime(name, step.value)
        elif step.kind == "bandwidth":
            hv.set_max_speed(name, max(1, step.value // 2**20))
        elif step.kind == "postcopy":
            hv.start_postcopy(name)
        elif step.kind == "abort":
            hv.abort_job(name)
    except EvacError as exc:
        ctx.progress(f"escalation {step.kind} failed: {exc}")


@hookimpl
def evac_migration_tuning(
    guest: Guest, source: HostSpec, target: HostSpec, options: Mapping[str, Any]
) -> MigrationTuning | None:
    """Transport options every migration may take: bandwidth cap, parallel connections, TLS."""
    params: dict[str, object] = {}
    flags: list[str] = []
    notes = []
    if int(options.get("bandwidth_mib") or 0) > 0:
        params["bandwidth"] = int(options["bandwidth_mib"])
        notes.append(f"bandwidth {options['bandwidth_mib']} MiB/s")
    if int(options.get("parallel_connections") or 0) > 1:
        flags.append("PARALLEL")
        params["parallel.connections"] = int(options["parallel_connections"])
    if options.get("tls"):
        flags.append("TLS")
    return MigrationTuning(params, tuple(flags), tuple(notes)) if params or flags else None


def plan_migration(ctx: StepContext) -> Mapping[str, Any]:
    """The same shape as a finished migration's outputs, so later steps plan on it too."""
    return {
        "guest": ctx.inputs["guest"],
        "source": ctx.inputs["source"],
        "target": ctx.inputs["target"],
        "planned": True,
    }


@hookimpl
def evac_actions() -> list[Action]:
    return [
        Action(
            "vm.live_migrate",
            migrate,
            plan=plan_migration,
            description="Live-migrate one guest (p2p, persistent, source undefined), escalating to converge.",
            inputs=INPUTS,
            required=("guest", "source", "target"),
        ),
    ]
