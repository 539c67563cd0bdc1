"""The one front door for jobs: every channel starts, cancels and approves work here.

The CLI, ``evac serve``, the monitor, the webhooks and Slack all call :class:`Jobs`, so
the rules live in one place and apply the same way whoever asks:

- runbooks are started by registered name; only the CLI may run one from a file;
- the drain and failover runbooks are the ones ``runbooks:`` in the config names;
- a host is named by the inventory (unknown hosts are refused with a suggestion);
- a drain of a host that does not answer becomes a failover (fence first, then restart);
- a manual fence is refused while the host still answers on its libvirt port;
- a guest whose QEMU died is restarted in place, relocated or left stopped with an alert,
  as its restart policy says (:meth:`Jobs.guest_failed`);
- while HA is disarmed (:meth:`Jobs.disarm`) no automatic failover starts and no guest is
  restarted: each is an alert instead; an operator's own failover still runs;
- every start, refusal, cancel and approval is audited with the channel and who asked.

Running a job is the caller's choice: :meth:`Jobs.run` in the calling thread (the CLI,
the monitor), or :meth:`Jobs.spawn` in a tracked thread (the service, Slack, webhooks).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

from . import tokens
from .appview import AppView
from .coordination import Coordination
from .doctor import safe_to_fence
from .engine import Engine, JobResult
from .errors import (
    ConfigError,
    EvacError,
    FencingError,
    HaDisarmed,
    HostUnreachable,
    JournalError,
    LockedError,
    NotFound,
    OwnershipLost,
)
from .events import Event
from .fencing import FenceResult, fence_host
from .fleet import reachable
from .hypervisor import Hypervisor
from .inventory import HostSpec
from .journal import BrakeState, Disarmed, JobRecord, Journal
from .model import Guest
from .plugins import notify
from .rebalance import RUNBOOK as REBALANCE_RUNBOOK
from .rebalance import RebalanceSettings
from .restartpolicy import Attempt, HaSettings, Recovery, decide
from .returning import RUNBOOK as RETURN_RUNBOOK
from .runbook import Runbook, bind_params, load_runbook
from .states import EventKind, HostMode, JobState
from .stormbrake import release_held

log = logging.getLogger("evac.jobs")


class Assembly(AppView, Protocol):
    """What the front door needs of the assembled app (``evac.app.App``)."""

    @property
    def engine(self) -> Engine: ...
    @property
    def coordination(self) -> Coordination: ...
    def runbook(self, name: str) -> Runbook: ...
    def runbook_file(self, name_or_path: str) -> Runbook: ...
    def host_names(self) -> list[str] | None: ...


class Channel(StrEnum):
    CLI = "cli"
    SLACK = "slack"
    WEBHOOK = "webhook"
    ALERTMANAGER = "alertmanager"
    MONITOR = "monitor"
    SERVICE = "service"
    API = "api"


AUTOMATIC = (Channel.MONITOR, Channel.ALERTMANAGER)  # failovers no person asked for
ALERTED_AGAIN = 10.0  # s within which one guest left stopped again is one stop reported twice
MAX_REASON = 300  # characters of a reason for disarming HA: one line in Slack, the CLI and /healthz


@dataclass(frozen=True)
class Actor:
    """Who asked, and through which channel: what the audit records."""

    channel: Channel
    who: str = ""

    def __str__(self) -> str:
        return f"{self.channel}:{self.who}" if self.who else str(self.channel)


@dataclass(frozen=True)
class Started:
    """A job recorded in the journal (its lock taken), not yet running."""

    job: int
    runbook: Runbook
    params: dict[str, Any]
    target: str
    note: str = ""  # why the front door chose this runbook, when it chose


@dataclass
class Jobs:
    app: Assembly
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self) -> None:
        """Refuse to start a service whose drain, failover or guest-failure runbook does not
        exist: found at start, not when a host or a guest dies."""
        names = self.app.settings.runbooks
        for role, name in (("drain", names.drain), ("failover", names.failover)):
            try:
                self.app.runbook(name)
            except ConfigError as exc:
                raise ConfigError(f"{self.app.settings.source}: runbooks.{role}: {exc}") from None
        if "ha" in self.app.settings.sections:
            for name in sorted(HaSettings.of(self.app.settings.sections).runbooks()):
                try:
                    self.app.runbook(name)
                except ConfigError as exc:
                    raise ConfigError(f"{self.app.settings.source}: ha: {exc}") from None

    # ---------------------------------------------------------------- start
    def start(
        self,
        runbook: str,
        given: Mapping[str, Any],
        actor: Actor,
        target: str = "",
        dry_run: bool = False,
        approve: bool = False,
        force: bool = False,
    ) -> Started:
        """Record a job of a registered runbook (a file only from the CLI) and audit it.

        The config's settings are the runbook's defaults (:meth:`defaults`); what the
        caller gives wins. ``LockedError`` while another job holds the runbook's lock. A
        drain of a host already in maintenance (or fenced) is refused unless ``force``,
        whichever channel asks (``evac evacuate --force`` drains what is left).
        """
        try:
            book = self._runbook(runbook, actor)
            params = bind_params(book, {**self.defaults(book), **given}, self.app.host_names())
            if book.name == self.app.settings.runbooks.drain and not (force or dry_run):
                self._not_drained_yet(str(params.get("host", "")))
            job = self.app.engine.submit(book, params, target, dry_run)
        except EvacError as exc:
            self.refused(actor, "run", target or runbook, exc)
            raise
        self.app.journal.audit(
            str(actor),
            "dry-run" if dry_run else "run",
            target or book.name,
            {"job": job, "runbook": book.name, "params": params},
        )
        if approve:
            for step in book.all_steps():
                if step.approval:
                    self.app.journal.approve(job, step.id, str(actor))
                    self.app.journal.audit(str(actor), "approve", str(job), {"step": step.id, "up_front": True})
        return Started(job, book, params, target)

    def refused(self, actor: Actor, action: str, target: str, why: Exception) -> None:
        """Audit a refusal: what was asked, by whom, and why it was not done."""
        self.app.journal.audit(str(actor), f"{action}.refused", target, {"why": str(why)})

    def _runbook(self, name: str, actor: Actor) -> Runbook:
        if actor.channel is Channel.CLI:
            return self.app.runbook_file(name)
        if name.endswith((".yaml", ".yml")) or "/" in name:
            raise ConfigError(f"runbook '{name}': only the CLI runs runbooks from files; name a registered runbook")
        return self.app.runbook(name)

    def evacuation(self, host: str) -> tuple[str, str]:
        """The runbook an evacuation of ``host`` runs, and why when it is not the drain: a
        host that does not answer cannot be drained, so it is failed over (fenced first).
        Callers that confirm with a person ask after this, so the question names the truth."""
        spec = self.app.inventory.host(host)
        names = self.app.settings.runbooks
        if reachable(spec.uri, timeout=2.0):
            return names.drain, ""
        return (
            names.failover,
            f"{spec.name} does not answer: running {names.failover} (confirm down, fence, restart elsewhere)",
        )

    def evacuate(
        self,
        host: str,
        actor: Actor,
        reason: str = "",
        params: Mapping[str, Any] | None = None,
        force: bool = False,
        dry_run: bool = False,
        runbook: str | None = None,
    ) -> Started:
        """Drain a host with ``runbook``, or with what :meth:`evacuation` chooses."""
        spec = self.app.inventory.host(host)
        book, note = (runbook, "") if runbook else self.evacuation(spec.name)
        given = {**(params or {}), "host": spec.name}
        if reason and any(p.name == "reason" for p in self._runbook(book, actor).params):
            given["reason"] = reason
        started = self.start(book, given, actor, spec.name, dry_run, force=force)
        return Started(started.job, started.runbook, started.params, started.target, note)

    def _not_drained_yet(self, host: str) -> None:
        state = self.app.journal.host_states().get(host)
        if state is not None:
            raise ConfigError(
                f"evacuate: {host} is already in {state.state} ({state.actor}, {state.reason or 'no reason'}); "
                f"--force drains what is left, `evac host enable {host}` ends the maintenance"
            )

    def fail_over(self, host: str, actor: Actor, reason: str, checks: int | None = None) -> Started:
        """Confirm down, fence, restart elsewhere. The monitor passes ``checks=1``: its own
        verdict rests on signals a moment old, so one last reachability check is enough.

        Automatic failovers (the monitor's, an alert's) fence only a host whose last
        ``evac doctor`` passed its safety checks, unless ``monitor.require_doctor: false``;
        an operator's explicit failover is theirs to decide."""
        spec = self.app.inventory.host(host)
        held = self.app.journal.disarmed() if actor.channel in AUTOMATIC else None
        if held is not None:
            disarmed = HaDisarmed(
                f"{spec.name}: not failed over: HA is disarmed ({held.describe()}); `evac ha arm` resumes "
                f"automatic failover, `evac evacuate {spec.name}` fails it over by hand"
            )
            self.refused(actor, "failover", spec.name, disarmed)
            raise disarmed
        if actor.channel in AUTOMATIC and self.app.settings.monitor.require_doctor:
            safe, why = safe_to_fence(self.app.journal, spec.name)
            if not safe:
                refusal = ConfigError(
                    f"{spec.name}: automatic fencing refused: evac doctor: {why}"
                    f" (run `evac doctor {spec.name}`, or set monitor.require_doctor: false)"
                )
                self.refused(actor, "failover", spec.name, refusal)
                raise refusal
        book = self.app.runbook(self.app.settings.runbooks.failover)
        given: dict[str, Any] = {"host": spec.name, "reason": reason}
        if checks is not None and any(p.name == "checks" for p in book.params):
            given["checks"] = checks
        return self.start(book.name, given, actor, spec.name)

    def host_down(self, host: str, reason: str, background: bool = False) -> int | None:
        """What a monitor does with a host it found dead: one failover job (the host's lock
        keeps it one), run here or in the background. A failover that cannot start for any
        other reason than that lock is an alert: a dead host nobody fails over must not be
        a line in a debug log. While HA is disarmed it is an alert saying so (``ha.held``).

        The id of the job to wait for, after which the caller asks again as long as the
        host is still down and not fenced: the failover it started (its first check may
        have found the host answering a moment before it died), the failover already
        running (another replica's, or one started before the host flapped: it too may end
        without a fence), or the job holding the host's lock when that is another kind of
        job (a drain or a return of the host that died under it), said in an alert. None:
        not this caller's to start (HA is disarmed, or it was refused)."""
        try:
            started = self.fail_over(host, Actor(Channel.MONITOR), reason, checks=1)
        except LockedError as exc:
            if exc.holder is None or self._fails_over(exc.holder):
                log.info("failover of %s not started: %s", host, exc)
                return exc.holder
            message = f"{host} is down ({reason}); its failover waits for job {exc.holder}, which holds its lock"
            log.warning("%s", message)
            data = {"host": host, "job": exc.holder, "level": "alert"}
            notify(self.app.pm, Event(EventKind.HOST_FAILOVER_NOT_STARTED, 0, item=host, message=message, data=data))
            return exc.holder
        except HaDisarmed as exc:
            self._announce(EventKind.HA_HELD, host, str(exc), {"host": host, "level": "alert"})
            return None
        except EvacError as exc:
            message = f"{host} is down ({reason}) but its failover could not start: {exc}"
            log.error("%s", message)
            data = {"host": host, "level": "alert"}
            notify(self.app.pm, Event(EventKind.HOST_FAILOVER_NOT_STARTED, 0, item=host, message=message, data=data))
            return None
        if background:
            self.spawn(started)
        else:
            self.run(started)
        return started.job

    def _fails_over(self, holder: int) -> bool:
        """Whether job ``holder`` is a failover; not when it cannot be read (the caller waits
        for it to end and asks again, rather than give the host up)."""
        try:
            job = self.app.journal.job(holder)
        except EvacError:
            return False
        return job is not None and job.runbook == self.app.settings.runbooks.failover

    # ---------------------------------------------------------------- guests
    def guest_failed(self, host: str, guest: str, reason: str, actor: Actor | None = None) -> Started | None:
        """A guest's QEMU died on ``host``, which is up (``reason``: ``failed`` or ``crashed``,
        as ``Hypervisor.on_guest_down`` tells it). Its restart policy decides from its
        earlier recoveries in the journal (:mod:`evac.restartpolicy`): a job of its
        guest-failure runbook restarts it in place or relocates it, for the caller to run
        (:meth:`spawn` hands it to the leader when replicas run); or it is left stopped
        with an alert.

        None when nothing starts: the guest runs again or is gone (a second report of one
        death), its host's own flow owns its guests (fenced, being failed over, unreachable),
        a job already recovers it (the runbook's lock), it is left stopped, or HA is
        disarmed (an alert says so; nothing else is done). On a host in maintenance it is
        relocated, never restarted there: the drain would leave it behind."""
        actor = actor or Actor(Channel.MONITOR)
        spec = self.app.inventory.host(host)
        found = self._stopped_guest(spec, guest, actor)
        if found is None:
            return None
        held = self.app.journal.disarmed()
        if held is not None:
            why = HaDisarmed(
                f"HA disarmed ({held.describe()}): {guest} died on {spec.name} ({reason}) and is not restarted; "
                "it is once HA is armed (`evac ha arm`), unless it was started by hand meanwhile"
            )
            self.refused(actor, "guest.recover", guest, why)
            self._announce(EventKind.HA_HELD, guest, str(why), {"host": spec.name, "guest": guest, "level": "alert"})
            return None
        ha = HaSettings.of(self.app.settings.sections)
        try:
            policy, runbook = ha.for_guest(found)
        except ConfigError as exc:  # one guest's typo must not leave it stopped
            log.warning("%s; using the ha: defaults for it", exc)
            policy, runbook = ha.policy, ha.runbook
        now = time.time()
        decision = decide(policy, self._recoveries(guest, runbook, now - policy.window), now)
        if decision.action is Recovery.GIVE_UP:
            self._left_stopped(spec.name, guest, f"it died again ({reason}) after {decision.reason}", actor)
            return None
        if decision.action is Recovery.RESTART and in_maintenance(self.app.journal, spec.name):
            # its drain moves running guests only: restarted in place it would stay behind
            decision = replace(decision, action=Recovery.RELOCATE, reason=f"{spec.name} is in maintenance")
        given = {
            "host": spec.name,
            "guest": guest,
            "reason": reason,
            "action": str(decision.action),
            "decision": decision.reason,
        }
        try:
            return self.start(runbook, given, actor, guest)
        except LockedError as exc:
            log.info("%s on %s: not recovered twice: %s", guest, spec.name, exc)
            return None
        except EvacError as exc:
            self._left_stopped(spec.name, guest, f"its recovery could not start: {exc}", actor)
            return None

    def _stopped_guest(self, spec: HostSpec, guest: str, actor: Actor) -> Guest | None:
        """The guest, when it is still down by a fault on a host whose own flow does not own it."""
        owner = host_flow(self.app.journal, spec.name, self.app.settings.runbooks.failover)
        if owner:
            self.refused(actor, "guest.recover", guest, ConfigError(f"{owner}: its own flow owns its guests"))
            log.info("%s not recovered: %s", guest, owner)
            return None
        try:
            if not reachable(spec.uri, 1.0):  # libvirt's open has no timeout: a silent host would stall the caller
                raise HostUnreachable(f"{spec.name}: {spec.uri} does not answer")
            with Hypervisor.connect(spec.name, spec.uri, keepalive=None) as hv:
                found = hv.guest(guest, self.app.inventory.is_shared)
        except NotFound:
            log.info("%s is no longer defined on %s: nothing to recover", guest, spec.name)
            return None
        except EvacError as exc:  # the host does not answer: the monitor's to judge
            self.refused(actor, "guest.recover", guest, exc)
            log.warning("%s not recovered: %s", guest, exc)
            return None
        if found.state != "crashed":  # a fault's shut-off reads crashed (hypervisor.state_name)
            log.info("%s on %s is %s: nothing to recover", guest, spec.name, found.state)
            return None
        return found

    def _recoveries(self, guest: str, runbook: str, since: float) -> list[Attempt]:
        """The guest's recoveries since ``since``: its jobs of ``runbook``, failed ones too."""
        limit = 100
        while True:
            jobs = self.app.journal.jobs(limit)
            if len(jobs) < limit or jobs[-1].created < since:
                break
            limit *= 10
        actions = {str(Recovery.RESTART), str(Recovery.RELOCATE)}
        return [
            Attempt(job.created, Recovery(job.params["action"]))
            for job in jobs
            if job.created >= since
            and job.runbook == runbook
            and not job.dry_run
            and job.params.get("guest") == guest
            and job.params.get("action") in actions
        ]

    def _left_stopped(self, host: str, guest: str, why: str, actor: Actor) -> None:
        """Alert that a guest stays down, once per stop: an agent reports each stop once,
        but libvirt's event and the agent's sweep (every second) may both catch one stop.
        A guest started by hand after the alert that dies again is alerted again (found by
        the nemesis: once per policy window, its second death was a line in a debug log);
        so is one still stopped when its agent restarts, whose sweep reports it anew."""
        message = f"{guest} left stopped on {host}: {why}; find out why, then start it by hand"
        try:
            first = self.app.journal.first_seen(f"guest-left-stopped:{guest}", ALERTED_AGAIN)
            if first:
                self.app.journal.audit(str(actor), "guest.left_stopped", guest, {"host": host, "why": why})
        except JournalError as exc:
            log.warning("journal did not record that %s was left stopped: %s", guest, exc)
            first = True
        if not first:
            log.info("%s (alerted already)", message)
            return
        log.error("%s", message)
        data = {"host": host, "guest": guest, "level": "alert"}
        event = Event(EventKind.GUEST_LEFT_STOPPED, 0, item=guest, message=message, data=data)
        try:
            self.app.journal.add_event(event)
        except JournalError as exc:
            log.warning("journal did not record the alert for %s: %s", guest, exc)
        notify(self.app.pm, event)

    def preview_drain(self, host: str) -> dict[str, Any]:
        """The plan a drain would run (its own plan step, dry): what Slack shows first."""
        spec = self.app.inventory.host(host)
        result = self.preview(self.app.settings.runbooks.drain, {"host": spec.name}, spec.name)
        plan = result.outputs.get("plan")
        if not plan:
            raise EvacError(result.error or "no plan")
        return dict(plan)

    def preview(self, runbook: str, given: Mapping[str, Any], target: str = "") -> JobResult:
        """A registered runbook's dry run (journaled as a dry-run job, taking no lock): what a
        front door shows before a person confirms (Slack's ``/evac run``, the REST API's ``dry_run``). Its params are
        checked as :meth:`start` checks them, so a preview that passes starts."""
        book = self.app.runbook(runbook)
        params = bind_params(book, {**self.defaults(book), **given}, self.app.host_names())
        return self.app.engine.execute(book, params, target, dry_run=True)

    def defaults(self, book: Runbook) -> dict[str, Any]:
        """The config's defaults for a runbook's params, whichever channel starts it: the
        ``drain:`` settings for the drain and for the return (its migrations are a drain's),
        the ``rebalance:`` settings for the rebalance; only params the runbook declares."""
        found: Mapping[str, Any] = {}
        if book.name in (self.app.settings.runbooks.drain, RETURN_RUNBOOK):
            found = self.app.settings.drain_params
        elif book.name == REBALANCE_RUNBOOK:
            found = RebalanceSettings.of(self.app.settings.sections).params()
        declared = {p.name for p in book.params}
        return {key: value for key, value in found.items() if key in declared}

    # ---------------------------------------------------------------- run
    def run(self, started: Started) -> JobResult:
        """Run in the calling thread, to its end."""
        return self.app.engine.run(started.job, started.runbook)

    def spawn(self, started: Started) -> threading.Thread | None:
        """Run in a tracked background thread (:meth:`join` waits for them all).

        With replicas, a failover or a guest's recovery belongs to the leader: a replica
        that does not lead (an alert or an agent's report reached it) hands the job over
        instead, and the leader claims it at once. None then: nothing runs here."""
        if self._leaders(started.runbook.name) and not self.app.coordination.leads():
            threading.Thread(target=self._hand_over, args=(started.job,), daemon=True, name="hand-over").start()
            log.info("job %s (%s of %s) handed to the leader", started.job, started.runbook.name, started.target)
            return None

        def run() -> None:
            try:
                result = self.app.engine.run(started.job, started.runbook)
            except EvacError:
                log.exception("job %s", started.job)
                return
            if result.state == JobState.INTERRUPTED and not self.app.engine.stopping:
                self._hand_over(started.job)
                log.info("job %s interrupted; released for the leader to resume", started.job)

        thread = threading.Thread(target=run, daemon=True, name=f"job-{started.job}")
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return thread

    def _leaders(self, runbook: str) -> bool:
        """Is this runbook's job the leader's alone: a failover, or a guest's recovery."""
        ha = HaSettings.of(self.app.settings.sections)
        return runbook == self.app.settings.runbooks.failover or runbook in ha.runbooks()

    def _hand_over(self, job: int) -> None:
        """Give a job to whoever leads: a failover this replica may not decide, or a job
        interrupted while the service runs (etcd was away, or its ownership lapsed). It is
        released as soon as etcd answers; if this process stops first, its lease goes with
        it, and the job is the leader's all the same."""
        while True:
            try:
                self.app.journal.release(job)
                return
            except OwnershipLost:
                return  # another controller owns it already
            except JournalError as exc:
                log.debug("job %s not released yet: %s", job, exc)
            if self.app.engine.stopping:
                return
            time.sleep(1.0)

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` in all for the jobs :meth:`spawn` started."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def resumable(self, actor: Actor) -> list[Started]:
        """Claim the jobs whose controller died (a dry run left behind is cancelled), each on
        its own: a job that cannot be resumed here is left for a controller that can."""
        claimed = []
        journal = self.app.journal
        for job in journal.unfinished_jobs():
            if not job.orphaned:
                continue  # a live process runs it, here or on another controller
            try:
                if job.dry_run:
                    if journal.claim(job.id):
                        journal.finish_job(job.id, JobState.CANCELLED, "dry run left unfinished")
                    continue
                book = load_runbook(job.source)  # first: a job this process cannot run stays unclaimed
                if not journal.claim(job.id):
                    continue  # another controller was first
            except EvacError as exc:
                log.warning("job %s not resumed here: %s", job.id, exc)
                continue
            if job.id in self.app.engine.running_jobs():
                continue  # its run here goes on, now under this process's new lease: never twice
            try:
                journal.audit(str(actor), "resume", job.target or job.runbook, {"job": job.id})
            except JournalError as exc:
                log.warning("resuming job %s, not audited: %s", job.id, exc)
            claimed.append(Started(job.id, book, job.params, job.target))
        return claimed

    # ---------------------------------------------------------------- control
    def cancel(self, job_id: int, actor: Actor) -> JobRecord:
        """Ask a running job to stop (it rolls back), in this process or another."""
        job = self._job(job_id, "cancel")
        if not job.finished:
            self.app.engine.cancel(job_id)
            self.app.journal.audit(str(actor), "cancel", job.target or job.runbook, {"job": job_id})
        return job

    def approve(self, job_id: int, actor: Actor, step: str | None = None) -> list[str]:
        """Approve a step waiting for approval (default: every step of the job waiting now)."""
        job = self._job(job_id, "approve")
        journal = self.app.journal
        if step and not any(s.id == step and s.approval for s in load_runbook(job.source).all_steps()):
            raise ConfigError(f"approve: step '{step}' of job {job_id} has no approval gate")
        asked = [e.step for _, e in journal.events(job_id) if e.kind == EventKind.APPROVAL_REQUESTED]
        steps = [step] if step else [s for s in asked if journal.approved_by(job_id, s) is None]
        if not steps:
            raise ConfigError(f"approve: job {job_id} has no step waiting for approval")
        for name in steps:
            journal.approve(job_id, name, str(actor))
            journal.audit(str(actor), "approve", str(job_id), {"step": name})
        return steps

    def _job(self, job_id: int, verb: str) -> JobRecord:
        job = self.app.journal.job(job_id)
        if job is None:
            raise ConfigError(f"{verb}: no job {job_id}")
        return job

    def release_brake(self, actor: Actor) -> BrakeState | None:
        """Release the storm brake so automatic failover resumes (a running monitor then fails
        over the hosts it held back); what was released, or None when it was not engaged."""
        return release_held(self.app.journal, str(actor))

    # ---------------------------------------------------------------- HA armed or not
    def disarm(self, actor: Actor, reason: str) -> bool:
        """Disarm HA across the cluster: monitors keep watching and alerting, but no host is
        fenced or failed over automatically, no guest is restarted, and the agents feed
        their watchdogs whatever happens. False when it was disarmed already (the first
        reason stands, and nothing is audited). ``reason`` is one line."""
        reason = reason.strip()
        problem = _reason_problem(reason)
        if problem:
            refusal = ConfigError(f"ha disarm: reason: {problem}")
            self.refused(actor, "ha.disarm", "fleet", refusal)
            raise refusal
        if not self.app.journal.disarm(reason, str(actor)):
            return False
        self.app.journal.audit(str(actor), "ha.disarm", "fleet", {"reason": reason})
        message = (
            f"HA disarmed by {actor}: {reason or 'no reason given'}. Hosts that go down are reported, never fenced "
            "or failed over; guests whose QEMU dies are not restarted; agents feed their watchdogs whatever happens"
        )
        data = {"actor": str(actor), "reason": reason, "since": time.time(), "level": "alert"}
        self._announce(EventKind.HA_DISARMED, str(actor), message, data)
        return True

    def arm(self, actor: Actor) -> Disarmed | None:
        """Arm HA again; what was disarmed, or None when it was armed (nothing audited). A
        running monitor judges every host again at once: those down now are failed over,
        and the guests that died meanwhile are restarted (``evac serve``)."""
        held = self.app.journal.arm()
        if held is None:
            return None
        self.app.journal.audit(
            str(actor), "ha.arm", "fleet", {"disarmed_by": held.actor, "reason": held.reason, "since": held.since}
        )
        message = (
            f"HA armed by {actor} (disarmed for {_duration(time.time() - held.since)}, {held.describe()}): "
            "hosts down now are failed over, and agents self-fence again"
        )
        data = {"actor": str(actor), "was": held.reason, "disarmed_by": held.actor, "since": held.since}
        self._announce(EventKind.HA_ARMED, str(actor), message, data)
        return held

    def _announce(self, kind: EventKind, item: str, message: str, data: dict[str, Any]) -> None:
        """An event no job owns: to the journal when it answers, to every observer anyway."""
        event = Event(kind, 0, item=item, message=message, data=data)
        try:
            self.app.journal.add_event(event)
        except JournalError as exc:
            log.warning("journal did not record %s (%s): %s", kind, message, exc)
        notify(self.app.pm, event)

    # ---------------------------------------------------------------- fencing
    def fence(self, host: str, actor: Actor) -> FenceResult:
        """Power a host off through its fence chain, and record it fenced."""
        spec = self.app.inventory.host(host)
        try:
            with tokens.carried(self.app.journal.fence_token(None)):
                result = fence_host(self.app.pm, spec, app=self.app)
        except FencingError as exc:
            self.app.journal.audit(str(actor), "fence.failed", spec.name, {"error": str(exc)})
            raise
        self.app.journal.set_host_state(spec.name, HostMode.FENCED, f"fenced by {result.method}", str(actor))
        self.app.journal.audit(str(actor), "fence", spec.name, {"method": result.method, "seconds": result.seconds})
        return result

    def fence_manually(self, host: str, actor: Actor, reason: str = "confirmed off by hand") -> str:
        """Record an operator's word that a host is off. Refused while the host's libvirt
        port still answers: a host that answers is not off, whoever says so."""
        spec = self.app.inventory.host(host)
        if reachable(spec.uri, 2.0):
            self.app.journal.audit(str(actor), "fence.manual.refused", spec.name, {"why": "libvirt port answers"})
            raise ConfigError(f"{spec.name} answers on its libvirt port: it is not off. Nothing done.")
        self.app.journal.set_host_state(spec.name, HostMode.FENCED, reason, str(actor))
        self.app.journal.audit(str(actor), "fence.manual", spec.name, {"reason": reason})
        return spec.name


def host_flow(journal: Journal, host: str, failover: str) -> str:
    """Why ``host``'s own flow owns its guests (fenced, being failed over), or "": a guest's
    recovery must then leave them alone. Asked again right before a start.

    Maintenance owns none: a drain moves running guests only, so one whose QEMU dies on
    a host in maintenance is relocated (:meth:`Jobs.guest_failed`); left alone, it ran
    nowhere once the drain was over (found by the nemesis, seed 1907046866)."""
    state = journal.host_states().get(host)
    if state is not None and state.state == HostMode.FENCED:
        return f"{host} is fenced"
    if any(job.runbook == failover and job.target == host for job in journal.unfinished_jobs()):
        return f"{host} is being failed over"
    return ""


def in_maintenance(journal: Journal, host: str) -> bool:
    state = journal.host_states().get(host)
    return state is not None and state.state == HostMode.MAINTENANCE


def _reason_problem(reason: str) -> str:
    """Why ``reason`` cannot be a reason for disarming HA, or "": it is shown on one line."""
    if "\n" in reason or "\r" in reason:
        return "one line expected (it is shown in Slack, `evac ha status` and /healthz)"
    if len(reason) > MAX_REASON:
        return f"{len(reason)} characters, at most {MAX_REASON} expected; say the rest in the ticket it names"
    return ""


def target_of(book: Runbook, given: Mapping[str, Any]) -> str:
    """What a job is about when its channel does not name it: the host its first host param
    names (given, else its default), or "". Slack, the REST API and the CLI all ask here."""
    for param in book.params:
        if param.type == "host":
            value = given.get(param.name, param.default)
            return str(value) if value else ""
    return ""


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
