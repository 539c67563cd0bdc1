"""Loading a plugin's own ``evac.yaml`` section in unit tests, as ``evac config check`` would."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy
import pytest

from evac.config import load_config
from evac.errors import ConfigError
from evac.plugins import plugin_manager


def plugin_manager_with(plugin: ModuleType) -> pluggy.PluginManager:
    pm = plugin_manager(load_entrypoints=False)
    if not pm.is_registered(plugin):  # $EVAC_PLUGINS may name it
        pm.register(plugin)
    return pm


def sections(tmp_path: Path, text: str, plugin: ModuleType) -> dict[str, Any]:
    """The parsed plugin sections of ``text`` written as ``evac.yaml``, with ``plugin`` loaded."""
    pm = plugin_manager_with(plugin)
    path = tmp_path / "evac.yaml"
    path.write_text(text)
    return dict(load_config(path, pm).sections)


def section_error(tmp_path: Path, text: str, plugin: ModuleType) -> str:
    """The one-line error ``text`` gets, its path made relative to ``tmp_path``."""
    with pytest.raises(ConfigError) as info:
        sections(tmp_path, text, plugin)
    message = str(info.value).replace(f"{tmp_path}/", "")
    assert "\n" not in message
    return message
