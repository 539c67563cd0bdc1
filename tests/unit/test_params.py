"""``-p key=value``: values follow the parameter's declared type; one-line errors name the param."""

from __future__ import annotations

from typing import Any

import pytest

from evac.errors import ConfigError
from evac.params import parse_cli_params
from evac.runbook import bind_params
from evac.testing import runbook_from_text

RUNBOOK = runbook_from_text("""
name: t
params:
  hosts: {type: list}
  reason: {type: string}
  host: {type: host}
  count: {type: integer}
  ratio: {type: number}
  force: {type: boolean}
steps:
  - {id: a, action: notify.log, with: {text: hi}}
""")


@pytest.mark.parametrize(
    ("pair", "expected"),
    [
        ("hosts=[kvm1, kvm2]", ["kvm1", "kvm2"]),
        ("hosts=[]", []),
        ("reason=no", "no"),
        ("reason=off", "off"),
        ("reason=a=b, c", "a=b, c"),
        ("reason=", ""),
        ("host=kvm1", "kvm1"),
        ("count=12", 12),
        ("ratio=1.5", 1.5),
        ("force=yes", True),
        ("force=False", False),
    ],
)
def test_a_value_is_read_as_its_declared_type(pair: str, expected: Any) -> None:
    key = pair.partition("=")[0]
    assert parse_cli_params(RUNBOOK, [pair]) == {key: expected}


def test_a_string_param_keeps_yaml_boolean_words_as_text_through_binding() -> None:
    assert bind_params(RUNBOOK, parse_cli_params(RUNBOOK, ["reason=no"]))["reason"] == "no"


def test_a_list_param_given_twice_is_an_error_saying_how_to_pass_a_list() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^--param: 'hosts' is given twice \(a list parameter takes a YAML list: -p hosts='\[a, b\]'\)$",
    ):
        parse_cli_params(RUNBOOK, ["hosts=[a]", "hosts=[b]"])


def test_any_key_given_twice_is_an_error() -> None:
    with pytest.raises(ConfigError, match="^--param: 'count' is given twice$"):
        parse_cli_params(RUNBOOK, ["count=1", "count=2"])


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("hosts=a,b", "param 'hosts': expected a YAML list like -p hosts='[a, b]' (type list), got 'a,b'"),
        ("hosts=[a", "param 'hosts': invalid YAML list"),
        ("count=three", "param 'count': expected a whole number (type integer), got 'three'"),
        ("count=1.5", "param 'count': expected a whole number (type integer), got '1.5'"),
        ("ratio=fast", "param 'ratio': expected a number (type number), got 'fast'"),
        ("ratio=nan", "param 'ratio': expected a finite number (type number), got 'nan'"),
        ("force=maybe", "param 'force': expected true or false (type boolean), got 'maybe'"),
        ("count", "--param: expected KEY=VALUE, got 'count'"),
        ("=1", "--param: expected KEY=VALUE, got '=1'"),
    ],
)
def test_a_malformed_value_is_a_one_line_error_naming_the_param(pair: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_cli_params(RUNBOOK, [pair])
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_an_undeclared_key_is_left_for_bind_params_to_report() -> None:
    given = parse_cli_params(RUNBOOK, ["reasn=x"])
    with pytest.raises(ConfigError, match="unknown param 'reasn' \\(did you mean 'reason'\\?\\)"):
        bind_params(RUNBOOK, given)
