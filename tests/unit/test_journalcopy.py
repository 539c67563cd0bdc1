"""evac journal copy: every record from one backend to the other, never under a live job."""

from __future__ import annotations

from pathlib import Path

import pytest

from evac.app import make_app
from evac.cli import main
from evac.errors import ConfigError
from evac.etcdclient import EtcdSettings
from evac.journalcopy import copy
from evac.sqlitejournal import SqliteJournal
from evac.states import HostMode, JobState
from tests.unit.conftest import open_controllers


@pytest.mark.parametrize(("source_backend", "target_backend"), [("sqlite", "etcd"), ("etcd", "sqlite")])
def test_copy_counts_what_it_moved(
    source_backend: str, target_backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    sources, targets = (open_controllers(b, request, tmp_path) for b in (source_backend, target_backend))
    try:
        source, target = sources.start(), targets.start()
        job_id = source.create_job("drain", "d.yaml", {}, "host2", False, None)
        source.audit("alice", "host.drain", "host2")
        source.finish_job(job_id, JobState.SUCCEEDED)
        assert copy(source, target) == {"job": 1, "audit": 1}
        assert [j.id for j in target.jobs()] == [job_id]
    finally:
        sources.close()
        targets.close()


@pytest.mark.parametrize("backend", ["sqlite", "etcd"])
def test_copy_refuses_while_a_live_process_runs_a_job(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    sources, targets = open_controllers(backend, request, tmp_path), open_controllers("sqlite", request, tmp_path)
    try:
        source = sources.start()
        job_id = source.create_job("drain", "d.yaml", {}, "host2", False, None)
        with pytest.raises(
            ConfigError,
            match=rf"^journal copy: job {job_id} \(.*\) still running in a live process: stop evac serve first",
        ):
            copy(source, targets.start())
        sources.kill(source)
        assert copy(source, targets.start()) == {"job": 1}
    finally:
        sources.close()
        targets.close()


def test_evac_journal_copy_grows_a_sqlite_install_into_an_etcd_one(
    etcd_settings: EtcdSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = SqliteJournal(tmp_path / "journal.db")
    job_id = old.create_job("maintenance", "m.yaml", {"host": "host2"}, "host2", False, "host:host2")
    old.finish_job(job_id, JobState.SUCCEEDED)
    old.set_host_state("host2", HostMode.MAINTENANCE, "kernel", "cli:alice")
    old.close()
    (endpoint,) = etcd_settings.endpoints
    url = endpoint.replace("http://", "etcd://")
    config = tmp_path / "evac.yaml"
    config.write_text(f"journal: {url}\netcd: {{prefix: '{etcd_settings.prefix}'}}\n")
    assert main(["--config", str(config), "journal", "copy", "--from", str(tmp_path / "journal.db"), "--to", url]) == 0
    assert "job" in capsys.readouterr().out
    app = make_app(config)
    try:
        assert [(j.id, j.state) for j in app.journal.jobs()] == [(job_id, JobState.SUCCEEDED)]
        assert app.journal.host_states()["host2"].reason == "kernel"
    finally:
        app.close()


def test_evac_journal_copy_names_a_missing_source_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["journal", "copy", "--from", str(tmp_path / "none.db"), "--to", str(tmp_path / "new.db")]) == 2
    assert (
        capsys.readouterr().err.strip() == f"evac: error: journal copy: --from {tmp_path}/none.db: no such journal file"
    )
