"""Any exception inside a step fails that step: the job ends, its lock is freed, rollback runs.

Before, a template that did not render (``when``, ``for_each``, ``concurrency``) or an
error in the engine's own step handling escaped the step: the job stayed ``running``
forever with its lock held, and nothing was rolled back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evac.engine import Engine
from evac.journal import ItemRecord, StepRecord
from evac.runbook import Runbook
from evac.sqlitejournal import SqliteJournal
from evac.states import JobState, StepState
from tests.unit.enginekit import Recorder, engine, runbook

HOST = {"host": "h1"}
LOCKED = """
name: t
params: {host: {type: string, default: h1}}
lock: "host:{{ params.host }}"
steps:
"""
UNDO_THEN = (
    LOCKED
    + """\
  - id: a
    action: test.ok
    with: {value: done}
    rollback:
      - {id: undo_a, action: test.undo, with: {value: undone}}
"""
)


def run_through_resume(eng: Engine, book: Runbook, params: dict[str, Any] | None = None) -> Any:
    """Run a job the way ``evac resume`` does: from the journal, without the submit checks.

    That is how a runbook edited after its job was submitted reaches the engine.
    """
    job_id = eng.journal.create_job(book.name, book.source, params or HOST, "", False, "host:h1")
    return eng.run(job_id, book)


def test_a_when_that_cannot_render_fails_the_job(tmp_path: Path) -> None:
    rb = runbook(LOCKED + "  - {id: a, action: test.ok}\n  - {id: b, action: test.ok, when: steps.a.nosuch}\n")
    result = engine(tmp_path, Recorder()).execute(rb, HOST)
    assert result.state == JobState.FAILED
    assert result.error.startswith("step 'b': when: undefined in template")


def test_a_failed_when_is_journaled_on_its_step_with_the_error(tmp_path: Path) -> None:
    rb = runbook(LOCKED + "  - {id: a, action: test.ok, when: params.nosuch}\n")
    eng = engine(tmp_path, Recorder())
    result = eng.execute(rb, HOST)
    step = eng.journal.step(result.job_id, "a")
    assert step is not None
    assert (step.state, "nosuch" in step.error) == (StepState.FAILED, True)


def test_a_when_naming_an_unknown_name_fails_a_resumed_job(tmp_path: Path) -> None:
    rb = runbook(LOCKED + "  - {id: a, action: test.ok, when: nosuch}\n")
    eng = engine(tmp_path, Recorder())
    result = run_through_resume(eng, rb)
    assert result.state == JobState.FAILED
    assert "'nosuch' is undefined" in result.error


def test_the_lock_of_a_job_failed_by_a_template_is_free_for_the_next_job(tmp_path: Path) -> None:
    rb = runbook(LOCKED + "  - {id: a, action: test.ok, when: params.nosuch}\n")
    eng = engine(tmp_path, Recorder())
    first = eng.execute(rb, HOST)
    second = eng.submit(rb, HOST)
    assert eng.journal.job(first.job_id).state == JobState.FAILED  # type: ignore[union-attr]
    assert second != first.job_id


def test_earlier_steps_are_rolled_back_when_a_later_when_fails(tmp_path: Path) -> None:
    rec = Recorder()
    rb = runbook(UNDO_THEN + "  - {id: b, action: test.ok, when: steps.a.nosuch}\n")
    engine(tmp_path, rec).execute(rb, HOST)
    assert rec.calls == [("a", "done"), ("undo_a", "undone")]


def test_a_for_each_that_cannot_render_fails_the_job_and_rolls_back(tmp_path: Path) -> None:
    rec = Recorder()
    rb = runbook(UNDO_THEN + "  - {id: b, action: test.ok, for_each: '{{ steps.a.nosuch }}'}\n")
    result = engine(tmp_path, rec).execute(rb, HOST)
    assert result.state == JobState.FAILED
    assert result.error.startswith("step 'b': for_each: undefined in template")
    assert ("undo_a", "undone") in rec.calls


def test_a_concurrency_that_cannot_render_fails_the_job_and_rolls_back(tmp_path: Path) -> None:
    rec = Recorder()
    rb = runbook(UNDO_THEN + "  - {id: b, action: test.ok, for_each: [x], concurrency: '{{ params.nosuch }}'}\n")
    result = engine(tmp_path, rec).execute(rb, HOST)
    assert result.state == JobState.FAILED
    assert result.error.startswith("step 'b': concurrency: undefined in template")
    assert ("undo_a", "undone") in rec.calls


def test_a_with_that_cannot_render_fails_the_step_naming_the_field(tmp_path: Path) -> None:
    rec = Recorder()
    rb = runbook(UNDO_THEN + "  - {id: b, action: test.ok, with: {value: '{{ steps.a.nosuch }}'}}\n")
    result = engine(tmp_path, rec).execute(rb, HOST)
    assert result.state == JobState.FAILED
    assert result.error.startswith("step 'b': with: undefined in template")
    assert ("undo_a", "undone") in rec.calls


def test_a_failed_when_under_on_failure_continue_leaves_the_job_partial(tmp_path: Path) -> None:
    rec = Recorder()
    rb = runbook(
        LOCKED + "  - {id: a, action: test.ok, when: nosuch, on_failure: continue}\n  - {id: b, action: test.ok}\n"
    )
    result = run_through_resume(engine(tmp_path, rec), rb)
    assert result.state == JobState.PARTIAL
    assert [call[0] for call in rec.calls] == ["b"]


def test_a_failed_when_runs_the_steps_failure_handlers(tmp_path: Path) -> None:
    rec = Recorder()
    rb = runbook(
        LOCKED + "  - id: a\n    action: test.ok\n    when: params.nosuch\n"
        "    on_failure:\n      - {id: tell, action: test.ok, with: {value: told}}\n"
    )
    result = engine(tmp_path, rec).execute(rb, HOST)
    assert result.state == JobState.FAILED
    assert rec.calls == [("tell", "told")]


class BrokenItemsJournal(SqliteJournal):
    """A journal whose item lookup breaks: an error in the engine's step handling, not an action."""

    def items(self, job_id: int, step: str) -> dict[str, ItemRecord]:
        raise RuntimeError("journal disk full")


