"""A plugin module loaded by name through EVAC_PLUGINS in tests."""

from evac import Action, hookimpl


@hookimpl
def evac_actions() -> list[Action]:
    return [Action("inline.ping", lambda ctx: {"pong": True})]


@hookimpl
def evac_commands(subparsers):  # type: ignore[no-untyped-def]
    parser = subparsers.add_parser("hello", help="say hello")
    parser.set_defaults(func=lambda args: print("hello from a plugin") or 0)
