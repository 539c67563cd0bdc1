"""The plugin manager: built-in and third-party plugins load the same way.

Plugins come from the ``evac`` entry-point group (built-ins included), plus modules
named in ``$EVAC_PLUGINS`` (comma-separated import names, like ``pytest -p``). A plugin
is blocked by its name through ``$EVAC_BLOCK_PLUGINS`` or the ``blocked`` argument.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import weakref
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, cast

import pluggy

from . import hookspecs
from .actions import Action, StepContext
from .errors import ERROR_CLASSES, ConfigError
from .events import Event
from .hooks import NAME, hookimpl
from .registry import by_name

log = logging.getLogger("evac.plugins")
# Observers that already failed, per plugin manager: the first failure is logged with its
# traceback, later ones at debug level, so one broken observer cannot flood the log.
_failed_observers: weakref.WeakKeyDictionary[pluggy.PluginManager, set[str]] = weakref.WeakKeyDictionary()
_failed_lock = threading.Lock()


class CoreStep:
    """The innermost ``evac_run_step``: run the action, or plan it in a dry run."""

    @hookimpl(trylast=True)
    def evac_run_step(self, ctx: StepContext, action: Action) -> Mapping[str, Any] | None:
        if ctx.dry_run:
            planned = action.plan(ctx) if action.plan else {"would_run": action.name, "with": ctx.inputs}
            return planned if isinstance(planned, Mapping) else {"plan": planned}
        return action.run(ctx) or {}

    @hookimpl
    def evac_runbook_dirs(self) -> list[Path]:
        return [Path(str(resources.files("evac.runbooks")))]


def plugin_manager(
    load_entrypoints: bool = True,
    blocked: Iterable[str] = (),
    modules: Iterable[str] = (),
) -> pluggy.PluginManager:
    """A ready plugin manager. Tests pass ``load_entrypoints=False`` and register inline plugins."""
    pm = pluggy.PluginManager(NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(CoreStep(), name="evac.core")
    env_blocked = [b.strip() for b in os.environ.get("EVAC_BLOCK_PLUGINS", "").split(",") if b.strip()]
    for name in [*blocked, *env_blocked]:
        pm.set_blocked(name)
    if load_entrypoints:
        pm.load_setuptools_entrypoints(NAME)
    env_modules = [m.strip() for m in os.environ.get("EVAC_PLUGINS", "").split(",") if m.strip()]
    for module_name in [*modules, *env_modules]:
        if pm.is_blocked(module_name) or pm.has_plugin(module_name):
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"EVAC_PLUGINS: cannot import plugin module '{module_name}': {exc}") from None
        pm.register(module, name=module_name)
    return pm


def registered_actions(pm: pluggy.PluginManager) -> list[tuple[str, Action]]:
    """(plugin name, action) for every registration, duplicates included."""
    pairs: list[tuple[str, Action]] = []
    for impl in reversed(pm.hook.evac_actions.get_hookimpls()):
        actions = cast("Iterable[Action] | None", impl.function())
        pairs.extend((impl.plugin_name, action) for action in actions or ())
    return pairs


def collect_actions(pm: pluggy.PluginManager) -> dict[str, Action]:
    """Every registered action by name; a name registered twice is an error naming both plugins."""
    return by_name("action", registered_actions(pm))


def error_classes(pm: pluggy.PluginManager) -> dict[str, type[BaseException]]:
    classes: dict[str, type[BaseException]] = dict(ERROR_CLASSES)
    for extra in pm.hook.evac_error_classes():
        classes.update(extra)
    return classes


def runbook_dirs(pm: pluggy.PluginManager) -> list[Path]:
    dirs: list[Path] = []
    for found in reversed(pm.hook.evac_runbook_dirs()):
        dirs.extend(found)
    return dirs


def notify(pm: pluggy.PluginManager, event: Event) -> None:
    """Deliver ``event`` to every ``evac_event`` observer, each on its own.

    A plain hook call stops at the first observer that raises, so the Slack bot would miss
    events because a metrics plugin broke. Here each failure is logged (once per plugin)
    and the others still get the event. Observers run in pluggy's order (``tryfirst``,
    then last registered first); a wrapper impl of ``evac_event`` is not supported.
    """
    arguments = {"event": event}
    for impl in reversed(pm.hook.evac_event.get_hookimpls()):
        if impl.hookwrapper or impl.wrapper:
            continue
        try:
            # the way pluggy calls an impl: it may take fewer arguments than the spec names
            keywords = {name: arguments[name] for name in impl.kwargnames if name in arguments}
            impl.function(*(arguments[name] for name in impl.argnames), **keywords)
        except Exception:
            with _failed_lock:
                seen = _failed_observers.setdefault(pm, set())
                first = impl.plugin_name not in seen
                seen.add(impl.plugin_name)
            if first:
                log.exception(
                    "evac_event observer '%s' failed on %s (further failures of it are logged at debug level)",
                    impl.plugin_name,
                    event.kind,
                )
            else:
                log.debug("evac_event observer '%s' failed on %s", impl.plugin_name, event.kind, exc_info=True)
