"""Engine semantics, specified with small inline plugins (no libvirt, no sleeping)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from evac.errors import LockedError
from evac.states import ItemState, StepState
from tests.unit.enginekit import Background, Recorder, engine, runbook


def wait_until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        threading.Event().wait(0.005)


def test_steps_run_in_order_and_outputs_feed_later_templates(tmp_path: Path) -> None:
    rec = Recorder()
    rb = runbook("""
name: t
params: {who: {type: string, default: world}}
steps:
  - {id: first, action: test.ok, with: {value: "hello {{ params.who }}"}}
  - {id: second, action: test.ok, with: {value: "{{ steps.first.value | upper }}"}}
""")
    result = engine(tmp_path, rec).execute(rb, {"who": "ops"})
    assert result.state == "succeeded"
    assert rec.calls == [("first", "hello ops"), ("second", "HELLO OPS")]


def test_step_with_false_when_is_skipped(tmp_path: Path) -> None:
    rec = Recorder()
    rb = runbook("name: t\nsteps:\n  - {id: a, action: test.ok, when: '1 > 2'}\n  - {id: b, action: test.ok}\n")
    engine(tmp_path, rec).execute(rb, {})
    assert [c[0] for c in rec.calls] == ["b"]
    assert "step.skipped" in rec.kinds()


def test_retry_makes_the_attempts_and_waits_the_policy_says(tmp_path: Path) -> None:
    rec, slept = Recorder(), list[float]()
    rec.failures_left["a"] = 2
    rb = runbook("""
name: t
steps:
  - id: a
    action: test.flaky
    retry: {attempts: 3, wait: {exponential: {initial: 1, max: 30, jitter: 0}}, on: [TransientError]}
""")
    result = engine(tmp_path, rec, sleep=slept.append).execute(rb, {})
    assert result.state == "succeeded"
    assert rec.calls == [("a", 1), ("a", 2), ("a", 3)]
    assert slept == [1.0, 2.0]
    assert rec.kinds().count("item.retry") == 2


def test_fixed_wait_is_capped_by_attempts(tmp_path: Path) -> None:
    rec, slept = Recorder(), list[float]()
    rec.failures_left["a"] = 5
    rb = runbook("name: t\nsteps:\n  - {id: a, action: test.flaky, retry: {attempts: 3, wait: {fixed: 2}}}\n")
    result = engine(tmp_path, rec, sleep=slept.append).execute(rb, {})
    assert (result.state, slept) == ("failed", [2.0, 2.0])
    assert "a flaked" in result.error


def test_errors_not_named_in_retry_on_fail_at_once(tmp_path: Path) -> None:
    rec = Recorder()
    rb = runbook("name: t\nsteps:\n  - {id: a, action: test.fail, retry: {attempts: 5, on: [TransientError]}}\n")
    result = engine(tmp_path, rec).execute(rb, {})
    assert result.state == "failed"
    assert len(rec.calls) == 1


def test_timeout_fails_the_step_and_aborts_the_action(tmp_path: Path) -> None:
    rec = Recorder()
    rb = runbook("name: t\nsteps:\n  - {id: a, action: test.block, timeout: 0.05}\n")
    result = engine(tmp_path, rec).execute(rb, {})
    assert result.state == "failed"
    assert "timed out after 0.05 s" in result.error
    wait_until(lambda: rec.running == 0)  # the action saw ctx.abort and returned


def test_for_each_never_runs_more_items_at_once_than_its_concurrency(tmp_path: Path) -> None:
    rec = Recorder()
    rb = runbook("name: t\nsteps:\n  - {id: a, action: test.block, for_each: [1, 2, 3, 4, 5, 6], concurrency: 2}\n")
    eng = engine(tmp_path, rec)
    done = threading.Thread(target=eng.execute, args=(rb, {}))
    done.start()
    wait_until(lambda: rec.running == 2)
    threading.Event().wait(0.05)
    rec.release.set()
    done.join(5)
    assert rec.max_running == 2
    assert sorted(c[1] for c in rec.calls) == [1, 2, 3, 4, 5, 6]


def test_failed_item_stops_new_items_by_default(tmp_path: Path) -> None:
    rec = Recorder()
    rb = runbook("name: t\nsteps:\n  - {id: a, action: test.fail, for_each: [x, bad, y, z], with: {bad: [bad]}}\n")
    result = engine(tmp_path, rec).execute(rb, {})
    assert result.state == "failed"
    assert [c[1] for c in rec.calls] == ["x", "bad"]


def test_on_failure_continue_runs_other_items_and_later_steps(tmp_path: Path) -> None:
    rec = Recorder()
    rb = runbook("""
name: t
steps:
  - {id: a, action: test.fail, for_each: [x, bad, y], with: {bad: [bad]}, on_failure: continue}
  - {id: b, action: test.ok, with: {value: "{{ steps.a.failed | list }}"}}
