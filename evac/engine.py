"""Runs runbooks: steps in order, items in parallel within limits, every change journaled.

Semantics in short (``docs/runbooks.md`` has the full text):

- a step whose ``when`` is false is skipped; ``for_each`` runs one call per item with at
  most ``concurrency`` at once, and stops starting new items once one failed (unless
  ``on_failure: continue``);
- each call is retried by the step's tenacity policy; ``timeout`` aborts a call that runs
  too long (the action is asked to stop through ``ctx.abort``);
- a failure with ``on_failure: abort`` (the default), a handler list, or a cancel aborts
  the job: rollbacks of the steps reached run in reverse order;
- everything is in the journal, so ``resume`` continues a job whose controller died,
  skipping what finished and re-running (idempotent) calls that were in flight;
- any exception inside a step (a ``when``, ``with``, ``for_each`` or ``concurrency``
  template that does not render, a bug in an action or in the engine) fails that step
  like an action's error: a job never stays ``running`` with its lock held.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy
import tenacity

from .actions import Action, StepContext, item_key
from .connections import Connections
from .errors import Cancelled, ConfigError, EvacError, Incomplete, Interrupted, JournalError, StepTimeout
from .events import Event
from .journal import Journal
from .plugins import collect_actions, error_classes, notify
from .retrypolicy import retrying
from .runbook import Runbook, Step, check_runbook
from .states import EventKind, ItemState, JobState, StepState
from .templating import TemplateError, render, truthy

if TYPE_CHECKING:
    from .appview import AppView

log = logging.getLogger("evac.engine")
DONE = (StepState.SUCCEEDED, StepState.SKIPPED, StepState.PARTIAL)


class StepFailed(EvacError):
    """A step failed after its retries; carries the step's partial outputs."""

    def __init__(self, message: str, outputs: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.outputs = outputs or {}


def describe(exc: BaseException) -> str:
    """An error as one line: evac's own errors speak for themselves, others name their type."""
    return str(exc) if isinstance(exc, EvacError) else f"{type(exc).__name__}: {exc}"


@dataclass
class JobResult:
    job_id: int
    state: JobState
    error: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)


