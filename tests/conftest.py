"""Shared test policy: under CI=true a missing real part fails the run; elsewhere it skips.

Every test under ``tests/integration`` carries the ``integration`` marker, so
``pytest -m integration`` runs the lab tests and ``pytest -m "not integration"`` the rest.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

# Hypothesis keeps no example database and caches nothing in the tree: the tests leave no
# file behind (CI checks it); its scratch space lives and dies with the session.
HYPOTHESIS_HOME = tempfile.TemporaryDirectory(prefix="evac-hypothesis-")
set_hypothesis_home_dir(HYPOTHESIS_HOME.name)
settings.register_profile("evac", database=None)
settings.load_profile("evac")

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
INTEGRATION = (Path(__file__).parent / "integration").resolve()


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m deselection looks at the markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under ``tests/integration`` (a ``pytestmark`` in a conftest marks nothing)."""
    for item in items:
        if item.path.resolve().is_relative_to(INTEGRATION):
            item.add_marker(pytest.mark.integration)


def require(condition: bool, why: str) -> None:
    """Fail under CI (a real part must be there), skip on a developer machine without it."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and a real part is missing: {why}", pytrace=False)
    pytest.skip(why)  # CI=true never reaches this line


def poll_until(predicate: Callable[[], object], timeout: float, what: str, every: float = 0.05) -> None:
    """Wait for ``predicate`` with a deadline (no fixed sleeps): fail naming ``what``."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        pause.wait(every)


def key_paths(value: Any, prefix: str = "") -> list[str]:
    """Every key path in a JSON value, in order (``/hosts[0]/checks``): what must not change
    between two runs of a command whose ``--json`` output is promised stable."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in [f"{prefix}/{k}", *key_paths(v, f"{prefix}/{k}")]]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in key_paths(v, f"{prefix}[{i}]")]
    return []


def http_get(port: int, path: str, token: str | None = None) -> tuple[int, bytes]:
    """GET ``path`` from an ``evac serve`` on loopback: the status and body, errors included."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
