"""The slack-bolt app: ``/evacuate`` and ``/evac``, buttons, access control and audit.

Every listener acks at once and works afterwards on the bot's thread pool, so Slack never
waits 3 s: in Socket Mode bolt's sync app runs it there; in HTTP mode the async app of
``endpoint.py`` acks on the event loop and hands the same listener to the pool. Jobs are
started, cancelled and approved only through the core's front door (``app.jobs``), so
Slack obeys the same rules as every other channel; the bot adds what is Slack's own: who
may press what (user IDs, user groups, channels), the plan preview and the progress
messages. The core never imports it.

Every button re-checks access when pressed, and what a button starts comes from state
on the server (a preview stored here under its token, for ``slack.preview_seconds``; the
journal's record of a failover whose fence failed), never from the button's value, which
anyone can forge.

``/evac run``, ``/evac return`` and ``/evac rebalance`` (a runbook's preview, then a job)
live in ``runs.py``; ``/evac ha`` in ``ha.py``.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from slack_bolt import App as BoltApp
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from evac.app import App
from evac.doctor import DoctorRun, Result, diagnose, registered_checks, table_rows
from evac.errors import ConfigError, EvacError, LockedError
from evac.fleet import snapshot
from evac.jobs import Actor, Channel, Started
from evac.journal import JobRecord
from evac.states import EventKind, ItemState, JobState, StepState
from evac.stormbrake import release_held
from evac.yamldoc import suggest

from . import blocks
from .access import allowed, may_run
from .config import SlackConfig, check_runbooks
from .ha import READ_ONLY_HA, ha_reply
from .progress import SlackProgress
from .runs import Runs, words_of

log = logging.getLogger("evac.slack")
HELP_LINES = (  # (the rule that shows it, the line): help lists only what the asker may run
    ("evacuate", "`/evacuate HOST [reason]` — plan a drain, then confirm it"),
    ("status", "`/evac status [JOB]` — running jobs, or one job"),
    ("cancel", "`/evac cancel JOB` — cancel a job (it rolls back)"),
    ("hosts", "`/evac hosts` — hosts, their state and guests"),
    ("brake", "`/evac brake [release]` — the storm brake; release it so failover resumes"),
    ("doctor", "`/evac doctor [HOST]` — check hosts are safe to automate (starts short-lived probe guests)"),
    ("run", "`/evac run RUNBOOK [key=value …]` — preview a runbook, then confirm it; yours:"),
    ("return", "`/evac return HOST [key=value …]` — bring back the guests HOST's last drain moved off it"),
    ("rebalance", "`/evac rebalance [key=value …]` — even out the hosts' load within every rule"),
    ("status", "`/evac ha [status]` — HA armed or disarmed: since when, by whom and why"),
    ("status", "`/evac ha capacity` — how many host failures the fleet absorbs, and whether `ha.reserve` holds"),
    ("ha", "`/evac ha disarm [reason]`, `/evac ha arm` — stop or resume automatic failover and guest restarts"),
    ("help", "`/evac help` — this text"),
)
QUOTED = ("run", "return", "rebalance")  # commands whose words may be "quoted with spaces"
DRAIN = "drain"  # the kind of an /evacuate preview in the store (runs.KIND marks the others)
RESULT_EMOJI = {
    Result.PASS: ":white_check_mark:",
    Result.WARN: ":warning:",
    Result.FAIL: ":x:",
    Result.SKIP: ":heavy_minus_sign:",
}
EVIDENCE_CHARS = 300  # a doctor row's evidence is cut here (the journal keeps all of it)
FIX_CHARS = 400
MESSAGE_BLOCKS = 50  # Slack's limit of blocks in one message
GROUP_EVENTS = ("subteam_members_changed", "subteam_updated")  # a group's members changed: ask again


class Bot:
    """Slack front end of one evac application."""

    def __init__(
        self,
        evac: App,
        config: SlackConfig,
        client: WebClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_runbooks(config, evac.runbook_paths())  # before anything starts: a typo is found now
        self.evac = evac
        self.config = config
        self.clock = clock
        self.executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="slack-listener")
        self.bolt = BoltApp(
            listener_executor=self.executor,
            token=config.bot_token,
            signing_secret=config.signing_secret or None,
            client=client,
            request_verification_enabled=config.mode == "http",
            token_verification_enabled=client is None,
        )
        self.progress = SlackProgress(self.bolt.client, config.alerts_channel)
        evac.pm.register(self.progress, name="evac.slack.progress")
        self.previews: dict[str, dict[str, Any]] = {}  # token -> a drain (host, reason, plan) or a run (runs.py)
        self.started: dict[str, int] = {}  # preview token -> job, so a second click starts nothing
        self.expires: dict[str, float] = {}  # preview token -> when it can no longer be confirmed
        self.lock = threading.Lock()
        self._groups: dict[str, set[str]] | None = None  # user -> user groups, as of _groups_at
        self._groups_at = 0.0
        self._groups_generation = 0  # counts forget_groups: an answer asked for before one is not cached
        self._groups_lock = threading.Lock()
        self.runs = Runs(self)
        self._register()

    # ---------------------------------------------------------------- plumbing
    def listeners(self) -> list[tuple[str, str, Callable[..., None]]]:
        """What the bot answers, as ``(kind, name, listener)``: kind is the bolt method
        (``command``, ``action``, ``event``) and name what it matches. The one table both
        apps register: the sync one here (Socket Mode) and the async one of HTTP mode
        (``endpoint.SlackEndpoint``), which runs these same listeners on ``executor``."""
        return [
            ("command", "/evacuate", self._on_evacuate),
            ("command", "/evac", self._on_evac),
            ("action", "evac_confirm", self._on_confirm),
            ("action", "evac_cancel_preview", self._on_cancel_preview),
            ("action", "evac_cancel_job", self._on_cancel_job),
            ("action", "evac_fence_manual", self._on_fence_manual),
            ("action", "evac_approve", self._on_approve),
            ("action", "evac_run_confirm", self.runs.on_confirm),
            ("action", "evac_run_cancel", self.runs.on_cancel),
            *(("event", event, self._on_groups_changed) for event in GROUP_EVENTS),
        ]

    def _register(self) -> None:
        for kind, name, listener in self.listeners():
            getattr(self.bolt, kind)(name)(listener)

    @staticmethod
    def actor(user: str) -> Actor:
        return Actor(Channel.SLACK, user)

    def groups_of(self, user: str) -> set[str]:
        """The user groups a user belongs to (usergroups.list with users), cached for
        ``slack.group_cache_seconds`` and dropped at once when Slack says a group changed.

        Slack is asked outside the lock, so one slow call holds up no other listener; two
        listeners may both ask, which is harmless. An answer is cached only if no group
        changed while it was on its way (it could predate the change)."""
        with self._groups_lock:
            if self._groups is not None and self.clock() - self._groups_at < self.config.group_cache_seconds:
                return set(self._groups.get(user, set()))
            generation = self._groups_generation
        asked = self.clock()
        try:
            response = self.bolt.client.usergroups_list(include_users=True)
        except SlackApiError as exc:
            log.warning("usergroups.list failed: %s; group rules match nobody", exc.response.get("error"))
            return set()
        members: dict[str, set[str]] = {}
        groups: list[dict[str, Any]] = response.get("usergroups", [])
        for group in groups:
            for member in group.get("users", []):
                members.setdefault(member, set()).add(group["id"])
        with self._groups_lock:
            if generation == self._groups_generation:
                self._groups, self._groups_at = members, asked
        return set(members.get(user, set()))

    @property
    def groups_cached(self) -> bool:
        """Whether memberships are held now (False: the next check asks Slack)."""
        with self._groups_lock:
            return self._groups is not None

    def forget_groups(self) -> None:
        """Drop the cached memberships: the next check asks Slack."""
        with self._groups_lock:
            self._groups = None
            self._groups_generation += 1

    def _on_groups_changed(self, event: dict[str, Any]) -> None:
        log.info("slack %s: user groups are looked up again", event.get("type"))
        self.forget_groups()

    def check(self, command: str, user: str, channel: str, respond: Callable[..., Any], detail: dict[str, Any]) -> bool:
        """May ``user`` run ``command`` here? A refusal is audited (``COMMAND.refused``) and
        answered; what an allowed user then does is audited by the front door that does it."""
        ok, why = allowed(self.config.acl, command, user, channel, self.groups_of)
        if not ok:
            self._refuse(command, f"slack.acl.{command}", why, user, channel, respond, detail)
        return ok

    def check_run(
        self, runbook: str, user: str, channel: str, respond: Callable[..., Any], detail: dict[str, Any]
    ) -> bool:
        """May ``user`` run ``runbook`` here (``/evac run``)? By that runbook's rule alone; a
        refusal is audited as ``run.refused`` and answered."""
        ok, why = may_run(self.config.runbook_acl, runbook, user, channel, self.groups_of)
        if not ok:
            detail = {**detail, "runbook": runbook}
            self._refuse("run", f"slack.acl.run.runbooks.{runbook}", why, user, channel, respond, detail)
        return ok

    def _refuse(
        self,
        command: str,
        rule: str,
        why: str,
        user: str,
        channel: str,
        respond: Callable[..., Any],
        detail: dict[str, Any],
    ) -> None:
        self.evac.journal.audit(
            str(self.actor(user)),
            f"{command}.refused",
            str(detail.get("target", "")),
            {**detail, "channel": channel, "why": why},
        )
        respond(response_type="ephemeral", text=f"Sorry, {why}. Ask an evac admin to add your Slack ID to `{rule}`.")

    def known_host(self, name: str, respond: Callable[..., Any]) -> str | None:
        names = [h.name for h in self.evac.inventory.hosts]
        if name in names:
            return name
        close = suggest(name, names).strip()
        respond(response_type="ephemeral", text=f"Unknown host `{name}`. {close or 'Known: ' + ', '.join(names)}")
        return None

    def launch(self, started: Started, channel: str, title: str, token: str = "") -> int:
        """Follow a job the front door started: its progress message here, then run it. The
        preview a ``token`` names is done with: a second click answers with this job."""
        if token:
            with self.lock:
                self.started[token] = started.job
                self.previews.pop(token, None)
        try:
            self.progress.track(started.job, channel, title)
        except SlackApiError as exc:  # the job is recorded: it runs whether or not Slack shows it
            log.warning("job %s: no progress message: %s", started.job, exc.response.get("error"))
        self.evac.jobs.spawn(started)
        return started.job

    def close(self) -> None:
        """Finish in-flight listeners, then stop posting progress. Jobs keep running: who
        owns the app waits for them (``app.jobs.join``)."""
        self.executor.shutdown(wait=True)
        self.progress.stop()

    # ---------------------------------------------------------------- /evacuate
    def _on_evacuate(self, ack: Callable[..., Any], command: dict[str, Any], respond: Callable[..., Any]) -> None:
        ack()
        words = (command.get("text") or "").split()
        user, channel = command["user_id"], command["channel_id"]
        if not words:
            respond(response_type="ephemeral", text="Usage: `/evacuate HOST [reason]`")
            return
        host = self.known_host(words[0], respond)
        if host is None or not self.check(
            "evacuate", user, channel, respond, {"target": host, "text": command.get("text")}
        ):
            return
        reason = " ".join(words[1:]) or f"requested by <@{user}>"
        try:
            plan = self.evac.jobs.preview_drain(host)
        except EvacError as exc:
            respond(response_type="ephemeral", text=f"Cannot plan a drain of {host}: {exc}")
            return
        token = secrets.token_hex(8)
        with self.lock:
            self.keep_preview(token, {"host": host, "reason": reason, "plan": plan, "user": user})
        self.bolt.client.chat_postMessage(
            channel=channel, text=f"Drain {host}? (preview)", blocks=blocks.preview(host, reason, plan, token)
        )

    def keep_preview(self, token: str, preview: dict[str, Any]) -> None:
        """Store a preview for ``slack.preview_seconds`` (the caller holds the lock)."""
        self.drop_expired()
        self.previews[token] = preview
        self.expires[token] = self.clock() + self.config.preview_seconds

    def drop_expired(self) -> None:
        """Forget previews past their time, and which job their token started (the caller
        holds the lock). A token whose job is being started now stays until it has one."""
        now = self.clock()
        for token in [t for t, at in self.expires.items() if now >= at and self.started.get(t) != 0]:
            del self.expires[token]
            self.previews.pop(token, None)
            self.started.pop(token, None)

    def pressed(self, body: dict[str, Any], kind: str = DRAIN) -> tuple[str, dict[str, Any] | None]:
        """The token a preview button carries, and the preview of ``kind`` stored under it
        (None: gone, expired, or another kind's: a drain's button cannot confirm a run)."""
        token = _token(body["actions"][0].get("value") or "")
        with self.lock:
            self.drop_expired()
            return token, self.stored(token, kind)

    def stored(self, token: str, kind: str = DRAIN) -> dict[str, Any] | None:
        """The preview of ``kind`` stored under ``token`` (the caller holds the lock)."""
        preview = self.previews.get(token)
        return preview if preview is not None and preview.get("kind", DRAIN) == kind else None

    def claim(self, token: str, kind: str, respond: Callable[..., Any], expired: str) -> dict[str, Any] | None:
        """Mark the preview of ``kind`` under ``token`` as being started and return it, so a
        second click starts nothing; None, answered, when it started already or is gone.
        The claimer calls :meth:`release` unless a job started (``launch`` records it)."""
        with self.lock:
            self.drop_expired()
            if token in self.started:
                job = self.started[token]
                text = f"Already started: job {job}" if job else "Already being started"
                respond(response_type="ephemeral", text=text)
                return None
            preview = self.stored(token, kind)
            if preview is None:
                respond(response_type="ephemeral", text=expired)
                return None
            self.started[token] = 0
        return preview

    def release(self, token: str) -> None:
        """A claimed token whose job did not start: it may be confirmed again."""
        with self.lock:
            self.started.pop(token, None)

    def renew(self, token: str, preview: dict[str, Any]) -> str:
        """The plan moved since the preview: forget ``token``, keep ``preview`` under a new
        token (returned) for the new preview message."""
        with self.lock:
            self.started.pop(token, None)
            self.previews.pop(token, None)
            new = secrets.token_hex(8)
            self.keep_preview(new, preview)
        return new

    def withdraw(self, token: str, kind: str, respond: Callable[..., Any]) -> dict[str, Any] | None:
        """Cancel the preview of ``kind`` under ``token``: it, forgotten; None, answered, when
        its job started (or is starting) or it is gone."""
        with self.lock:
            self.drop_expired()
            job = self.started.get(token)
            preview = None if job is not None else self.stored(token, kind)
            if preview is not None:
                self.previews.pop(token, None)
        if job is not None:
            text = f"Already started: job {job}; cancel the job instead." if job else "Already being started."
            respond(response_type="ephemeral", text=text)
            return None
        if preview is None:
            respond(response_type="ephemeral", text="This preview is gone already.")
        return preview

    def _on_confirm(self, ack: Callable[..., Any], body: dict[str, Any], respond: Callable[..., Any]) -> None:
        ack()
        user, channel = body["user"]["id"], body["channel"]["id"]
        token, preview = self.pressed(body)
        target = preview["host"] if preview else ""
        if not self.check("evacuate", user, channel, respond, {"target": target, "button": "confirm"}):
            return
        preview = self.claim(token, DRAIN, respond, "This preview expired; run `/evacuate` again.")
        if preview is None:
            return
        host, reason = str(preview["host"]), str(preview["reason"])
        started = None
        try:  # whatever goes wrong before a job starts (Slack's API too) frees the token
            fresh = self.evac.jobs.preview_drain(host)
            if _moves(fresh) != _moves(preview["plan"]):
                new = self.renew(token, {**preview, "plan": fresh})
                self.bolt.client.chat_update(
                    channel=channel,
                    ts=body["message"]["ts"],
                    text=f"Drain {host}? (plan changed)",
                    blocks=blocks.preview(host, reason, fresh, new),
                )
                respond(response_type="ephemeral", text=blocks.PLAN_CHANGED)
                return
            started = self.evac.jobs.evacuate(host, self.actor(user), reason)
        except LockedError as exc:
            respond(response_type="ephemeral", text=str(exc))
            return
        except EvacError as exc:
            respond(response_type="ephemeral", text=f"Not started: {exc}")
            return
        finally:
            if started is None:
                self.release(token)
        what = "Drain" if started.runbook.name == self.evac.settings.runbooks.drain else "Failover"
        self.launch(started, channel, f"{what} {host}", token=token)
        note = f"\n:warning: {started.note}" if started.note else ""
        self.bolt.client.chat_update(
            channel=channel,
            ts=body["message"]["ts"],
            text=f"{what} {host}: confirmed by <@{user}>",
            blocks=[blocks.section(f"{what} of *{host}* confirmed by <@{user}>; progress below.{note}")],
        )

    def _on_cancel_preview(self, ack: Callable[..., Any], body: dict[str, Any], respond: Callable[..., Any]) -> None:
        ack()
        user, channel = body["user"]["id"], body["channel"]["id"]
        token, preview = self.pressed(body)
        target = preview["host"] if preview else ""
        if not self.check("evacuate", user, channel, respond, {"target": target, "button": "cancel preview"}):
            return
        preview = self.withdraw(token, DRAIN, respond)
        if preview is None:
            return
        self.evac.journal.audit(str(self.actor(user)), "preview.cancel", preview["host"], {"channel": channel})
        self.bolt.client.chat_update(
            channel=channel,
            ts=body["message"]["ts"],
            text="Drain not started",
            blocks=[blocks.section(f"Drain of *{preview['host']}* not started (<@{user}>).")],
        )

    # ---------------------------------------------------------------- /evac
    def _on_evac(self, ack: Callable[..., Any], command: dict[str, Any], respond: Callable[..., Any]) -> None:
        ack()
        text = command.get("text") or ""
        parts = text.split(maxsplit=1) or ["help"]
        verb, tail = parts[0], parts[1] if len(parts) > 1 else ""
        user, channel = command["user_id"], command["channel_id"]
        handlers: dict[str, Callable[[list[str], str, str, Callable[..., Any]], None]] = {
            "status": self._status,
            "cancel": self._cancel,
            "hosts": self._hosts,
            "brake": self._brake,
            "doctor": self._doctor,
            "run": self.runs.run,
            "return": self.runs.return_host,
            "rebalance": self.runs.rebalance,
            "ha": self._ha,
            "help": self._help,
        }
        handler = handlers.get(verb)
        if handler is None:
            shown = verb if len(verb) <= 40 else verb[:39] + "…"
            respond(
                response_type="ephemeral",
                text=f"Unknown command `{shown}`{suggest(verb, handlers)}.\n{self.help_text(user, channel)}",
            )
            return
        try:
            rest = words_of(tail) if verb in QUOTED else tail.split()
        except ConfigError as exc:
            respond(response_type="ephemeral", text=f"`/evac {verb}`: {exc}")
            return
        rule = _rule(verb, rest)
        if rule is None or self.check(rule, user, channel, respond, {"target": " ".join(rest), "text": text}):
            handler(rest, user, channel, respond)

    def _help(self, args: list[str], user: str, channel: str, respond: Callable[..., Any]) -> None:
        respond(response_type="ephemeral", text=self.help_text(user, channel))

    def help_text(self, user: str, channel: str) -> str:
        """The commands ``user`` may use here, and under ``/evac run`` the runbooks they may run."""
        lines = ["*evac*"]
        for rule, line in HELP_LINES:
            if rule == "run":
                mine = self.runs.permitted(user, channel)
                if mine:
                    lines += [line, *(f"    • {self._runbook_line(name)}" for name in mine)]
            elif allowed(self.config.acl, rule, user, channel, self.groups_of)[0]:
                lines.append(line)
        return "\n".join(lines)

    def _runbook_line(self, name: str) -> str:
        """``name`` — its description (its params; ``*``: required), for help."""
        try:
            book = self.evac.runbook(name)
        except ConfigError as exc:
            return f"`{name}` — cannot be loaded: {_mrkdwn(str(exc), 200)}"
        params = ", ".join(f"{p.name}{'*' if p.required and p.default is None else ''}" for p in book.params)
        about = _mrkdwn(book.description, 120) if book.description else ""
        return f"`{name}`" + (f" — {about}" if about else "") + f" (params: {params or 'none'})"

    def _ha(self, args: list[str], user: str, channel: str, respond: Callable[..., Any]) -> None:
        kind, text = ha_reply(self.evac, self.actor(user), args)
        respond(response_type=kind, text=text)

    def _status(self, args: list[str], user: str, channel: str, respond: Callable[..., Any]) -> None:
        journal = self.evac.journal
        if args:
            job_id = _job_id(args[0])
            job = journal.job(job_id) if job_id is not None else None
            if job is None:
                respond(response_type="ephemeral", text=f"No job `{args[0]}`. Usage: `/evac status [JOB]`")
                return
            done = [e for _, e in journal.events(job.id) if e.kind == EventKind.ITEM_FINISHED]
            ok = sum(1 for e in done if e.data.get("state") == ItemState.SUCCEEDED)
            respond(
                response_type="ephemeral",
                text=f"job {job.id} {job.runbook} {job.target}: *{job.state}* "
                f"({ok} ok, {len(done) - ok} failed) {job.error}".strip(),
            )
            return
        jobs = journal.unfinished_jobs()
        orphaned = " — orphaned: its evac process is gone; run `evac resume`"
        lines = [f"job {j.id} {j.runbook} {j.target}: {j.state}{orphaned if j.orphaned else ''}" for j in jobs]
        lines = lines or ["no running jobs"]
        respond(response_type="ephemeral", text="\n".join(lines))

    def _cancel(self, args: list[str], user: str, channel: str, respond: Callable[..., Any]) -> None:
        job_id = _job_id(args[0]) if len(args) == 1 else None
        if job_id is None:
            respond(response_type="ephemeral", text="Usage: `/evac cancel JOB`")
            return
        self._cancel_job(job_id, user, respond)

    def _cancel_job(self, job_id: int, user: str, respond: Callable[..., Any]) -> None:
        try:
            job = self.evac.jobs.cancel(job_id, self.actor(user))
        except EvacError:
            job = None
        if job is None or job.finished:
            respond(response_type="ephemeral", text=f"Job {job_id} is not running.")
            return
        respond(
            response_type="in_channel",
            text=f"<@{user}> cancelled job {job_id}: running migrations abort, then it rolls back.",
        )

    def _on_cancel_job(self, ack: Callable[..., Any], body: dict[str, Any], respond: Callable[..., Any]) -> None:
        ack()
        user, channel = body["user"]["id"], body["channel"]["id"]
        value = str(body["actions"][0].get("value") or "")
        if not self.check("cancel", user, channel, respond, {"target": value, "button": "cancel"}):
            return
        job_id = _job_id(value)
        if job_id is None:
            respond(response_type="ephemeral", text=f"No job `{value[:40]}`.")
            return
        self._cancel_job(job_id, user, respond)

    def _hosts(self, args: list[str], user: str, channel: str, respond: Callable[..., Any]) -> None:
        states = self.evac.journal.host_states()
        lines = []
        for host in snapshot(self.evac.inventory):
            state = states[host.name].state if host.name in states else host.state
            guests = ", ".join(g.name for g in host.guests if g.state == "running") or "-"
            lines.append(f"{host.name:<12} {state:<12} {guests}")
        respond(response_type="ephemeral", text=blocks._table(lines))

    def _brake(self, args: list[str], user: str, channel: str, respond: Callable[..., Any]) -> None:
        journal = self.evac.journal
        held = journal.brake()
        if args and args != ["release"]:
            respond(response_type="ephemeral", text="Usage: `/evac brake [release]`")
        elif not args:
            text = f":octagonal_sign: storm brake engaged: {held.reason}" if held else "storm brake: released"
            respond(response_type="ephemeral", text=text)
        elif release_held(journal, str(self.actor(user))) is None:
            respond(response_type="ephemeral", text="The storm brake is not engaged.")
        else:
            respond(
                response_type="in_channel",
                text=f"<@{user}> released the storm brake: automatic failover resumes, "
                "and hosts that are still down are fenced and failed over now.",
            )

    def _doctor(self, args: list[str], user: str, channel: str, respond: Callable[..., Any]) -> None:
        """``evac doctor`` on every host, or one, as the CLI runs it (each host's run recorded
        in the journal, where ``last_doctor`` finds it), then its table in this channel.

        It runs here, on this listener's pool thread, after the ack: every check has its own
        deadline, so the run ends, and Slack never waits for it. The table goes out with
        ``chat.postMessage``, which, unlike ``respond``, does not expire after 30 minutes."""
        if len(args) > 1:
            respond(response_type="ephemeral", text="Usage: `/evac doctor [HOST]`")
            return
        inventory = self.evac.inventory
        if args:
            name = self.known_host(args[0], respond)
            if name is None:
                return
            hosts = [inventory.host(name)]
        else:
            hosts = list(inventory.hosts)
        try:
            checks = list(registered_checks(self.evac.pm).values())
        except EvacError as exc:
            respond(response_type="ephemeral", text=f"Doctor not run: {exc}")
            return
        if not hosts or not checks:
            why = "the inventory has no hosts" if not hosts else "no plugin registers a doctor check"
            respond(response_type="ephemeral", text=f"Nothing to check: {why}.")
            return
        names = [h.name for h in hosts]
        detail = {"channel": channel, "hosts": names, "checks": [c.name for c in checks]}
        self.evac.journal.audit(str(self.actor(user)), "doctor", " ".join(args), detail)
        what = names[0] if args else _count(len(names), "host")
        respond(
            response_type="ephemeral",
            text=f"Examining {what} with {len(checks)} checks (the lock probe starts short-lived guests); "
            "the table follows in this channel.",
        )
        runs = diagnose(self.evac, hosts)
        summary = doctor_summary(runs)
        try:
            for text, message in doctor_messages(runs, f"<@{user}>"):
                self.bolt.client.chat_postMessage(channel=channel, text=text, blocks=message)
        except SlackApiError as exc:  # the runs are in the journal: say so, and what they found
            error = exc.response.get("error")
            log.warning("doctor: no table in %s: %s", channel, error)
            respond(
                response_type="ephemeral",
                text=f"Could not post the table here ({error}); the journal has it. {summary}",
            )

    def _on_approve(self, ack: Callable[..., Any], body: dict[str, Any], respond: Callable[..., Any]) -> None:
        """A runbook's approval gate: its own approvers list decides; without one, the ``approve`` rule."""
        ack()
        user, channel = body["user"]["id"], body["channel"]["id"]
        try:
            value = json.loads(body["actions"][0]["value"])
            job_id, step = int(value["job"]), str(value["step"])
        except (ValueError, TypeError, KeyError):
            respond(response_type="ephemeral", text="This approval button is malformed.")
            return
        journal = self.evac.journal
        asked = [e for _, e in journal.events(job_id) if e.kind == EventKind.APPROVAL_REQUESTED and e.step == step]
        if not asked:
            respond(response_type="ephemeral", text=f"Job {job_id} has no approval waiting at step `{step}`.")
            return
        approvers = set(asked[-1].data.get("approvers", []))
        if approvers:
            if not (user in approvers or self.groups_of(user) & approvers):
                journal.audit(str(self.actor(user)), "approve.refused", str(job_id), {"step": step})
                respond(response_type="ephemeral", text="Sorry, you are not among this step's approvers.")
                return
        elif not self.check("approve", user, channel, respond, {"target": str(job_id), "step": step}):
            return
        if journal.approved_by(job_id, step):
            respond(response_type="ephemeral", text=f"Already approved by {journal.approved_by(job_id, step)}.")
            return
        try:
            self.evac.jobs.approve(job_id, self.actor(user), step)
        except EvacError as exc:
            respond(response_type="ephemeral", text=f"Not approved: {exc}")
            return
        respond(response_type="in_channel", text=f"<@{user}> approved job {job_id} (step `{step}`).")

    # ---------------------------------------------------------------- alerts
    def _on_fence_manual(self, ack: Callable[..., Any], body: dict[str, Any], respond: Callable[..., Any]) -> None:
        """An operator powered off a host whose fence failed: record it fenced, fail it over.

        The button carries the id of the failover job whose fence failed; the host is that
        job's target, read from the journal (so this works after a restart of the bot). A
        value naming anything else (a host, another job) is refused and audited."""
        ack()
        user, channel = body["user"]["id"], body["channel"]["id"]
        value = str(body["actions"][0].get("value") or "")
        if not self.check("fence", user, channel, respond, {"target": value, "button": "manual fence"}):
            return
        actor = self.actor(user)
        job, why = self._fence_failed(value)
        if job is None:
            detail = {"button": "manual fence", "value": value, "channel": channel, "why": why}
            self.evac.journal.audit(str(actor), "fence.manual.refused", value, detail)
            respond(response_type="ephemeral", text=f"Nothing done: {why}.")
            return
        host = job.target
        try:
            self.evac.jobs.fence_manually(host, actor, f"confirmed off by hand in Slack by <@{user}> (job {job.id})")
            started = self.evac.jobs.fail_over(host, actor, f"manual fence by <@{user}> after job {job.id}")
        except EvacError as exc:
            respond(response_type="ephemeral", text=str(exc))
            return
        new = self.launch(started, channel, f"Restart guests of {host}")
        respond(
            response_type="in_channel", text=f"<@{user}> confirmed {host} is off; restarting its guests (job {new})."
        )

    def _fence_failed(self, value: str) -> tuple[JobRecord | None, str]:
        """The failover job a manual-fence button names, if it finished failed at its fence
        step; else None and why not."""
        failover = self.evac.settings.runbooks.failover
        job_id = _job_id(value)
        job = self.evac.journal.job(job_id) if job_id is not None else None
        if job is None:
            return None, f"`{value[:40]}` names no failover job whose fence failed"
        if job.runbook != failover or job.dry_run or not job.target:
            return None, f"job {job.id} is a {job.runbook} job, not a failover whose fence failed"
        if job.state != JobState.FAILED:
            later = "; try again when it has finished" if not job.finished else ""
            return None, f"job {job.id} is {job.state}, not failed{later}"
        step = self.evac.journal.step(job.id, "fence")
        if step is None or step.state != StepState.FAILED:
            return None, f"job {job.id} did not fail at its fence step"
        return job, ""


