"""The plugin author's documentation keeps up with the code (a datasette-style meta-test)."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest

from evac import EventKind, hookspecs
from evac.cli import main

DOCS = Path(__file__).parents[2] / "docs"
PLUGINS_MD = (DOCS / "plugins.md").read_text()
RUNBOOKS_MD = (DOCS / "runbooks.md").read_text()


def event_table_kinds() -> set[str]:
    """The first column of the event payload table in docs/plugins.md."""
    section = PLUGINS_MD.split("#### Event kinds and their payloads", 1)[1].split("\n#", 1)[0]
    return set(re.findall(r"^\| `([a-z_.]+)` \|", section, flags=re.MULTILINE))


@pytest.mark.parametrize("kind", [k.value for k in EventKind])
def test_every_event_kind_has_a_row_in_the_payload_table(kind: str) -> None:
    assert kind in event_table_kinds(), f"docs/plugins.md: add a row for event kind '{kind}' to the payload table"


def test_the_payload_table_documents_no_kind_evac_does_not_emit() -> None:
    assert event_table_kinds() <= {k.value for k in EventKind}


@pytest.mark.parametrize(
    "hook", [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("evac_")]
)
def test_every_hookspec_is_in_the_hooks_table(hook: str) -> None:
    assert re.search(rf"^\| `{hook}\(", PLUGINS_MD, flags=re.MULTILINE), (
        f"docs/plugins.md: add {hook} to the hooks table"
    )


def test_every_name_the_public_api_exports_is_documented() -> None:
    import evac

    missing = [name for name in evac.__all__ if not name.startswith("_") and name not in PLUGINS_MD]
    assert not missing, f"docs/plugins.md, 'What a plugin may import': document {missing}"


@pytest.fixture
def plugins_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> list[dict[str, object]]:
    monkeypatch.setenv("EVAC_JOURNAL", str(tmp_path / "j.db"))
    monkeypatch.setenv("EVAC_INVENTORY", str(tmp_path / "none.yaml"))
    assert main(["plugins", "--json"]) == 0
    rows: list[dict[str, object]] = json.loads(capsys.readouterr().out)
    return rows


def test_evac_plugins_lists_the_error_classes_docs_runbooks_says_it_does(plugins_rows: list[dict[str, object]]) -> None:
    assert "(`evac plugins` errors plus `TransientError`" in RUNBOOKS_MD
    listed = {name for row in plugins_rows for name in row.get("error_classes", [])}  # type: ignore[attr-defined]
    named = set(re.findall(r"`([A-Z][A-Za-z]+(?:Error|Timeout|Unreachable|InUse))`", RUNBOOKS_MD))
    assert named and named <= listed


def test_evac_plugins_lists_the_actions_docs_runbooks_uses(plugins_rows: list[dict[str, object]]) -> None:
    listed = {name for row in plugins_rows for name in row["actions"]}  # type: ignore[attr-defined]
    used = set(re.findall(r"action: ([a-z_]+\.[a-z_]+)", RUNBOOKS_MD))
    assert used and used <= listed, f"docs/runbooks.md uses actions `evac plugins` does not list: {used - listed}"


def test_evac_plugins_lists_the_fence_methods_docs_plugins_names_as_built_in(
    plugins_rows: list[dict[str, object]],
) -> None:
    listed = {name for row in plugins_rows for name in row.get("fence_methods", [])}  # type: ignore[attr-defined]
    assert {"redfish", "agent", "ssh"} <= listed
