"""``evac plugins``: what is loaded, and what each plugin provides.

Per plugin: the actions, fence methods, error classes (names a runbook's ``retry.on`` may
use) and ``evac.yaml`` sections it registers, and any other hooks it implements. In
``--json`` every row has ``plugin`` and ``actions``; the other keys (``fence_methods``,
``error_classes``, ``config_sections``, ``hooks``) appear when not empty.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from typing import Any, cast

import pluggy

from ..errors import ERROR_CLASSES
from ..fencing import registered_fence_methods
from ..plugins import registered_actions

CORE = "evac.core"
# Registration hooks whose results have their own key; ``hooks`` lists the rest.
SUMMARISED = ("evac_actions", "evac_fence_methods", "evac_error_classes", "evac_config_sections")
KEYS = ("actions", "fence_methods", "error_classes", "config_sections", "hooks")


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "plugins", help="loaded plugins: their actions, fence methods, error classes, config sections and hooks"
    )
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run)


def plugin_rows(pm: pluggy.PluginManager) -> list[dict[str, Any]]:
    """One row per loaded plugin, sorted by name (see the module docstring for the keys)."""
    found: dict[str, dict[str, list[str]]] = {}

    def row(plugin: str) -> dict[str, list[str]]:
        return found.setdefault(plugin, {key: [] for key in KEYS})

    for name, plugin in pm.list_name_plugin():
        if not name:
            continue
        hooks = row(name)["hooks"]
        hooks.extend(caller.name for caller in pm.get_hookcallers(plugin) or () if caller.name not in SUMMARISED)
    for plugin_name, action in registered_actions(pm):
        row(plugin_name)["actions"].append(action.name)
    for plugin_name, method in registered_fence_methods(pm):
        row(plugin_name)["fence_methods"].append(method.name)
    row(CORE)["error_classes"].extend(ERROR_CLASSES)
    for plugin_name, names in _impl_results(pm, "evac_error_classes"):
        row(plugin_name)["error_classes"].extend(names)
    for plugin_name, names in _impl_results(pm, "evac_config_sections"):
        row(plugin_name)["config_sections"].extend(names)
    rows = []
    for plugin_name, lists in sorted(found.items()):
        entry: dict[str, Any] = {"plugin": plugin_name, "actions": sorted(lists["actions"])}
        entry.update({key: sorted(set(lists[key])) for key in KEYS[1:] if lists[key]})
        rows.append(entry)
    return rows


def _impl_results(pm: pluggy.PluginManager, hook_name: str) -> Iterable[tuple[str, list[str]]]:
    """(plugin, names) from each implementation of a hook that returns a mapping by name."""
    caller = getattr(pm.hook, hook_name, None)
    if caller is None:
        return []
    return [
        (impl.plugin_name, [str(k) for k in cast("Mapping[str, Any] | None", impl.function()) or {}])
        for impl in caller.get_hookimpls()
    ]


def run(args: argparse.Namespace) -> int:
    from . import make_app
    from .output import print_json, print_table

    app = make_app(args)
    if app.inventory_path.exists():
        app.inventory  # noqa: B018 - registers the plugins the inventory opts into (the lab's fence)
    rows = plugin_rows(app.pm)
    if args.json:
        print_json(rows)
        return 0
    columns = ("plugin", "actions", "fence methods", "error classes", "config sections", "other hooks")
    print_table(
        "plugins",
        columns,
        ((r["plugin"], *(", ".join(r.get(key, ())) for key in KEYS)) for r in rows),
    )
    return 0
