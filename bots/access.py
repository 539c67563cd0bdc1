"""Who may run which command: by Slack user ID, user-group membership and channel.

Never by display name: names can be changed by their owners. A command with no rule is
open for the read-only commands and closed for the rest.
"""

from __future__ import annotations

from collections.abc import Callable

from .config import READ_ONLY, Rule


def allowed(
    acl: dict[str, Rule], command: str, user: str, channel: str, groups_of: Callable[[str], set[str]]
) -> tuple[bool, str]:
    rule = acl.get(command)
    if rule is None:
        return (True, "") if command in READ_ONLY else (False, f"`{command}` has no access rule: nobody may run it yet")
    if rule.channels and channel not in rule.channels:
        return False, f"`{command}` is not allowed in this channel"
    if user in rule.users:
        return True, ""
    if rule.groups and groups_of(user) & rule.groups:
        return True, ""
    return False, f"you are not on the access list for `{command}`"
