"""A job whose evac process died is shown as orphaned wherever jobs are shown, not as
quietly 'running' forever."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from evac.cli import main
from evac.metrics import Metrics
from evac.sqlitejournal import SqliteJournal

DEAD_OWNER = f"{socket.gethostname()}:999999999:0"


def orphan(journal: SqliteJournal) -> int:
    job = journal.create_job("maintenance", "runbooks/maintenance.yaml", {"host": "host3"}, "host3", False, None)
    journal._db.execute("UPDATE jobs SET owner = ? WHERE id = ?", (DEAD_OWNER, job))  # as a SIGKILL leaves it
    return job


def test_a_running_job_of_a_dead_process_is_orphaned_and_one_of_this_process_is_not(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    mine = journal.create_job("maintenance", "x", {}, "host2", False, None)
    gone = orphan(journal)
    assert [(j.id, j.orphaned) for j in journal.unfinished_jobs()] == [(mine, False), (gone, True)]


def test_evac_status_marks_an_orphaned_job_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EVAC_JOURNAL", str(tmp_path / "j.db"))
    monkeypatch.setenv("EVAC_INVENTORY", str(tmp_path / "none.yaml"))
    monkeypatch.setenv("COLUMNS", "200")
    orphan(SqliteJournal(tmp_path / "j.db"))
    assert main(["status"]) == 0
    assert "orphaned: evac resume" in capsys.readouterr().out


def test_metrics_count_orphaned_jobs_at_each_scrape(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    metrics = Metrics()
    metrics.watch_journal(journal)
    assert b"evac_jobs_orphaned 0.0" in metrics.text()
    orphan(journal)
    assert b"evac_jobs_orphaned 1.0" in metrics.text()