""")
    result = engine(tmp_path, rec).execute(rb, {})
    assert result.state == "partial"
    assert ("b", ["bad"]) in rec.calls
    assert result.outputs["a"]["succeeded"] == ["x", "y"]


def test_rollbacks_of_reached_steps_run_in_reverse_order(tmp_path: Path) -> None:
    rec = Recorder()
    rb = runbook("""
name: t
steps:
  - {id: a, action: test.ok, rollback: [{id: undo_a, action: test.undo, with: {value: ua}}]}
  - {id: b, action: test.ok, rollback: [{id: undo_b, action: test.undo, with: {value: ub}}]}
  - {id: c, action: test.fail}
  - {id: d, action: test.ok, rollback: [{id: undo_d, action: test.undo, with: {value: ud}}]}
""")
    result = engine(tmp_path, rec).execute(rb, {})
    assert result.state == "failed"
    assert [c for c in rec.calls if c[0].startswith("undo")] == [("undo_b", "ub"), ("undo_a", "ua")]


def test_failure_handler_steps_run_and_the_job_still_fails(tmp_path: Path) -> None:
    rec = Recorder()
    rb = runbook("""
name: t
steps:
  - {id: a, action: test.fail, on_failure: [{id: tell, action: test.ok, with: {value: told}}]}
  - {id: b, action: test.ok}
""")
    result = engine(tmp_path, rec).execute(rb, {})
    assert result.state == "failed"
    assert [c[0] for c in rec.calls] == ["a", "tell"]


def test_cancel_aborts_in_flight_items_starts_no_more_and_rolls_back(tmp_path: Path) -> None:
    rec = Recorder()
    rb = runbook("""
name: t
steps:
  - {id: a, action: test.ok, rollback: [{id: undo_a, action: test.undo, with: {value: ua}}]}
  - {id: b, action: test.block, for_each: [1, 2, 3, 4], concurrency: 2}
  - {id: c, action: test.ok}
""")
    eng = engine(tmp_path, rec)
    job = Background(eng, rb)
    job_id = job.job_id
    wait_until(lambda: rec.running == 2)
    eng.cancel(job_id)
    assert job.result().state == "cancelled"
    assert [c[0] for c in rec.calls] == ["a", "undo_a"]
    assert "job.cancel_requested" in rec.kinds()


def test_cancel_from_another_process_is_seen_through_the_journal(tmp_path: Path) -> None:
    from evac.sqlitejournal import SqliteJournal

    rec = Recorder()
    rb = runbook("name: t\nsteps:\n  - {id: a, action: test.block}\n")
    eng = engine(tmp_path, rec)
    job = Background(eng, rb)
    job_id = job.job_id
    rec.entered.wait(5)
    SqliteJournal(tmp_path / "journal.db").request_cancel(job_id)
    assert job.result().state == "cancelled"


def test_dry_run_calls_plan_and_changes_nothing(tmp_path: Path) -> None:
    rec = Recorder()
    rb = runbook("name: t\nsteps:\n  - {id: a, action: test.ok, with: {value: v}}\n  - {id: b, action: test.fail}\n")
    result = engine(tmp_path, rec).execute(rb, {}, dry_run=True)
    assert rec.calls == []
    assert result.state == "succeeded"
    assert result.outputs["a"] == {"would": "v"}
    assert result.outputs["b"]["would_run"] == "test.fail"


def test_approval_gate_waits_for_an_approver(tmp_path: Path) -> None:
    rec = Recorder()
    rb = runbook("""
name: t
steps:
  - {id: a, action: test.ok, approval: {text: "Drain host3?", approvers: [U1]}}
