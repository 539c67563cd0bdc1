"""Runbook validators match whole values: no trailing newline, no NaN, no runaway pattern."""

from __future__ import annotations

import json
from importlib import resources

import jsonschema
import pytest

from evac.errors import ConfigError
from evac.runbook import Param, bind_params, convert_param
from evac.yamldoc import load_text
from tests.unit.enginekit import runbook

HEAD = "name: t\nsteps:\n"
SCHEMA = json.loads(resources.files("evac").joinpath("schema/runbook.schema.json").read_text())


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ('  - {id: "a\\n", action: test.ok}\n', r"^rb.yaml:3: steps\[0\].id: required: a lowercase identifier"),
        ('  - {id: a, action: "test.ok\\n"}\n', r"^rb.yaml:3: step 'a': action: required: an action name"),
    ],
)
def test_a_trailing_newline_in_a_step_id_or_action_is_refused(step: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        runbook(HEAD + step)


def test_the_schema_refuses_a_trailing_newline_in_a_step_id_too() -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(load_text(HEAD + '  - {id: "a\\n", action: x.y}\n', "rb.yaml"), SCHEMA)
    jsonschema.validate(load_text(HEAD + "  - {id: a, action: x.y}\n", "rb.yaml"), SCHEMA)


def test_a_trailing_newline_in_the_runbook_name_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^rb.yaml:1: name: expected a lowercase name"):
        runbook('name: "t\\n"\nsteps:\n  - {id: a, action: test.ok}\n')


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("timeout: .nan", r"^rb.yaml:5: step 'a': timeout: expected seconds > 0 and <= 604800, got nan$"),
        ("timeout: .inf", r"^rb.yaml:5: step 'a': timeout: expected seconds > 0 and <= 604800, got inf$"),
        ("timeout: 1e300", r"^rb.yaml:5: step 'a': timeout: expected seconds > 0 and <= 604800"),
        ("retry: {wait: .nan}", r"^rb.yaml:5: step 'a': retry.wait: expected seconds >= 0 and <= 604800, got nan$"),
        ("retry: {wait: {fixed: .nan}}", r"^rb.yaml:5: step 'a': retry.wait.fixed: expected seconds >= 0"),
        (
            "retry: {wait: {exponential: {initial: 1, max: .inf}}}",
            r"^rb.yaml:5: step 'a': retry.wait.exponential.max: expected seconds >= 0 and <= 604800, got inf$",
        ),
    ],
)
def test_seconds_that_are_not_finite_are_refused(field: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        runbook(HEAD + f"  - id: a\n    action: test.ok\n    {field}\n")


@pytest.mark.parametrize("value", ["nan", "inf", float("nan"), float("-inf")])
def test_a_number_param_refuses_nan_and_infinity(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^param 'n': expected a finite number \(type number\)"):
        convert_param(Param("n", "number"), value)


def test_an_infinite_integer_param_is_a_one_line_error_not_an_overflow() -> None:
    with pytest.raises(ConfigError, match=r"^param 'n': expected a whole number \(type integer\), got inf"):
        convert_param(Param("n", "integer"), float("inf"))


def test_a_pattern_matches_the_whole_value_not_up_to_a_trailing_newline() -> None:
    with pytest.raises(ConfigError, match=r"does not match \[a-z\]\+\$"):
        convert_param(Param("h", pattern="[a-z]+$"), "kvm\n")


@pytest.mark.timeout(10)
def test_a_pattern_open_to_catastrophic_backtracking_fails_one_value_quickly() -> None:
    rb = runbook("name: t\nparams:\n  h: {pattern: '(a|aa)+'}\nsteps:\n  - {id: a, action: test.ok}\n")
    assert bind_params(rb, {"h": "aaaa"}) == {"h": "aaaa"}
    with pytest.raises(
        ConfigError, match=r"^param 'h': matching 'aaaa.*' against '\(a\|aa\)\+' took longer than 0.1 s"
    ):
        bind_params(rb, {"h": "a" * 60 + "!"})


def test_a_pattern_longer_than_1000_characters_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^rb.yaml:3: params.h.pattern: 1,001 characters; at most 1,000"):
        runbook(f"name: t\nparams:\n  h: {{pattern: '{'a' * 1001}'}}\nsteps:\n  - {{id: a, action: test.ok}}\n")


def test_a_pattern_that_is_not_text_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^rb.yaml:3: params.h.pattern: expected a regular expression as text"):
        runbook("name: t\nparams:\n  h: {pattern: [a]}\nsteps:\n  - {id: a, action: test.ok}\n")