def doctor_lines(runs: Sequence[DoctorRun]) -> list[str]:
    """The doctor's table, one mrkdwn line per host and check: host, check (``*``: a safety
    check), result with its emoji, evidence cut to ``EVIDENCE_CHARS``, and a failure's fix."""
    lines = []
    for host, check, result, evidence, fix in table_rows(runs):
        line = f"`{host}` `{check}` {RESULT_EMOJI[Result(result)]} {result}"
        if evidence.strip():
            line += f" — {_mrkdwn(evidence, EVIDENCE_CHARS)}"
        if result == Result.FAIL and fix:
            line += f" — *fix:* {_mrkdwn(fix, FIX_CHARS)}"
        lines.append(line)
    return lines


def doctor_summary(runs: Sequence[DoctorRun]) -> str:
    """One line: ``3 hosts: 1 check failed (host2 lock_manager): FIX``, or that none failed."""
    hosts = _count(len(runs), "host")
    failed = [(r.host, c) for r in runs for c in r.failed]
    if failed:
        named = ", ".join(f"{host} {check.name}" for host, check in failed[:5]) + (", …" if len(failed) > 5 else "")
        count = f"{_count(len(failed), 'check')} failed"
        if len(failed) > 1:
            return f"{hosts}: {count} ({named}): the fixes are in the table"
        check = failed[0][1]
        return f"{hosts}: {count} ({named}): {_mrkdwn(check.fix or check.evidence, FIX_CHARS)}"
    results = [c.result for r in runs for c in r.checks]
    warned, skipped = results.count(Result.WARN), results.count(Result.SKIP)
    if warned or skipped:
        return f"{hosts}: no check failed ({warned} warned, {skipped} skipped)"
    return f"{hosts}: every check passed"