""")
    eng = engine(tmp_path, rec)
    job_id = eng.submit(rb, {})
    worker = threading.Thread(target=eng.run, args=(job_id, rb))
    worker.start()
    wait_until(lambda: "approval.requested" in rec.kinds())
    assert rec.calls == []
    eng.journal.approve(job_id, "a", "U1")
    worker.join(5)
    assert rec.calls == [("a", None)]
    assert next(e for e in rec.events if e.kind == "approval.granted").data == {"by": "U1"}


def test_second_job_on_the_same_lock_is_refused_until_the_first_finishes(tmp_path: Path) -> None:
    rec = Recorder()
    rb = runbook(
        "name: t\nlock: 'host:{{ params.h }}'\nparams: {h: {type: string}}\nsteps:\n  - {id: a, action: test.ok}\n"
    )
    eng = engine(tmp_path, rec)
    first = eng.submit(rb, {"h": "host3"})
    with pytest.raises(LockedError, match=f"already running: job {first}"):
        eng.submit(rb, {"h": "host3"})
    eng.submit(rb, {"h": "host2"})
    eng.run(first, rb)
    eng.submit(rb, {"h": "host3"})


def test_finished_steps_and_items_are_not_run_again_on_resume(tmp_path: Path) -> None:
    rec = Recorder()
    rb = runbook("name: t\nsteps:\n  - {id: a, action: test.ok}\n  - {id: b, action: test.ok, for_each: [1, 2, 3]}\n")
    eng = engine(tmp_path, rec)
    job_id = eng.submit(rb, {})
    eng.journal.save_step(job_id, "a", StepState.SUCCEEDED, {"value": None})
    eng.journal.save_step(job_id, "b", StepState.RUNNING, {})
    eng.journal.save_item(job_id, "b", "1", ItemState.SUCCEEDED, {})
    eng.journal.save_item(job_id, "b", "2", ItemState.RUNNING, {})
    result = eng.run(job_id, rb)
    assert result.state == "succeeded"
    assert sorted(rec.calls) == [("b", 2), ("b", 3)]


def test_every_transition_is_an_event_in_order(tmp_path: Path) -> None:
    rec = Recorder()
    rb = runbook("name: t\nsteps:\n  - {id: a, action: test.ok, for_each: [1]}\n")
    result = engine(tmp_path, rec).execute(rb, {})
    assert rec.kinds() == [
        "job.started",
        "step.started",
        "step.items",
        "item.started",
        "item.finished",
        "step.finished",
        "job.finished",
    ]
    assert [e.kind for _, e in engine(tmp_path, rec).journal.events(result.job_id)] == rec.kinds()


def test_evac_run_step_wrappers_surround_every_call(tmp_path: Path) -> None:
    from evac import hookimpl

    seen: list[str] = []

    class Timing:
        @hookimpl(wrapper=True)
        def evac_run_step(self, ctx, action):  # type: ignore[no-untyped-def]
            seen.append(f"before {action.name} {ctx.item}")
            result = yield
            seen.append(f"after {action.name} {ctx.item}")
            return result

    rb = runbook("name: t\nsteps:\n  - {id: a, action: test.ok, for_each: [1, 2]}\n")
    engine(tmp_path, Recorder(), Timing()).execute(rb, {})
    assert sorted(seen) == ["after test.ok 1", "after test.ok 2", "before test.ok 1", "before test.ok 2"]


def test_a_plugin_may_take_over_evac_run_step_by_returning_a_result(tmp_path: Path) -> None:
    from evac import hookimpl

    class Canned:
        @hookimpl
        def evac_run_step(self, ctx, action):  # type: ignore[no-untyped-def]
            return {"canned": action.name}

    rec = Recorder()
    result = engine(tmp_path, rec, Canned()).execute(runbook("name: t\nsteps:\n  - {id: a, action: test.ok}\n"), {})
    assert result.outputs["a"] == {"canned": "test.ok"}
    assert rec.calls == []


def test_a_failing_evac_event_observer_never_stops_a_job(tmp_path: Path) -> None:
    from evac import hookimpl

    class Broken:
        @hookimpl
        def evac_event(self, event):  # type: ignore[no-untyped-def]
            raise RuntimeError("observer bug")

    result = engine(tmp_path, Recorder(), Broken()).execute(
        runbook("name: t\nsteps:\n  - {id: a, action: test.ok}\n"), {}
    )
    assert result.state == "succeeded"


def test_an_incomplete_action_fails_its_step_but_keeps_its_outputs(tmp_path: Path) -> None:
    from evac import Action, hookimpl
    from evac.errors import Incomplete

    class Reporter:
        @hookimpl
        def evac_actions(self):  # type: ignore[no-untyped-def]
            def run(ctx):  # type: ignore[no-untyped-def]
                raise Incomplete("2 guests left", {"rows": [1, 2]})

            return [Action("test.report", run)]

    rb = runbook("name: t\nsteps:\n  - {id: r, action: test.report, on_failure: continue}\n")
    result = engine(tmp_path, Reporter()).execute(rb, {})
    assert (result.state, result.outputs["r"]) == ("partial", {"rows": [1, 2]})


def test_shutdown_leaves_the_job_running_in_the_journal_without_rollback(tmp_path: Path) -> None:
    rec = Recorder()
    rb = runbook("""
name: t
steps:
  - {id: a, action: test.ok, rollback: [{id: undo_a, action: test.undo, with: {value: ua}}]}
  - {id: b, action: test.block, for_each: [1, 2, 3, 4], concurrency: 2}
""")
    eng = engine(tmp_path, rec)
    job = Background(eng, rb)
    job_id = job.job_id
    wait_until(lambda: rec.running == 2)
    eng.shutdown(abort_in_flight=True)
    assert job.result().state == "interrupted"
    assert eng.journal.job(job_id).state == "running"  # type: ignore[union-attr]
    assert ("undo_a", "ua") not in rec.calls
