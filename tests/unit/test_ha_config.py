"""The ``ha:`` section of evac.yaml, claimed by the guest-HA plugin: restart limits by
default and per tag, every bad value one line naming file:line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from evac.app import App
from evac.config import load_config
from evac.errors import ConfigError
from evac.plugins import plugin_manager
from evac.restartpolicy import HaSettings, RestartPolicy, TagRule
from evac_plugins import guestha
from tests.sections import plugin_manager_with, section_error, sections


def load(tmp_path: Path, text: str) -> HaSettings:
    return HaSettings.of(sections(tmp_path, text, guestha))


def error(tmp_path: Path, text: str) -> str:
    return section_error(tmp_path, text, guestha)


def test_the_section_sets_the_defaults_and_the_tags_overrides(tmp_path: Path) -> None:
    text = (
        "ha:\n  max_restart: 2\n  max_relocate: 0\n  window: 600\n  runbook: my-guest-failure\n"
        "  tags: {web: {max_restart: 3}, db: {window: 60, runbook: db-failure}}\n"
    )
    assert load(tmp_path, text) == HaSettings(
        policy=RestartPolicy(max_restart=2, max_relocate=0, window=600),
        runbook="my-guest-failure",
        tags={"web": TagRule(max_restart=3), "db": TagRule(window=60, runbook="db-failure")},
    )


def test_an_empty_section_is_the_defaults(tmp_path: Path) -> None:
    assert load(tmp_path, "ha:\n") == HaSettings()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ha:\n  max_restart: -1\n", "evac.yaml:2: ha.max_restart: expected a whole number >= 0, got -1"),
        ("ha:\n  max_relocate: yes\n", "evac.yaml:2: ha.max_relocate: expected a whole number >= 0, got True"),
        ("ha:\n  max_restart: 1.5\n", "evac.yaml:2: ha.max_restart: expected a whole number >= 0, got 1.5"),
        ("ha:\n  window: 0\n", "evac.yaml:2: ha.window: expected seconds > 0 and at most 604800 (a week), got 0"),
        ("ha:\n  window: .inf\n", "evac.yaml:2: ha.window: expected seconds > 0 and at most 604800 (a week), got inf"),
        ("ha:\n  window: 1h\n", "evac.yaml:2: ha.window: expected seconds > 0 and at most 604800 (a week), got '1h'"),
        ("ha:\n  runbook: ''\n", "evac.yaml:2: ha.runbook: expected the name of a registered runbook"),
        ("ha:\n  runbook: 3\n", "evac.yaml:2: ha.runbook: expected a string, got int 3"),
        ("ha:\n  max_restarts: 2\n", "evac.yaml:2: ha.max_restarts: unknown field (did you mean 'max_restart'?)"),
        ("ha:\n  tags: [web]\n", "evac.yaml:2: ha.tags: expected a mapping, got a list"),
        ("ha:\n  tags:\n    web: 3\n", "evac.yaml:3: ha.tags.web: expected a mapping, got int 3"),
        (
            "ha:\n  tags:\n    web:\n      max_restart: x\n",
            "evac.yaml:4: ha.tags.web.max_restart: expected a whole number >= 0, got 'x'",
        ),
        (
            "ha:\n  tags:\n    web: {windw: 5}\n",
            "evac.yaml:3: ha.tags.web.windw: unknown field (did you mean 'window'?)",
        ),
        ("ha:\n  tags:\n    web: {tags: {}}\n", "evac.yaml:3: ha.tags.web.tags: unknown field"),
        ("ha:\n  tags:\n    'web,db': {}\n", "evac.yaml:3: ha.tags.web,db: expected a tag as guests name it"),
    ],
)
def test_a_bad_value_is_one_line_naming_file_line_and_field(tmp_path: Path, text: str, message: str) -> None:
    assert error(tmp_path, text).startswith(message)


def test_a_section_that_is_not_a_mapping_is_refused_naming_its_line(tmp_path: Path) -> None:
    assert error(tmp_path, "journal: j.db\nha: on\n") == "evac.yaml:2: ha: expected a mapping, got bool True"


def test_without_the_plugin_the_section_is_unknown(tmp_path: Path) -> None:
    path = tmp_path / "evac.yaml"
    path.write_text("ha: {max_restart: 2}\n")
    with pytest.raises(ConfigError, match="evac.yaml:1: ha: unknown field"):
        load_config(path, plugin_manager(load_entrypoints=False, blocked=("guestha", "evac_plugins.guestha")))


def test_a_runbook_the_section_names_must_exist_when_the_service_starts(tmp_path: Path) -> None:
    path = tmp_path / "evac.yaml"
    path.write_text("ha:\n  tags: {web: {runbook: nosuch}}\n")
    pm = plugin_manager_with(guestha)
    app = App.from_config(load_config(path, pm), pm)
    with pytest.raises(ConfigError, match=r"evac.yaml: ha: unknown runbook 'nosuch'"):
        app.jobs.check()
