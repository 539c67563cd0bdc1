"""Runbooks from chat: ``/evac run RUNBOOK key=value …``, ``/evac return HOST`` and
``/evac rebalance``, each a preview first and a job only once someone confirms it.

The preview is the runbook's own dry run (``Jobs.preview``): the plan its plan step
made when it has one (the moves), else the steps it would run. Confirm starts the job
through the front door (``Jobs.start``) with what the preview stored on the server under
the button's token, never with what the button carries; when the plan has moved since,
the new plan is shown and must be confirmed again, as for ``/evacuate``.

Who may do it: ``/evac run`` by the runbook's own rule (``slack.acl.run.runbooks.NAME``),
``/evac return`` by the ``return`` rule and ``/evac rebalance`` by the ``rebalance``
rule, and a ``run`` rule for those runbooks grants neither command (nor the reverse): each
command is checked against its own rule only, when typed and again when confirmed.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from evac.engine import JobResult
from evac.errors import ConfigError, EvacError, LockedError
from evac.jobs import target_of
from evac.params import parse_param_text
from evac.rebalance import RUNBOOK as REBALANCE_RUNBOOK
from evac.rebalance import TARGET as REBALANCE_TARGET
from evac.returning import RUNBOOK as RETURN_RUNBOOK
from evac.runbook import Param, Runbook
from evac.states import JobState
from evac.yamldoc import shown, suggest

from . import blocks

if TYPE_CHECKING:
    from .slackapp import Bot

KIND = "run"  # how these previews are marked in the bot's preview store (a drain's have no kind)
PREVIEWABLE = (JobState.SUCCEEDED, JobState.PARTIAL)
WORD = re.compile(r'(?:[^\s"]+|"[^"]*")+')  # a word: runs of anything but space, double quotes grouping
CURLY = str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"'})  # Slack clients may curl quotes

Respond = Callable[..., Any]


@dataclass(frozen=True)
class RunRequest:
    """What a confirm starts: stored with the preview, re-read when the button is pressed."""

    rule: str  # the access rule a click must pass again: run, return or rebalance
    runbook: str
    given: dict[str, Any]
    target: str
    title: str  # "Run gated", "Return guests to host3", "Rebalance"
    user: str
    moves: tuple[tuple[str, str], ...] | None = None  # (guest, target) of the plan previewed; None: no plan


# ---------------------------------------------------------------- reading a command
def words_of(text: str) -> list[str]:
    """A command's words; double quotes group words with spaces (``reason="kernel update"``),
    single quotes are ordinary characters (``reason=don't``)."""
    text = text.translate(CURLY)
    if text.count('"') % 2:
        raise ConfigError('unbalanced quotes: close every " you open')
    return [word.replace('"', "") for word in WORD.findall(text)]


def parse_params(
    book: Runbook, words: Sequence[str], fixed: Mapping[str, Any] | None = None, supplied: Iterable[str] = ()
) -> dict[str, Any]:
    """``KEY=VALUE`` words as the runbook's typed params, with ``fixed`` (what the command
    itself names, such as the host of ``/evac return HOST``) given already. Unknown keys
    get the closest declared name; a required param nobody gives is an error unless it is
    ``supplied`` from elsewhere (the config's defaults for the runbook: ``Jobs.defaults``)."""
    declared = {p.name: p for p in book.params}
    takes = ", ".join(declared) or "no params"
    given: dict[str, Any] = dict(fixed or {})
    for word in words:
        key, sep, text = word.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected KEY=VALUE, got {shown(word, 60)}; `{book.name}` takes: {takes}")
        if key in given:
            raise ConfigError(f"param '{key}' is given twice")
        param = declared.get(key)
        if param is None:
            raise ConfigError(f"unknown param '{key}'{suggest(key, declared)}; `{book.name}` takes: {takes}")
        given[key] = _value(param, text)
    have = set(given) | set(supplied)
    missing = [p.name for p in book.params if p.required and p.default is None and p.name not in have]
    if missing:
        raise ConfigError(f"param '{missing[0]}' is required: add {' '.join(f'{m}=…' for m in missing)}")
    return given


def _value(param: Param, text: str) -> Any:
    """One param's text as its type; a list is ``a,b`` or a YAML flow list ``[a, b]``."""
    if param.type == "list" and not text.lstrip().startswith("["):
        return [part.strip() for part in text.split(",") if part.strip()]
    try:
        return parse_param_text(param, text)
    except ConfigError:
        if param.type != "list":
            raise
        expected = f"expected a list like {param.name}=a,b"
        raise ConfigError(f"param '{param.name}': {expected}, got {shown(text, 60)}") from None


# ---------------------------------------------------------------- reading a dry run
def plan_of(book: Runbook, result: JobResult) -> dict[str, Any] | None:
    """The output of the first step whose dry run planned moves, or None."""
    for step in book.steps:
        output = result.outputs.get(step.id)
        if isinstance(output, Mapping) and isinstance(output.get("moves"), list):
            return dict(output)
    return None


def steps_of(book: Runbook, result: JobResult) -> list[str]:
    """One line per main step of the dry run: what it would run, or why not."""
    lines = []
    for number, step in enumerate(book.steps, 1):
        output = result.outputs.get(step.id)
        line = f"{number}. `{step.id}` {step.action}"
        if not output and step.when is not None:
            line += " — skipped (`when` is false)"
        elif isinstance(output, Mapping) and isinstance(output.get("items"), Mapping):
            line += f" — for each of {len(output['items'])}"
        elif isinstance(output, Mapping) and isinstance(output.get("with"), Mapping) and output["with"]:
            inputs = ", ".join(f"{k}={_short(v)}" for k, v in output["with"].items())
            line += f" — {_short(inputs, 120)}"
        if step.approval:
            line += " — :raised_hand: waits for approval"
        lines.append(line)
    return lines


def moves_of(plan: Mapping[str, Any] | None) -> tuple[tuple[str, str], ...] | None:
    if plan is None:
        return None
    return tuple(sorted((str(m.get("guest")), str(m.get("target"))) for m in plan.get("moves", [])))


def _short(value: Any, limit: int = 40) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------- the commands
class Runs:
    """``/evac run``, ``/evac return`` and ``/evac rebalance`` on a :class:`Bot`: its
    access checks, its preview store (one store for every preview, so expiry and double
    clicks behave as for ``/evacuate``) and its front door."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    def permitted(self, user: str, channel: str) -> list[str]:
        """The registered runbooks ``user`` may run here, by name."""
        registered = self.bot.evac.runbook_paths()
        rules = self.bot.config.runbook_acl
        return [name for name in sorted(rules) if name in registered and self._may(name, user, channel)]

    def _may(self, runbook: str, user: str, channel: str) -> bool:
        from .access import may_run

        return may_run(self.bot.config.runbook_acl, runbook, user, channel, self.bot.groups_of)[0]

    def run(self, args: list[str], user: str, channel: str, respond: Respond) -> None:
        if not args:
            mine = self.permitted(user, channel)
            respond(
                response_type="ephemeral",
                text="Usage: `/evac run RUNBOOK [key=value …]`. "
                + (f"You may run: {', '.join(f'`{n}`' for n in mine)}" if mine else "You may run no runbook here."),
            )
            return
        name = args[0]
        evac = self.bot.evac
        if name not in evac.runbook_paths() and name not in self.bot.config.runbook_acl:
            mine = self.permitted(user, channel)
            known = f"You may run: {', '.join(f'`{n}`' for n in mine)}" if mine else "You may run no runbook here."
            respond(response_type="ephemeral", text=f"Unknown runbook `{_short(name)}`{suggest(name, mine)}. {known}")
            return
        if not self.bot.check_run(name, user, channel, respond, {"target": name, "text": " ".join(args)}):
            return
        try:
            book = evac.runbook(name)
            given = parse_params(book, args[1:], supplied=evac.jobs.defaults(book))
        except EvacError as exc:
            respond(response_type="ephemeral", text=f"`/evac run {name}`: {exc}")
            return
        target = target_of(book, given)
        title = f"Run {name}" + (f" on {target}" if target else "")
        self._offer(book, RunRequest("run", name, given, target, title, user), channel, respond)

    def return_host(self, args: list[str], user: str, channel: str, respond: Respond) -> None:
        if not args:
            respond(response_type="ephemeral", text="Usage: `/evac return HOST [key=value …]`")
            return
        host = self.bot.known_host(args[0], respond)
        if host is None:
            return
        try:
            book = self.bot.evac.runbook(RETURN_RUNBOOK)
            given = parse_params(book, args[1:], fixed={"host": host})
        except EvacError as exc:
            respond(response_type="ephemeral", text=f"`/evac return {host}`: {exc}")
            return
        request = RunRequest("return", RETURN_RUNBOOK, given, host, f"Return guests to {host}", user)
        self._offer(book, request, channel, respond)

    def rebalance(self, args: list[str], user: str, channel: str, respond: Respond) -> None:
        try:
            book = self.bot.evac.runbook(REBALANCE_RUNBOOK)
            given = parse_params(book, args)
        except EvacError as exc:
            respond(response_type="ephemeral", text=f"`/evac rebalance`: {exc}")
            return
        request = RunRequest("rebalance", REBALANCE_RUNBOOK, given, REBALANCE_TARGET, "Rebalance", user)
        self._offer(book, request, channel, respond)

    def _dry_run(self, request: RunRequest) -> tuple[JobResult | None, str]:
        """The request's dry run, or None and why it could not be made."""
        try:
            result = self.bot.evac.jobs.preview(request.runbook, request.given, request.target)
        except EvacError as exc:
            return None, str(exc)
        if result.state not in PREVIEWABLE:
            return None, result.error or f"its dry run ended {result.state}"
        return result, ""

    def _offer(self, book: Runbook, request: RunRequest, channel: str, respond: Respond) -> None:
        """Preview ``request`` in the channel with Confirm and Cancel; nothing starts yet."""
        result, why = self._dry_run(request)
        if result is None:
            respond(response_type="ephemeral", text=f"Cannot preview `{request.runbook}`: {why}")
            return
        plan = plan_of(book, result)
        request = replace(request, moves=moves_of(plan))
        token = secrets.token_hex(8)
        with self.bot.lock:
            self.bot.keep_preview(token, {"kind": KIND, "request": request})
        self.bot.bolt.client.chat_postMessage(
            channel=channel,
            text=f"{request.title}? (preview)",
            blocks=blocks.run_preview(request.title, book, request.given, plan, steps_of(book, result), token),
        )

    def _allowed(self, request: RunRequest, user: str, channel: str, respond: Respond, button: str) -> bool:
        detail = {"target": request.target or request.runbook, "button": button, "runbook": request.runbook}
        if request.rule == "run":
            return self.bot.check_run(request.runbook, user, channel, respond, detail)
        return self.bot.check(request.rule, user, channel, respond, detail)

    # ---------------------------------------------------------------- buttons
    def on_confirm(self, ack: Callable[..., Any], body: dict[str, Any], respond: Respond) -> None:
        ack()
        bot = self.bot
        user, channel = body["user"]["id"], body["channel"]["id"]
        token, stored = bot.pressed(body, KIND)
        if stored is not None and not self._allowed(stored["request"], user, channel, respond, "confirm"):
            return
        stored = bot.claim(token, KIND, respond, "This preview expired; run the command again.")
        if stored is None:
            return
        request: RunRequest = stored["request"]
        started = None
        try:  # whatever goes wrong before a job starts (Slack's API too) frees the token
            if request.moves is not None and self._replanned(request, token, channel, body, respond):
                return
            started = bot.evac.jobs.start(request.runbook, request.given, bot.actor(user), request.target)
        except LockedError as exc:
            respond(response_type="ephemeral", text=str(exc))
            return
        except EvacError as exc:
            respond(response_type="ephemeral", text=f"Not started: {exc}")
            return
        finally:
            if started is None:
                bot.release(token)
        bot.launch(started, channel, request.title, token=token)
        bot.bolt.client.chat_update(
            channel=channel,
            ts=body["message"]["ts"],
            text=f"{request.title}: confirmed by <@{user}>",
            blocks=[blocks.section(f"{request.title} (`{request.runbook}`) confirmed by <@{user}>; progress below.")],
        )

    def _replanned(self, request: RunRequest, token: str, channel: str, body: dict[str, Any], respond: Respond) -> bool:
        """Plan again; when the moves differ from the preview's, show the new plan under a
        new token and say so (True: nothing starts). The caller holds ``token`` as being started."""
        bot = self.bot
        book = bot.evac.runbook(request.runbook)
        result, why = self._dry_run(request)
        if result is None:
            raise EvacError(f"the plan could not be made again: {why}")
        plan = plan_of(book, result)
        if moves_of(plan) == request.moves:
            return False
        new = bot.renew(token, {"kind": KIND, "request": replace(request, moves=moves_of(plan))})
        bot.bolt.client.chat_update(
            channel=channel,
            ts=body["message"]["ts"],
            text=f"{request.title}? (plan changed)",
            blocks=blocks.run_preview(request.title, book, request.given, plan, steps_of(book, result), new),
        )
        respond(response_type="ephemeral", text=blocks.PLAN_CHANGED)
        return True

    def on_cancel(self, ack: Callable[..., Any], body: dict[str, Any], respond: Respond) -> None:
        ack()
        bot = self.bot
        user, channel = body["user"]["id"], body["channel"]["id"]
        token, stored = bot.pressed(body, KIND)
        if stored is not None and not self._allowed(stored["request"], user, channel, respond, "cancel preview"):
            return
        stored = bot.withdraw(token, KIND, respond)
        if stored is None:
            return
        request: RunRequest = stored["request"]
        target = request.target or request.runbook
        detail = {"channel": channel, "runbook": request.runbook}
        bot.evac.journal.audit(str(bot.actor(user)), "preview.cancel", target, detail)
        bot.bolt.client.chat_update(
            channel=channel,
            ts=body["message"]["ts"],
            text=f"{request.title}: not started",
            blocks=[blocks.section(f"{request.title} (`{request.runbook}`) not started (<@{user}>).")],
        )
