"""``-m integration`` selects the lab tests and ``-m "not integration"`` everything else.

Collection only (``--collect-only``): no fixture runs, so no lab is started.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def collected(marker: str, where: str) -> list[str]:
    """The test ids ``pytest -m marker where`` would run."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", marker, where],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode in (0, 5), result.stdout + result.stderr  # 5: nothing selected
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_every_integration_test_is_selected_by_the_integration_marker() -> None:
    selected = collected("integration", "tests/integration")
    assert selected
    assert all(test.startswith("tests/integration/") for test in selected)


def test_not_integration_deselects_every_integration_test() -> None:
    assert collected("not integration", "tests/integration") == []


def test_unit_tests_do_not_carry_the_integration_marker() -> None:
    here = str(Path(__file__).relative_to(ROOT))
    assert collected("integration", here) == []
    assert collected("not integration", here)
