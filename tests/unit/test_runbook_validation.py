"""Broken runbooks: each gives one line naming file, line and field, and nothing runs."""

from __future__ import annotations

import pytest

from evac.errors import ConfigError
from evac.plugins import collect_actions, error_classes, plugin_manager
from evac.runbook import bind_params, check_runbook
from tests.unit.enginekit import Recorder, runbook

HEAD = "name: t\nsteps:\n"
BROKEN = [
    ("steps: []\n", "rb.yaml:1: name: required field missing"),
    ("name: T\nsteps: []\n", "rb.yaml:1: name: expected a lowercase name like 'maintenance', got 'T'"),
    ("name: t\nsteps: []\n", "rb.yaml:2: steps: at least one step is required"),
    ("name: t\nstep: []\n", "rb.yaml:2: step: unknown field (did you mean 'steps'?)"),
    (HEAD + "  - {action: test.ok}\n", "rb.yaml:3: steps[0].id: required: a lowercase identifier"),
    (
        HEAD + "  - {id: a, action: ok}\n",
        "rb.yaml:3: step 'a': action: required: an action name like 'vm.live_migrate'",
    ),
    (
        HEAD + "  - {id: a, action: test.ok}\n  - {id: a, action: test.ok}\n",
        "rb.yaml:4: steps[1].id: duplicate step id 'a'",
    ),
    (
        HEAD + "  - {id: a, action: test.ok, retrys: 3}\n",
        "rb.yaml:3: steps[0].retrys: unknown field (did you mean 'retry'?)",
    ),
    (
        HEAD + "  - id: a\n    action: test.ok\n    with: {x: '{{ params.h '}\n",
        "rb.yaml:5: step 'a': with.x: template error",
    ),
    (
        HEAD + "  - id: a\n    action: test.ok\n    retry: {attempts: 0}\n",
        "rb.yaml:5: step 'a': retry.attempts: expected 1 to 100, got 0",
    ),
    (
        HEAD + "  - id: a\n    action: test.ok\n    timeout: -1\n",
        "rb.yaml:5: step 'a': timeout: expected seconds > 0 and <= 604800, got -1",
    ),
    (
        HEAD + "  - id: a\n    action: test.ok\n    concurrency: 2\n",
        "rb.yaml:5: step 'a': concurrency: only meaningful with for_each",
    ),
    (
        HEAD + "  - id: a\n    action: test.ok\n    on_failure: retry\n",
        "rb.yaml:5: step 'a': on_failure: expected abort, continue or a list",
    ),
    (
        HEAD + "  - id: a\n    action: test.ok\n    approval: {approvers: [U1]}\n",
        "rb.yaml:5: step 'a': approval.text: required",
    ),
    (
        HEAD + "  - id: a\n    action: test.ok\n    retry: {wait: {linear: 1}}\n",
        "rb.yaml:5: step 'a': retry.wait.linear: unknown field",
    ),
    (
        "name: t\nparams:\n  h: {type: hots}\nsteps:\n  - {id: a, action: test.ok}\n",
        "rb.yaml:3: params.h.type: expected one of",
    ),
    (
        "name: t\nparams:\n  n: {type: integer, default: x}\nsteps:\n  - {id: a, action: test.ok}\n",
        "rb.yaml:3: params.n.default:",
    ),
    ("name: t\nsteps:\n  - {id: a, action: test.ok\n", "rb.yaml:4: invalid YAML"),
]


@pytest.mark.parametrize(("text", "message"), BROKEN, ids=[m.split(": ", 1)[1][:50] for _, m in BROKEN])
def test_broken_runbook_is_rejected_with_file_line_and_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        runbook(text)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def problems(text: str) -> list[str]:
    pm = plugin_manager(load_entrypoints=False)
    pm.register(Recorder())
    return [str(p) for p in check_runbook(runbook(text), collect_actions(pm), set(error_classes(pm)))]


def test_unknown_action_suggests_the_nearest_name() -> None:
    assert problems(HEAD + "  - {id: a, action: test.okk}\n") == [
        "rb.yaml:3: step 'a': action: unknown action 'test.okk' (did you mean 'test.ok'?)"
    ]


def test_input_the_action_does_not_take_is_named() -> None:
    assert problems(HEAD + "  - {id: a, action: test.undo, with: {valeu: 1}}\n") == [
        "rb.yaml:3: step 'a': with.valeu: 'test.undo' takes no input 'valeu' (did you mean 'value'?)"
    ]


def test_unknown_retry_error_class_is_named() -> None:
    assert problems(HEAD + "  - {id: a, action: test.ok, retry: {on: [TransientErorr]}}\n") == [
        "rb.yaml:3: step 'a': retry.on: unknown error class 'TransientErorr' (did you mean 'TransientError'?)"
    ]


def test_every_problem_is_reported_not_just_the_first() -> None:
    assert len(problems(HEAD + "  - {id: a, action: x.y}\n  - {id: b, action: y.z}\n")) == 2


PARAMS = "name: t\nparams:\n  host: {type: host, required: true}\n  n: {type: integer, default: 2}\nsteps:\n  - {id: a, action: test.ok}\n"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({}, "rb.yaml:3: param 'host' is required"),
        ({"host": "hots3"}, "param 'host': unknown host 'hots3' (did you mean 'host3'?)"),
        ({"host": "host3", "n": "two"}, "param 'n': invalid literal"),
        ({"host": "host3", "nn": "1"}, "rb.yaml: unknown param 'nn' (did you mean 'n'?)"),
    ],
)
def test_bad_parameters_are_rejected_before_anything_starts(given: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        bind_params(runbook(PARAMS), given, ["host1", "host2", "host3"])


def test_parameters_are_converted_to_their_types() -> None:
    assert bind_params(runbook(PARAMS), {"host": "host1", "n": "5"}, ["host1"]) == {"host": "host1", "n": 5}
