"""The pluggy markers. Plugins write ``from evac import hookimpl``."""

from __future__ import annotations

import pluggy

NAME = "evac"
hookspec = pluggy.HookspecMarker(NAME)
hookimpl = pluggy.HookimplMarker(NAME)
