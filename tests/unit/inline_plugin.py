"""A plugin module loaded by name through EVAC_PLUGINS in tests."""

from evac import Action, hookimpl


@hookimpl
def evac_actions() -> list[Action]:
    return [Action("inline.ping", lambda ctx: {"pong": True})]
