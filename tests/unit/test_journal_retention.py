"""Retention: how long the journal keeps job events and the audit trail (docs/journal.md)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from evac import sqlitejournal
from evac.events import Event
from evac.retention import DAY, Retention, prune
from evac.sqlitejournal import SqliteJournal
from evac.states import EventKind, JobState

DOCS = (Path(__file__).parents[2] / "docs" / "journal.md").read_text()


def job_with_events(journal: SqliteJournal, target: str, finished: JobState | None, events: int = 3) -> int:
    job = journal.create_job("drain", "cli", {}, target, False, None)
    for n in range(events):
        journal.add_event(Event(EventKind.JOB_STARTED, job, message=f"event {n}", ts=time.time() - 400 * DAY))
    if finished is not None:
        journal.finish_job(job, finished)
    return job


def test_events_of_finished_jobs_go_after_the_cutoff_and_the_job_row_stays(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    done = job_with_events(journal, "kvm1", JobState.SUCCEEDED)
    assert journal.prune(events_before=time.time() + 1, audit_before=0) == (3, 0)
    assert journal.events(done) == []
    assert journal.job(done).state == JobState.SUCCEEDED  # type: ignore[union-attr]


def test_events_of_unfinished_jobs_are_never_pruned_however_old(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    running = job_with_events(journal, "kvm1", None)
    assert journal.prune(events_before=time.time() + 1, audit_before=0) == (0, 0)
    assert len(journal.events(running)) == 3


def test_a_job_keeps_all_its_events_until_it_finished_before_the_cutoff(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    recent = job_with_events(journal, "kvm1", JobState.FAILED)  # its events are old, but it finished just now
    assert journal.prune(events_before=time.time() - 3600, audit_before=0) == (0, 0)
    assert len(journal.events(recent)) == 3


def test_audit_rows_older_than_the_cutoff_go(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    for n in range(4):
        journal.audit("ops", "brake.release", f"fleet{n}")
    cutoff = time.time() + 1
    journal.audit("ops", "host.maintenance", "kvm1")
    journal._db.execute("UPDATE audit SET ts = ? WHERE action = 'host.maintenance'", (cutoff + 10,))
    assert journal.prune(events_before=0, audit_before=cutoff) == (0, 4)
    assert [a.action for a in journal.audit_log()] == ["host.maintenance"]


def test_prune_works_in_batches_so_it_never_holds_the_file_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlitejournal, "PRUNE_BATCH", 2)
    journal = SqliteJournal(tmp_path / "j.db")
    jobs = [job_with_events(journal, f"kvm{n}", JobState.SUCCEEDED) for n in range(3)]
    for _ in range(5):
        journal.audit("ops", "x", "y")
    assert journal.prune(events_before=time.time() + 1, audit_before=time.time() + 1) == (9, 5)
    assert all(journal.events(job) == [] for job in jobs)


def test_the_default_policy_keeps_events_30_days_and_audit_a_year() -> None:
    assert Retention().cutoffs(now=1000 * DAY) == (970 * DAY, 635 * DAY)


@pytest.mark.parametrize(
    "bad", [{"events_days": 0}, {"audit_days": -1}, {"every": float("nan")}, {"events_days": "30"}]
)
def test_a_retention_that_keeps_nothing_or_is_not_a_number_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        Retention(**bad)  # type: ignore[arg-type]


def test_prune_applies_the_policy_at_the_given_time(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    job = job_with_events(journal, "kvm1", JobState.SUCCEEDED)
    journal.audit("ops", "x", "y")
    assert prune(journal, Retention(events_days=30, audit_days=365), now=time.time() + 29 * DAY) == (0, 0)
    assert prune(journal, Retention(events_days=30, audit_days=365), now=time.time() + 31 * DAY) == (3, 0)
    assert prune(journal, Retention(events_days=30, audit_days=365), now=time.time() + 366 * DAY) == (0, 1)
    assert journal.job(job) is not None


def test_docs_give_the_default_retention() -> None:
    policy = Retention()
    assert re.search(rf"events\D+{policy.events_days:g} days", DOCS)
    assert re.search(rf"audit\D+{policy.audit_days:g} days", DOCS)
