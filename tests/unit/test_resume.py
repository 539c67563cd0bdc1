"""A controller killed with SIGKILL mid-step: `evac resume` finishes the job, no effect twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import poll_until

ROOT = Path(__file__).parents[2]

RUNBOOK = """
name: effects
params: {dir: {type: string, required: true}}
steps:
  - id: first
    action: effect.count
    with: {calls: "{{ params.dir }}/calls.log"}
  - id: apply
    action: effect.append
    for_each: [a, b, c, d, e, f]
    with: {path: "{{ params.dir }}/effects.log", calls: "{{ params.dir }}/calls.log", line: "{{ item }}", delay: 0.15}
  - id: last
    action: effect.count
    with: {calls: "{{ params.dir }}/calls.log"}
"""


def evac(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "EVAC_PLUGINS": "tests.unit.sideeffect_plugin", "EVAC_JOURNAL": str(tmp_path / "j.db")}
    return subprocess.Popen(
        [sys.executable, "-m", "evac", *args],
        env=env,
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_job_killed_mid_step_is_resumed_to_completion_without_repeating_effects(tmp_path: Path) -> None:
    (tmp_path / "effects.yaml").write_text(RUNBOOK)
    victim = evac(tmp_path, "run", str(tmp_path / "effects.yaml"), "-p", f"dir={tmp_path}", "--json")
    effects = tmp_path / "effects.log"
    poll_until(
        lambda: victim.poll() is not None or (effects.exists() and len(effects.read_text().splitlines()) >= 2),
        30,
        "the job to get going",
        every=0.01,
    )
    assert victim.poll() is None, "the job ended before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()

    resumed = evac(tmp_path, "resume", "--json")
    out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    assert json.loads(out)[0]["state"] == "succeeded"
    assert sorted(effects.read_text().splitlines()) == ["a", "b", "c", "d", "e", "f"]
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls.count("count first") == 1  # finished before the kill: not run again
    assert calls.count("count last") == 1


def test_resume_with_nothing_unfinished_says_so(tmp_path: Path) -> None:
    out, _ = evac(tmp_path, "resume").communicate(timeout=30)
    assert "nothing to resume" in out
