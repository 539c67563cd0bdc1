"""evac journal copy: every record from one backend to the other, never under a live job."""

from __future__ import annotations

from pathlib import Path

import pytest

from evac.errors import ConfigError
from evac.journalcopy import copy
from evac.states import JobState
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