def doctor_messages(runs: Sequence[DoctorRun], who: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """The doctor's table as Slack messages, each ``(fallback text, blocks)``: sections of
    whole lines within Slack's section limit, at most ``MESSAGE_BLOCKS`` blocks a message,
    the summary last."""
    summary = doctor_summary(runs)
    sections: list[str] = [f"*evac doctor*, asked by {who}: {_count(len(runs), 'host')} (`*` = safety check)"]
    chunk: list[str] = []
    for line in doctor_lines(runs):
        line = line[: blocks.TEXT_LIMIT]
        if chunk and sum(len(one) + 1 for one in chunk) + len(line) > blocks.TEXT_LIMIT:
            sections.append("\n".join(chunk))
            chunk = []
        chunk.append(line)
    if chunk:
        sections.append("\n".join(chunk))
    mark = RESULT_EMOJI[Result.FAIL if any(r.failed for r in runs) else Result.PASS]
    sections.append(f"{mark} {summary}")
    pages = [sections[i : i + MESSAGE_BLOCKS] for i in range(0, len(sections), MESSAGE_BLOCKS)]
    return [
        (
            f"evac doctor: {summary}" if n == 1 else f"evac doctor ({n}/{len(pages)}): {summary}",
            [blocks.section(t) for t in page],
        )
        for n, page in enumerate(pages, 1)
    ]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _mrkdwn(text: str, limit: int) -> str:
    """``text`` as one line of at most ``limit`` characters (cut with "…"), escaped for mrkdwn."""
    line = " ".join(text.split())
    if len(line) > limit:
        line = line[: limit - 1] + "…"
    return blocks.escape(line)


def _job_id(value: str) -> int | None:
    """A job id typed or carried by a button: ASCII digits that fit the journal, else None."""
    return int(value) if value.isascii() and value.isdigit() and len(value) < 19 else None


def _rule(verb: str, args: list[str]) -> str | None:
    """The access rule ``/evac VERB ARGS`` needs; None for ``run``, which checks the
    runbook's own rule itself. Looking (``brake``, ``ha status``) is read-only: ``status``."""
    if verb == "brake" and not args:
        return "status"
    if verb == "ha":
        return "status" if not args or args[0] in READ_ONLY_HA else "ha"
    if verb == "run":
        return None
    return verb


def _moves(plan: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((m["guest"], m["target"]) for m in plan.get("moves", []))


def _token(value: str) -> str:
    """A preview button's token. Buttons of older versions carried JSON with the host as
    well; only the token is read from it, so a forged host name changes nothing."""
    if value.startswith("{"):
        try:
            found = json.loads(value)
        except ValueError:
            return ""
        return str(found.get("token", "")) if isinstance(found, dict) else ""
    return value
