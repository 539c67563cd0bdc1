"""A third-party plugin package, really installed, is loaded through its entry point."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

FIXTURES = Path(__file__).parents[1] / "fixtures"
FIXTURE = FIXTURES / "evac-hello"


def tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def test_installed_plugin_package_is_loaded_through_its_entry_point(tmp_path: Path) -> None:
    before = tree(FIXTURES)
    source = shutil.copytree(FIXTURE, tmp_path / "evac-hello")  # pip builds in the tree it is given
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    assert tree(FIXTURES) == before, "the build left files in tests/fixtures"
    env = {**os.environ, "PYTHONPATH": str(target), "EVAC_JOURNAL": str(tmp_path / "j.db")}
    listing = subprocess.run(
        [sys.executable, "-m", "evac", "plugins", "--json"], env=env, capture_output=True, text=True, check=True
    )
    assert {"plugin": "hello", "actions": ["hello.greet"]} in json.loads(listing.stdout)
    runbook = tmp_path / "hi.yaml"
    runbook.write_text("name: hi\nsteps:\n  - {id: greet, action: hello.greet, with: {who: ops}}\n")
    run = subprocess.run(
        [sys.executable, "-m", "evac", "run", str(runbook), "--json"], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["steps"]["greet"] == {"greeted": "ops"}
