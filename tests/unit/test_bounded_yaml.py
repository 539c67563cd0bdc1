"""Hostile YAML ends in one line naming the file (and line), fast: never a hang or a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from evac.errors import ConfigError
from evac.params import parse_param_text
from evac.runbook import Param, load_runbook
from evac.yamldoc import load_file, load_text


def alias_bomb() -> str:
    """About 360 bytes that expand to 9**10 strings: "billion laughs"."""
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(9):
        name, prev = chr(98 + i), chr(97 + i)
        lines.append(f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]")
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(10)
def test_a_yaml_alias_bomb_is_refused_at_its_first_alias(tmp_path: Path) -> None:
    path = tmp_path / "rb.yaml"
    path.write_text(alias_bomb())
    assert len(alias_bomb()) < 700
    with pytest.raises(ConfigError, match=rf"^{path}:2: YAML aliases \(\*a\) are not allowed"):
        load_runbook(path)


def test_a_merge_key_is_an_alias_too() -> None:
    with pytest.raises(ConfigError, match=r"^f.yaml:2: YAML aliases \(\*x\) are not allowed"):
        load_text("a: &x {q: 1}\nb: {<<: *x}\n", "f.yaml")


def test_an_anchor_without_an_alias_is_harmless() -> None:
    assert load_text("a: &x 1\n", "f.yaml") == {"a": 1}


@pytest.mark.parametrize("text", ["[" * 5000 + "]" * 5000, "a:\n" + "".join("  " * i + "- \n" for i in range(1, 100))])
def test_deep_nesting_is_one_line_naming_the_line(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^f.yaml:\d+: nested deeper than 64 levels$"):
        load_text(text, "f.yaml")


def test_invalid_utf8_names_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yaml"
    path.write_bytes(b"a: 1\nb: \xff\xfe\n")
    with pytest.raises(ConfigError, match=rf"^{path}: not UTF-8 at byte 8$"):
        load_file(path)


def test_a_file_over_1_mib_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "evac.yaml"
    path.write_text("# " + "x" * 1024 * 1024 + "\n")
    with pytest.raises(ConfigError, match=rf"^{path}: larger than 1,048,576 bytes"):
        load_file(path)


def test_a_value_over_64_kib_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^f.yaml:2: a value of 70,000 characters; at most 65,536"):
        load_text("a: 1\nb: " + "x" * 70_000 + "\n", "f.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x: " + "1" * 5000, r"^f.yaml:1: invalid YAML: cannot read this value: Exceeds the limit"),
        ("x: 2001-13-45", r"^f.yaml:1: invalid YAML: cannot read this value: month must be in 1..12$"),
        ("a: 1\nx: \x00", r"^f.yaml:2: invalid YAML: character #x0000 is not allowed$"),
    ],
)
def test_values_python_cannot_build_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_text(text, "f.yaml")
    assert "\n" not in str(info.value)


def test_a_list_param_from_the_command_line_refuses_aliases() -> None:
    with pytest.raises(ConfigError, match=r"^param 'hosts': invalid YAML list \(YAML aliases \(\*a\) are not allowed"):
        parse_param_text(Param("hosts", "list"), "[&a [kvm1, kvm2], *a, *a]")
