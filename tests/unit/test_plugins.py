"""The plugin contract: registration, conflicts, blocking, and documented, tested hooks."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from evac import Action, FenceMethod, hookimpl, hookspecs
from evac.cli.plugins import plugin_rows
from evac.errors import ConfigError
from evac.plugins import collect_actions, error_classes, plugin_manager, runbook_dirs


class One:
    @hookimpl
    def evac_actions(self) -> list[Action]:
        return [Action("demo.hello", lambda ctx: {"hi": 1})]


class Two:
    @hookimpl
    def evac_actions(self) -> list[Action]:
        return [Action("demo.hello", lambda ctx: None)]


def test_two_plugins_registering_one_action_name_is_an_error_naming_both() -> None:
    pm = plugin_manager(load_entrypoints=False)
    pm.register(One(), name="one")
    pm.register(Two(), name="two")
    with pytest.raises(
        ConfigError, match="action 'demo.hello' is registered by two plugins: '(one|two)' and '(two|one)'"
    ):
        collect_actions(pm)


def test_action_names_must_be_area_dot_verb() -> None:
    with pytest.raises(ValueError, match="expected area.verb"):
        Action("Hello", lambda ctx: None)


def test_built_in_plugins_load_through_the_entry_point_group() -> None:
    pm = plugin_manager()
    assert pm.has_plugin("basics")
    assert "notify.log" in collect_actions(pm)


def test_a_blocked_plugin_is_not_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVAC_BLOCK_PLUGINS", "basics")
    pm = plugin_manager()
    assert not pm.has_plugin("basics")
    assert "notify.log" not in collect_actions(pm)


def test_modules_named_in_evac_plugins_are_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVAC_PLUGINS", "tests.unit.inline_plugin")
    assert "inline.ping" in collect_actions(plugin_manager(load_entrypoints=False))


def test_unimportable_plugin_module_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVAC_PLUGINS", "no_such_module_here")
    with pytest.raises(ConfigError, match="cannot import plugin module 'no_such_module_here'"):
        plugin_manager(load_entrypoints=False)


def test_plugin_error_classes_can_be_named_in_retry_on() -> None:
    class Busy(Exception):
        pass

    class Plugin:
        @hookimpl
        def evac_error_classes(self) -> dict[str, type[BaseException]]:
            return {"Busy": Busy}

    pm = plugin_manager(load_entrypoints=False)
    pm.register(Plugin())
    assert error_classes(pm)["Busy"] is Busy
    assert "TransientError" in error_classes(pm)


def test_core_runbooks_come_before_plugin_runbooks(tmp_path: Path) -> None:
    class Plugin:
        @hookimpl
        def evac_runbook_dirs(self) -> list[Path]:
            return [tmp_path]

    pm = plugin_manager(load_entrypoints=False)
    pm.register(Plugin())
    dirs = runbook_dirs(pm)
    assert dirs[-1] == tmp_path and dirs[0].name == "runbooks"


class HooksOnly:
    """A plugin with no actions: its row still says what it does."""

    @hookimpl
    def evac_fence_methods(self) -> list[FenceMethod]:
        return [FenceMethod("pdu", lambda host, settings: NotImplemented, required=("outlet",))]

    @hookimpl
    def evac_error_classes(self) -> dict[str, type[BaseException]]:
        return {"PduBusy": RuntimeError}

    @hookimpl
    def evac_config_sections(self) -> dict[str, Any]:
        return {"pdu": lambda data, source: data}

    @hookimpl
    def evac_event(self, event: Any) -> None:
        pass


def test_evac_plugins_rows_show_fence_methods_error_classes_config_sections_and_hooks() -> None:
    pm = plugin_manager(load_entrypoints=False)
    pm.register(HooksOnly(), name="pdu")
    rows = {row["plugin"]: row for row in plugin_rows(pm)}
    assert rows["pdu"] == {
        "plugin": "pdu",
        "actions": [],
        "fence_methods": ["pdu"],
        "error_classes": ["PduBusy"],
        "config_sections": ["pdu"],
        "hooks": ["evac_event"],
    }
    assert "TransientError" in rows["evac.core"]["error_classes"]


def test_evac_plugins_rows_of_an_actions_only_plugin_keep_their_two_keys() -> None:
    pm = plugin_manager(load_entrypoints=False)
    pm.register(One(), name="one")
    assert {"plugin": "one", "actions": ["demo.hello"]} in plugin_rows(pm)


def hook_names() -> list[str]:
    return [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("evac_")]


@pytest.mark.parametrize("hook", hook_names())
def test_every_hook_is_documented_with_an_example(hook: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert "Example::" in doc and "@hookimpl" in doc, f"{hook} needs a docstring with an example"
    assert hook in (Path(__file__).parents[2] / "docs" / "plugins.md").read_text(), (
        f"{hook} missing from docs/plugins.md"
    )


@pytest.mark.parametrize("hook", hook_names())
def test_every_hook_has_a_test(hook: str) -> None:
    tests = Path(__file__).parents[1]
    mentioned = (
        any(hook in path.read_text() for path in tests.rglob("*.py") if path.name != "test_plugins.py")
        or hook in Path(__file__).read_text().split("def hook_names")[0]
    )
    assert mentioned, f"no test exercises {hook}"