class _Run:
    """The in-memory side of one running job: cancel flag and in-flight calls."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        self.cancelled = threading.Event()
        self.active: set[StepContext] = set()
        self.lock = threading.Lock()
        self.finished = threading.Event()
        self.connections = Connections()  # one libvirt connection per host for all its steps

    def cancel(self) -> None:
        self.cancelled.set()
        with self.lock:
            for ctx in self.active:
                ctx.abort.set()


class Engine:
    def __init__(
        self,
        pm: pluggy.PluginManager,
        journal: Journal,
        app: AppView | None = None,
        sleep: Callable[[float], None] = time.sleep,
        poll_interval: float = 0.2,
    ) -> None:
        self.pm = pm
        self.journal = journal
        self.actions: dict[str, Action] = collect_actions(pm)
        self.errors = error_classes(pm)
        self.app = app  # what actions see as ``ctx.app``
        self.sleep = sleep
        self.poll_interval = poll_interval
        self._runs: dict[int, _Run] = {}
        self._claiming = threading.Lock()  # one run per job in this process
        self._stopping = threading.Event()

    # ---------------------------------------------------------------- public API
    def check(self, runbook: Runbook) -> None:
        """Raise the first problem that would stop this runbook from running."""
        problems = check_runbook(runbook, self.actions, set(self.errors))
        if problems:
            raise problems[0]

    def submit(self, runbook: Runbook, params: dict[str, Any], target: str = "", dry_run: bool = False) -> int:
        """Record a new job (taking its lock); nothing runs until :meth:`run`."""
        self.check(runbook)
        lock = None
        if runbook.lock and not dry_run:
            lock = str(render(runbook.lock, {"params": params, "target": target}))
        return self.journal.create_job(runbook.name, runbook.source, params, target, dry_run, lock)

    def execute(self, runbook: Runbook, params: dict[str, Any], target: str = "", dry_run: bool = False) -> JobResult:
        return self.run(self.submit(runbook, params, target, dry_run), runbook)

    def cancel(self, job_id: int) -> None:
        """Stop starting new work, abort in-flight calls, then roll back (also across processes)."""
        self.journal.request_cancel(job_id)
        run = self._runs.get(job_id)
        if run and not run.cancelled.is_set():
            self._emit(Event(EventKind.JOB_CANCEL_REQUESTED, job_id))
            run.cancel()

    def shutdown(self, abort_in_flight: bool = False) -> None:
        """Stop starting work; with ``abort_in_flight`` also ask running calls to stop.

        Jobs end ``interrupted`` without rollback and stay ``running`` in the journal, so
        the next start resumes them (actions re-check the real state first).
        """
        self._stopping.set()
        if abort_in_flight:
            for run in list(self._runs.values()):
                with run.lock:
                    for ctx in run.active:
                        ctx.abort.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def running_jobs(self) -> list[int]:
        return list(self._runs)

    def run(self, job_id: int, runbook: Runbook) -> JobResult:
        job = self.journal.job(job_id)
        if job is None:
            raise ConfigError(f"no job {job_id}")
        run = _Run(job_id)
        with self._claiming:
            if job_id in self._runs:  # claimed again under a new lease while its first run goes on
                raise EvacError(f"job {job_id} is already running in this process")
            self._runs[job_id] = run
        watcher = threading.Thread(target=self._watch_cancel, args=(run,), daemon=True, name=f"cancel-{job_id}")
        watcher.start()
        context: dict[str, Any] = {"params": job.params, "steps": {}, "job": {"id": job_id, "target": job.target}}
        try:
            resumed = bool(self.journal.events(job_id))
            self._emit(
                Event(
                    EventKind.JOB_RESUMED if resumed else EventKind.JOB_STARTED,
                    job_id,
                    data={"runbook": runbook.name, "params": job.params, "target": job.target, "dry_run": job.dry_run},
                )
            )
            state, error = self._run_steps(run, runbook, context, job.dry_run)
        except Interrupted as exc:
            return self._interrupted(job_id, exc, context)
        except Exception as exc:  # the last guard: whatever broke, the job ends and its lock is freed
            log.exception("job %s: the engine failed outside any step", job_id)
            state, error = JobState.FAILED, f"engine error: {describe(exc)}"
        finally:
            run.finished.set()
            run.connections.close()
            with self._claiming:
                if self._runs.get(job_id) is run:
                    del self._runs[job_id]
        try:
            self.journal.finish_job(job_id, state, error)
        except Interrupted as exc:  # the job is another controller's now, or etcd is gone
            return self._interrupted(job_id, exc, context)
        self._emit(Event(EventKind.JOB_FINISHED, job_id, message=error, data={"state": state}))
        return JobResult(job_id, state, error, context["steps"])

    def _interrupted(self, job_id: int, exc: Interrupted, context: dict[str, Any]) -> JobResult:
        """The job stays ``running`` for whoever resumes it; when the journal itself is what
        failed, observers still hear why."""
        event = Event(EventKind.JOB_INTERRUPTED, job_id, message=str(exc))
        try:
            self.journal.add_event(event)
        except EvacError as lost:
            log.warning("job %s interrupted (%s); not journaled: %s", job_id, exc, lost)
        notify(self.pm, event)
        return JobResult(job_id, JobState.INTERRUPTED, str(exc), context["steps"])

    # ---------------------------------------------------------------- steps
    def _run_steps(self, run: _Run, runbook: Runbook, context: dict[str, Any], dry_run: bool) -> tuple[JobState, str]:
        reached: list[Step] = []
        state, error = JobState.SUCCEEDED, ""
        for step in runbook.steps:
            if self._stopping.is_set():
                raise Interrupted(f"service stopping before step '{step.id}'")
            if run.cancelled.is_set():
                state, error = JobState.CANCELLED, "cancelled by operator"
                break
            reached.append(step)
            try:
                step_state = self._step(run, step, context, dry_run)
            except Cancelled as exc:
                state, error = JobState.CANCELLED, str(exc) or "cancelled by operator"
                break
            except Interrupted:
                raise
            except Exception as exc:  # StepFailed, or a failure around the step (approval, journal)
                if not isinstance(exc, StepFailed):
                    log.exception("job %s: step '%s' failed outside its action", run.job_id, step.id)
                error = f"step '{step.id}': {describe(exc)}"
                if step.on_failure == "handle":
                    for handler in step.handler:
                        self._step_quietly(run, handler, context, dry_run)
                state = JobState.FAILED
                break
            if step_state == StepState.PARTIAL:
                state = JobState.PARTIAL
        if state in (JobState.FAILED, JobState.CANCELLED):
            self._rollback(run, reached, context, dry_run)
        return state, error

    def _step(self, run: _Run, step: Step, context: dict[str, Any], dry_run: bool, force: bool = False) -> StepState:
        """Run one step to its end; returns its state or raises StepFailed/Cancelled.

        Any other exception in the step becomes a failed step too, journaled with its error,
        so ``on_failure`` and rollback handle a template error or a bug like any failure.
        """
        job_id = run.job_id
        record = self.journal.step(job_id, step.id)
        if record and record.state in DONE:
            context["steps"][step.id] = record.outputs
            return StepState(record.state)
        if record and record.state == StepState.FAILED:
            context["steps"][step.id] = record.outputs
            if step.on_failure == "continue":
                return StepState.PARTIAL
            raise StepFailed(record.error, record.outputs)
        try:
            skip = step.when is not None and not truthy(step.when, context)
        except Exception as exc:
            return self._fail_step(run, step, context, StepFailed(f"when: {describe(exc)}"), time.monotonic())
        if skip:
            self.journal.save_step(job_id, step.id, StepState.SKIPPED, {})
            self._emit(Event(EventKind.STEP_SKIPPED, job_id, step.id, message=f"when: {step.when}"))
            context["steps"][step.id] = {}
            return StepState.SKIPPED
        if step.approval and not dry_run:
            self._await_approval(run, step)
        self.journal.save_step(job_id, step.id, StepState.RUNNING, {})
        self._emit(Event(EventKind.STEP_STARTED, job_id, step.id, data={"action": step.action}))
        started = time.monotonic()
        try:
            if step.for_each is not None:
                outputs, state = self._for_each(run, step, context, dry_run, force)
            else:
                outputs, state = self._call(run, step, context, None, dry_run, force), StepState.SUCCEEDED
        except StepFailed as exc:
            return self._fail_step(run, step, context, exc, started)
        except Cancelled:
            if self._stopping.is_set() and not run.cancelled.is_set():
                raise Interrupted(f"service stopping during step '{step.id}'") from None
            self._finish_step(run, step, StepState.CANCELLED, {}, "cancelled", started)
            raise
        except Interrupted:
            raise
        except Exception as exc:
            log.exception("job %s: step '%s' failed in the engine", job_id, step.id)
            return self._fail_step(run, step, context, StepFailed(describe(exc)), started)
        context["steps"][step.id] = outputs
        self._finish_step(run, step, state, outputs, "", started)
        return state

    def _fail_step(
        self, run: _Run, step: Step, context: dict[str, Any], failure: StepFailed, started: float
    ) -> StepState:
        """Journal the step failed; ``partial`` under ``on_failure: continue``, else raise ``failure``."""
        self._finish_step(run, step, StepState.FAILED, failure.outputs, str(failure), started)
        context["steps"][step.id] = failure.outputs
        if step.on_failure == "continue":
            return StepState.PARTIAL
        raise failure

    def _finish_step(
        self, run: _Run, step: Step, state: StepState, outputs: dict[str, Any], error: str, started: float
    ) -> None:
        self.journal.save_step(run.job_id, step.id, state, outputs, error)
        data = {"state": state, "seconds": round(time.monotonic() - started, 3)}
        self._emit(Event(EventKind.STEP_FINISHED, run.job_id, step.id, message=error, data=data))

    def _step_quietly(self, run: _Run, step: Step, context: dict[str, Any], dry_run: bool) -> None:
        """Handlers and rollbacks: run even after a cancel; their failure is reported, not raised."""
        try:
            self._step(run, step, context, dry_run, force=True)
        except Exception as exc:
            if not isinstance(exc, EvacError):
                log.exception("job %s: handler or rollback step '%s' failed", run.job_id, step.id)
            self._emit(Event(EventKind.STEP_FAILED, run.job_id, step.id, message=describe(exc)))

    def _rollback(self, run: _Run, reached: list[Step], context: dict[str, Any], dry_run: bool) -> None:
        steps = [rb for step in reversed(reached) for rb in step.rollback]
        if not steps:
            return
        self._emit(Event(EventKind.ROLLBACK_STARTED, run.job_id, data={"steps": [s.id for s in steps]}))
        for step in steps:
            self._step_quietly(run, step, context, dry_run)
        self._emit(Event(EventKind.ROLLBACK_FINISHED, run.job_id))

    def _await_approval(self, run: _Run, step: Step) -> None:
        assert step.approval is not None
        if self.journal.approved_by(run.job_id, step.id) is None:
            data = {"text": step.approval.text, "approvers": list(step.approval.approvers)}
            self._emit(Event(EventKind.APPROVAL_REQUESTED, run.job_id, step.id, message=step.approval.text, data=data))
        while (actor := self.journal.approved_by(run.job_id, step.id)) is None:
            if run.cancelled.wait(self.poll_interval):
                raise Cancelled(f"cancelled while step '{step.id}' waited for approval")
            if self._stopping.is_set():
                raise Interrupted(f"service stopping while step '{step.id}' waited for approval")
        self._emit(Event(EventKind.APPROVAL_GRANTED, run.job_id, step.id, data={"by": actor}))

    # ---------------------------------------------------------------- items
    def _for_each(
        self, run: _Run, step: Step, context: dict[str, Any], dry_run: bool, force: bool
    ) -> tuple[dict[str, Any], StepState]:
        try:
            items = render(step.for_each, context)
        except TemplateError as exc:
            raise StepFailed(f"for_each: {exc}") from None
        if isinstance(items, dict):
            items = list(items.values())
        if not isinstance(items, list):
            raise StepFailed(f"for_each: expected a list, got {type(items).__name__}")
        limit = self._concurrency(step, context)
        self._emit(Event(EventKind.STEP_ITEMS, run.job_id, step.id, data={"count": len(items)}))
        done = self.journal.items(run.job_id, step.id)
        results: dict[str, Any] = {}
        failed: dict[str, str] = {}
        todo = []
        for item in items:
            key = item_key(item)
            record = done.get(key)
            if record and record.state == ItemState.SUCCEEDED:
                results[key] = record.outputs
            else:
                todo.append((key, item))
        stop = threading.Event()

        def one(key: str, item: Any) -> None:
            if (stop.is_set() or run.cancelled.is_set() or self._stopping.is_set()) and not force:
                return
            self._emit(Event(EventKind.ITEM_STARTED, run.job_id, step.id, key))
            try:
                results[key] = self._call(run, step, context, item, dry_run, force)
                data = {"state": ItemState.SUCCEEDED, "outputs": results[key]}
                self._emit(Event(EventKind.ITEM_FINISHED, run.job_id, step.id, key, data=data))
            except Interrupted:
                stop.set()
                raise
            except StepFailed as exc:
                failed[key] = str(exc)
                data = {"state": ItemState.FAILED}
                self._emit(Event(EventKind.ITEM_FINISHED, run.job_id, step.id, key, str(exc), data))
                if step.on_failure != "continue":
                    stop.set()

        with ThreadPoolExecutor(max_workers=limit, thread_name_prefix=f"job{run.job_id}-{step.id}") as pool:
            pending: set[Future[None]] = {pool.submit(one, key, item) for key, item in todo}
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    future.result()
        outputs = {"items": results, "succeeded": sorted(results), "failed": failed}
        if self._stopping.is_set() and not force and len(results) + len(failed) < len(items):
            raise Interrupted(f"service stopping during step '{step.id}'")
        if run.cancelled.is_set() and not force and len(results) + len(failed) < len(items):
            raise Cancelled(f"cancelled during step '{step.id}'")
        if failed:
            if step.on_failure == "continue":
                return outputs, StepState.PARTIAL
            first = next(iter(failed.items()))
            raise StepFailed(f"{len(failed)} of {len(items)} items failed; {first[0]}: {first[1]}", outputs)
        return outputs, StepState.SUCCEEDED

    @staticmethod
    def _concurrency(step: Step, context: dict[str, Any]) -> int:
        try:
            value = render(step.concurrency, context)
        except TemplateError as exc:
            raise StepFailed(f"concurrency: {exc}") from None
        try:
            limit = int(value)
        except (TypeError, ValueError):
            limit = 0
        if limit < 1:
            raise StepFailed(f"concurrency: expected a whole number >= 1, got {value!r}")
        return limit

    def _call(
        self, run: _Run, step: Step, context: dict[str, Any], item: Any, dry_run: bool, force: bool
    ) -> dict[str, Any]:
        """One action call with the step's retry policy and timeout; journaled per item."""
        key = item_key(item)
        action = self.actions[step.action]
        attempts = 0

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait_s = state.next_action.sleep if state.next_action else 0
            self._emit(
                Event(
                    EventKind.ITEM_RETRY,
                    run.job_id,
                    step.id,
                    key,
                    str(exc),
                    {"attempt": state.attempt_number, "wait": wait_s, "error": type(exc).__name__},
                )
            )

        try:
            for attempt in retrying(step.retry, self.errors, self.sleep, before_sleep):
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    if run.cancelled.is_set() and not force:
                        raise Cancelled(f"cancelled before step '{step.id}' {key}".strip())
                    scope = {**context, "item": item}
                    ctx = StepContext(
                        job_id=run.job_id,
                        step=step.id,
                        inputs=self._inputs(step, scope),
                        params=context["params"],
                        item=item,
                        dry_run=dry_run,
                        attempt=attempts,
                        emit=self._emit,
                        app=self.app,
                    )
                    if key:
                        self.journal.save_item(run.job_id, step.id, key, ItemState.RUNNING, {}, attempts=attempts)
                    outputs = dict(self._invoke(run, ctx, action, step.timeout, force) or {})
        except (Cancelled, Interrupted):
            raise
        except ConfigError as exc:  # a template error: retrying cannot help
            self._save_item(run, step, key, ItemState.FAILED, {}, str(exc), attempts)
            raise StepFailed(str(exc)) from None
        except Exception as exc:
            message = describe(exc)
            kept = dict(exc.outputs) if isinstance(exc, Incomplete) else {}
            self._save_item(run, step, key, ItemState.FAILED, kept, message, attempts)
            raise StepFailed(message, kept) from None
        self._save_item(run, step, key, ItemState.SUCCEEDED, outputs, "", attempts)
        return outputs

    @staticmethod
    def _inputs(step: Step, scope: dict[str, Any]) -> dict[str, Any]:
        """The step's ``with``, rendered afresh for each attempt (an action may change its copy)."""
        try:
            return dict(render(step.inputs, scope))
        except TemplateError as exc:
            raise TemplateError(f"with: {exc}") from None

    def _save_item(
        self, run: _Run, step: Step, key: str, state: ItemState, outputs: dict[str, Any], error: str, attempts: int
    ) -> None:
        if key:
            self.journal.save_item(run.job_id, step.id, key, state, outputs, error, attempts)

    def _invoke(
        self, run: _Run, ctx: StepContext, action: Action, timeout: float | None, force: bool
    ) -> Mapping[str, Any] | None:
        if not force:
            with run.lock:
                run.active.add(ctx)
            if run.cancelled.is_set():
                ctx.abort.set()
        try:
            if timeout is None:
                return self._hook_call(run, ctx, action)
            box: dict[str, Any] = {}
            done = threading.Event()

            def target() -> None:
                try:
                    box["value"] = self._hook_call(run, ctx, action)
                except BaseException as exc:
                    box["error"] = exc
                finally:
                    done.set()

            threading.Thread(target=target, daemon=True, name=f"job{run.job_id}-{ctx.step}-call").start()
            if not done.wait(timeout):
                ctx.abort.set()
                raise StepTimeout(f"step '{ctx.step}' timed out after {timeout:g} s")
            if "error" in box:
                raise box["error"]
            return box.get("value")
        finally:
            with run.lock:
                run.active.discard(ctx)

    def _hook_call(self, run: _Run, ctx: StepContext, action: Action) -> Mapping[str, Any] | None:
        with run.connections.as_current():
            result: Mapping[str, Any] | None = self.pm.hook.evac_run_step(ctx=ctx, action=action)
        return result

    # ---------------------------------------------------------------- events and cancel
    def _emit(self, event: Event) -> None:
        self.journal.add_event(event)
        notify(self.pm, event)

    def _watch_cancel(self, run: _Run) -> None:
        while not run.finished.wait(self.poll_interval):
            try:
                job = self.journal.job(run.job_id)
            except JournalError:  # etcd away for a moment: the next poll asks again
                continue
            if job and job.cancel_requested and not run.cancelled.is_set():
                self._emit(Event(EventKind.JOB_CANCEL_REQUESTED, run.job_id))
                run.cancel()