def test_an_unexpected_error_in_step_handling_fails_the_job_and_frees_its_lock(tmp_path: Path) -> None:
    rec = Recorder()
    eng = engine(tmp_path, rec)
    eng.journal = BrokenItemsJournal(tmp_path / "broken.db")
    rb = runbook(UNDO_THEN + "  - {id: b, action: test.ok, for_each: [x]}\n")
    result = eng.execute(rb, HOST)
    assert (result.state, result.error) == (JobState.FAILED, "step 'b': RuntimeError: journal disk full")
    assert ("undo_a", "undone") in rec.calls
    assert eng.submit(rb, HOST) != result.job_id


def test_an_action_raising_a_non_evac_error_fails_the_step_with_its_type(tmp_path: Path) -> None:
    rb = runbook(LOCKED + "  - {id: a, action: test.fail}\n")
    result = engine(tmp_path, Recorder()).execute(rb, HOST)
    assert (result.state, result.error) == (JobState.FAILED, "step 'a': RuntimeError: a broke")


class BrokenStepLookupJournal(SqliteJournal):
    """A journal that cannot read step 'b' back: an error before the step itself starts."""

    def step(self, job_id: int, step: str) -> StepRecord | None:
        if step == "b":
            raise OSError("journal unreadable")
        return super().step(job_id, step)


def test_an_error_before_a_step_starts_fails_the_job_and_rolls_back(tmp_path: Path) -> None:
    rec = Recorder()
    eng = engine(tmp_path, rec)
    eng.journal = BrokenStepLookupJournal(tmp_path / "broken.db")
    result = eng.execute(runbook(UNDO_THEN + "  - {id: b, action: test.ok}\n"), HOST)
    assert (result.state, result.error) == (JobState.FAILED, "step 'b': OSError: journal unreadable")
    assert ("undo_a", "undone") in rec.calls
    assert eng.submit(runbook(UNDO_THEN), HOST) != result.job_id
