"""The line-tracking YAML loader, and YAML 1.1 booleans where a string is expected."""

from __future__ import annotations

import pytest

from evac.errors import ConfigError
from evac.yamldoc import Mapping, Where, load_text

TEXT = """\
slack:
  mode: off
  answer: yes
  quoted: "off"
  name: bot
  port: 3
  empty:
"""


@pytest.fixture
def slack() -> Mapping:
    section = load_text(TEXT, "evac.yaml")["slack"]
    assert isinstance(section, Mapping)
    return section


@pytest.mark.parametrize(("key", "text", "reads"), [("mode", "off", "false"), ("answer", "yes", "true")])
def test_a_yaml_boolean_where_a_string_is_expected_says_to_quote_it(
    slack: Mapping, key: str, text: str, reads: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Where("evac.yaml").require_str(slack, key, f"slack.{key}")
    line = 2 if key == "mode" else 3
    assert (
        str(info.value)
        == f'evac.yaml:{line}: slack.{key}: expected a string; YAML reads {text} as {reads} — quote it: "{text}"'
    )


def test_a_quoted_word_is_a_string(slack: Mapping) -> None:
    assert Where("evac.yaml").require_str(slack, "quoted", "slack.quoted") == "off"


def test_a_missing_key_gives_the_default(slack: Mapping) -> None:
    where = Where("evac.yaml")
    assert where.require_str(slack, "nope", "slack.nope", "socket") == "socket"
    assert where.require_str(slack, "nope", "slack.nope") is None


@pytest.mark.parametrize(("key", "got"), [("port", "int 3"), ("empty", "nothing")])
def test_another_non_string_names_what_it_got(slack: Mapping, key: str, got: str) -> None:
    with pytest.raises(ConfigError, match=f"^evac.yaml:\\d: slack.{key}: expected a string, got {got}$"):
        Where("evac.yaml").require_str(slack, key, f"slack.{key}")


def test_the_loader_remembers_the_text_of_boolean_values_only(slack: Mapping) -> None:
    assert slack.bool_text("mode") == "off"
    assert slack.bool_text("quoted") is None
    assert slack.bool_text("name") is None


def test_keys_stay_text_even_when_yaml_would_read_a_boolean() -> None:
    assert list(load_text("on: 1\nno: 2\n", "x.yaml")) == ["on", "no"]
