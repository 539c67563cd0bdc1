"""Dependency floors exclude versions with published vulnerabilities (docs/SECURITY.md)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

DEPENDENCIES = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["dependencies"]


@pytest.mark.parametrize(
    ("floor", "why"),
    [
        ("jinja2>=3.1.6", "sandbox escapes CVE-2024-56326, CVE-2025-27516"),
        ("paramiko>=3.4", "Terrapin, CVE-2023-48795"),
        ("h11>=0.16", "request smuggling, CVE-2025-43859"),
    ],
)
def test_no_version_with_a_known_hole_is_admitted(floor: str, why: str) -> None:
    assert floor in [d.split("#")[0].strip() for d in DEPENDENCIES], f"pyproject.toml must say {floor}: {why}"
