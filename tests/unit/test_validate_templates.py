"""Every template and ``when`` is compiled before a run: unknown names are named with file:line.

Known names are those the engine renders with: ``params``, ``steps``, ``job``, and ``item``
in the ``with`` of a step that has ``for_each``; a ``lock`` sees ``params`` and ``target``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from evac.cli import main
from evac.errors import ConfigError
from evac.plugins import collect_actions, error_classes, plugin_manager
from evac.runbook import check_runbook, load_runbook
from tests.unit.enginekit import Recorder, engine, runbook

RUNBOOKS = sorted((Path(__file__).parents[2] / "runbooks").glob("*.yaml"))
HEAD = "name: t\nsteps:\n"


def problems(text: str) -> list[str]:
    pm = plugin_manager(load_entrypoints=False)
    pm.register(Recorder())
    return [str(p) for p in check_runbook(runbook(text), collect_actions(pm), set(error_classes(pm)))]


@pytest.mark.parametrize("path", RUNBOOKS, ids=[p.name for p in RUNBOOKS])
def test_shipped_runbooks_validate_clean(path: Path) -> None:
    pm = plugin_manager()
    assert check_runbook(load_runbook(path), collect_actions(pm), set(error_classes(pm))) == []


def test_unknown_name_in_when_is_reported_with_file_line_and_known_names() -> None:
    text = HEAD + "  - id: drain\n    action: test.ok\n    when: nosuch\n"
    assert problems(text) == ["rb.yaml:5: step 'drain': when: unknown name 'nosuch' (known: params, steps, job)"]


def test_misspelt_name_suggests_the_known_one() -> None:
    text = HEAD + "  - id: a\n    action: test.ok\n    with:\n      value: '{{ parms.host }}'\n"
    assert problems(text) == [
        "rb.yaml:6: step 'a': with.value: unknown name 'parms' (did you mean 'params'?) (known: params, steps, job)"
    ]


@pytest.mark.parametrize(
    ("field", "line"),
    [
        ("for_each: '{{ nosuch }}'", "rb.yaml:5: step 'a': for_each: unknown name 'nosuch'"),
        ("for_each: [x]\n    concurrency: '{{ nosuch }}'", "rb.yaml:6: step 'a': concurrency: unknown name 'nosuch'"),
        ("on_failure:\n      - {id: h, action: test.ok, when: nosuch}", "rb.yaml:6: step 'h': when: unknown name"),
        ("rollback:\n      - {id: r, action: test.ok, when: nosuch}", "rb.yaml:6: step 'r': when: unknown name"),
    ],
)
def test_names_are_checked_in_every_templated_field_and_nested_step(field: str, line: str) -> None:
    (problem,) = problems(HEAD + f"  - id: a\n    action: test.ok\n    {field}\n")
    assert problem.startswith(line)


def test_item_is_known_in_the_with_of_a_for_each_step() -> None:
    assert problems(HEAD + "  - {id: a, action: test.ok, for_each: [x], with: {value: '{{ item }}'}}\n") == []


def test_item_outside_a_for_each_step_is_unknown() -> None:
    (problem,) = problems(HEAD + "  - {id: a, action: test.ok, with: {value: '{{ item }}'}}\n")
    assert "unknown name 'item'" in problem
    assert "only in the 'with' of a step with for_each" in problem


def test_jinja_builtins_and_names_a_template_sets_are_not_unknown() -> None:
    value = "{% set n = 2 %}{% for i in range(n) %}{{ i }}{{ loop.index }}{% endfor %}{{ params | length }}"
    assert problems(HEAD + f"  - {{id: a, action: test.ok, with: {{value: '{value}'}}}}\n") == []


def test_lock_sees_params_and_target_only() -> None:
    text = "name: t\nlock: 'host:{{ target }}:{{ job.id }}'\nsteps:\n  - {id: a, action: test.ok}\n"
    assert problems(text) == ["rb.yaml:2: lock: unknown name 'job' (known: params, target)"]


def test_when_that_does_not_parse_is_rejected_with_its_line() -> None:
    with pytest.raises(ConfigError, match=r"^rb\.yaml:3: step 'a': when: template error"):
        runbook(HEAD + "  - {id: a, action: test.ok, when: '1 >'}\n")


def test_submit_refuses_a_runbook_with_an_unknown_name_before_a_job_exists(tmp_path: Path) -> None:
    eng = engine(tmp_path, Recorder())
    with pytest.raises(ConfigError, match="unknown name 'nosuch'"):
        eng.submit(runbook(HEAD + "  - {id: a, action: test.ok, when: nosuch}\n"), {})
    assert eng.journal.jobs() == []


def test_validate_command_lists_unknown_names_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVAC_JOURNAL", str(tmp_path / "j.db"))
    monkeypatch.setenv("EVAC_INVENTORY", str(tmp_path / "none.yaml"))
    path = tmp_path / "x.yaml"
    path.write_text(HEAD + "  - {id: a, action: notify.log, when: nosuch, with: {text: '{{ parms.x }}'}}\n")
    assert main(["runbook", "validate", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{path}:3: step 'a': when: unknown name 'nosuch' (known: params, steps, job)",
        f"{path}:3: step 'a': with.text: unknown name 'parms' (did you mean 'params'?) (known: params, steps, job)",
    ]


def test_validate_command_accepts_the_shipped_runbooks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVAC_JOURNAL", str(tmp_path / "j.db"))
    monkeypatch.setenv("EVAC_INVENTORY", str(tmp_path / "none.yaml"))
    assert main(["runbook", "validate", *map(str, RUNBOOKS)]) == 0
    assert f"{len(RUNBOOKS)} runbook(s) valid" in capsys.readouterr().out
