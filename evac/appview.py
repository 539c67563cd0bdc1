"""The application as plugins and the core's lower layers see it.

``evac.app.App`` assembles everything, so it imports nearly every module; a module it
imports must not import it back, not even for type hints. Actions (``ctx.app``), the
engine and hooks are typed against these small protocols instead, which ``App``
satisfies. This is also what a plugin may rely on of the application.
"""

from __future__ import annotations

from typing import Protocol

import pluggy

from .config import ServiceConfig
from .inventory import Inventory
from .journal import Journal


class AppView(Protocol):
    """What an action, a hook or a plugin service may use of the running application."""

    @property
    def pm(self) -> pluggy.PluginManager:
        """The plugin manager: every hook, for calling other plugins."""
        ...

    @property
    def journal(self) -> Journal:
        """Durable state: jobs, host states, snapshots, learned facts."""
        ...

    @property
    def inventory(self) -> Inventory:
        """The fleet as declared (``hosts.yaml``)."""
        ...

    @property
    def settings(self) -> ServiceConfig:
        """The parsed ``evac.yaml`` (or its defaults), plugins' own sections included."""
        ...


class ServicePart(Protocol):
    """A long-running part of ``evac serve`` that a plugin adds (``evac_services``).

    It may also have ``mounts() -> Mapping[str, ASGIApp]``: exact HTTP paths and the ASGI
    app that answers each (any method), served by ``evac serve``'s web server behind its
    deadlines and size limits (``evac.web``). Slack's HTTP mode mounts ``/slack/events``
    with slack-bolt's async Starlette handler, for example::

        def mounts(self) -> Mapping[str, ASGIApp]:
            return {"/slack/events": Route("/slack/events", self.handle, methods=["POST"])}

    ``ASGIApp`` is ``evac.web.ASGIApp`` (``starlette.types.ASGIApp``).
    """

    def start(self) -> None: ...
    def stop(self) -> None: ...
