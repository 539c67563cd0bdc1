"""Who may run which command: by Slack user ID, user-group membership and channel.

Never by display name: names can be changed by their owners. A command with no rule is
open for the read-only commands and closed for the rest; a runbook with no rule of its
own (``slack.acl.run.runbooks``) cannot be run from Slack at all, whatever it is called.
"""

from __future__ import annotations

from collections.abc import Callable

from .config import READ_ONLY, Rule

GroupsOf = Callable[[str], set[str]]


def allowed(acl: dict[str, Rule], command: str, user: str, channel: str, groups_of: GroupsOf) -> tuple[bool, str]:
    rule = acl.get(command)
    if rule is None:
        return (True, "") if command in READ_ONLY else (False, f"`{command}` has no access rule: nobody may run it yet")
    return matches(rule, f"`{command}`", user, channel, groups_of)


def may_run(acl: dict[str, Rule], runbook: str, user: str, channel: str, groups_of: GroupsOf) -> tuple[bool, str]:
    """May ``user`` run ``runbook`` with ``/evac run`` here? Only by that runbook's own rule."""
    rule = acl.get(runbook)
    if rule is None:
        return False, f"runbook `{runbook}` has no access rule: nobody may run it from Slack yet"
    return matches(rule, f"runbook `{runbook}`", user, channel, groups_of)


def matches(rule: Rule, what: str, user: str, channel: str, groups_of: GroupsOf) -> tuple[bool, str]:
    """Whether ``rule`` lets ``user`` act in ``channel``, and why not (naming ``what``)."""
    if rule.channels and channel not in rule.channels:
        return False, f"{what} is not allowed in this channel"
    if user in rule.users:
        return True, ""
    if rule.groups and groups_of(user) & rule.groups:
        return True, ""
    return False, f"you are not on the access list for {what}"
