"""The slack-bolt app: ``/evacuate`` and ``/evac``, buttons, access control and audit.

Every listener acks at once and works afterwards (bolt runs it on its thread pool), so
Slack never waits 3 s. The bot uses only evac's public API (App, engine, journal) and
its event stream; the core never imports it.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from slack_bolt import App as BoltApp
from slack_sdk import WebClient

from evac.app import App
from evac.errors import ConfigError, EvacError, LockedError
from evac.fleet import reachable, snapshot
from evac.runbook import bind_params
from evac.stormbrake import release_held
from evac.yamldoc import suggest

from . import blocks
from .access import allowed
from .config import SlackConfig
from .progress import SlackProgress

log = logging.getLogger("evac.slack")
HELP = (
    "*evac*\n"
    "`/evacuate HOST [reason]` — plan a drain, then confirm it\n"
    "`/evac status [JOB]` — running jobs, or one job\n"
    "`/evac cancel JOB` — cancel a job (it rolls back)\n"
    "`/evac hosts` — hosts, their state and guests\n"
    "`/evac brake [release]` — the storm brake; release it so failover resumes\n"
    "`/evac help` — this text"
)


class Bot:
    """Slack front end of one evac application."""

    def __init__(
        self,
        evac: App,
        config: SlackConfig,
        client: WebClient | None = None,
        drain_runbook: str = "maintenance",
        failover_runbook: str = "host-failure",
    ) -> None:
        self.evac = evac
        self.config = config
        self.drain_runbook = drain_runbook
        self.failover_runbook = failover_runbook
        self.executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="slack-listener")
        self.jobs: list[threading.Thread] = []
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
        self.previews: dict[str, dict[str, Any]] = {}
        self.started: dict[str, int] = {}  # preview token -> job, so a second click starts nothing
        self._lock = threading.Lock()
        self._group_cache: dict[str, set[str]] = {}
        self._register()

    # ---------------------------------------------------------------- plumbing
    def _register(self) -> None:
        self.bolt.command("/evacuate")(self._on_evacuate)
        self.bolt.command("/evac")(self._on_evac)
        self.bolt.action("evac_confirm")(self._on_confirm)
        self.bolt.action("evac_cancel_preview")(self._on_cancel_preview)
        self.bolt.action("evac_cancel_job")(self._on_cancel_job)
        self.bolt.action("evac_fence_manual")(self._on_fence_manual)
        self.bolt.action("evac_approve")(self._on_approve)

    def groups_of(self, user: str) -> set[str]:
        """The user groups a user belongs to (usergroups.list with users), cached."""
        if not self._group_cache:
            response = self.bolt.client.usergroups_list(include_users=True)
            groups: list[dict[str, Any]] = response.get("usergroups", [])
            for group in groups:
                for member in group.get("users", []):
                    self._group_cache.setdefault(member, set()).add(group["id"])
        return self._group_cache.get(user, set())

    def _check(
        self, command: str, user: str, channel: str, respond: Callable[..., Any], detail: dict[str, Any]
    ) -> bool:
        ok, why = allowed(self.config.acl, command, user, channel, self.groups_of)
        self.evac.journal.audit(
            f"slack:{user}",
            command if ok else f"{command}.refused",
            str(detail.get("target", "")),
            {**detail, "channel": channel, **({} if ok else {"why": why})},
        )
        if not ok:
            respond(
                response_type="ephemeral",
                text=f"Sorry, {why}. Ask an evac admin to add your Slack ID to `slack.acl.{command}`.",
            )
        return ok

    def _host(self, name: str, respond: Callable[..., Any]) -> str | None:
        names = [h.name for h in self.evac.inventory.hosts]
        if name in names:
            return name
        close = suggest(name, names).strip()
        respond(response_type="ephemeral", text=f"Unknown host `{name}`. {close or 'Known: ' + ', '.join(names)}")
        return None

    # ---------------------------------------------------------------- /evacuate
    def _on_evacuate(self, ack: Callable[..., Any], command: dict[str, Any], respond: Callable[..., Any]) -> None:
        ack()
        words = (command.get("text") or "").split()
        user, channel = command["user_id"], command["channel_id"]
        if not words:
            respond(response_type="ephemeral", text="Usage: `/evacuate HOST [reason]`")
            return
        host = self._host(words[0], respond)
        if host is None or not self._check(
            "evacuate", user, channel, respond, {"target": host, "text": command.get("text")}
        ):
            return
        reason = " ".join(words[1:]) or f"requested by <@{user}>"
        try:
            plan = self.plan(host)
        except EvacError as exc:
            respond(response_type="ephemeral", text=f"Cannot plan a drain of {host}: {exc}")
            return
        token = secrets.token_hex(8)
        with self._lock:
            self.previews[token] = {"host": host, "reason": reason, "plan": plan, "user": user}
        self.bolt.client.chat_postMessage(
            channel=channel, text=f"Drain {host}? (preview)", blocks=blocks.preview(host, reason, plan, token)
        )

    def plan(self, host: str) -> dict[str, Any]:
        """The same plan the engine runs: the maintenance runbook's own plan step, dry."""
        book = self.evac.runbook(self.drain_runbook)
        params = bind_params(book, {"host": host}, self.evac.host_names())
        result = self.evac.engine.execute(book, params, host, dry_run=True)
        plan = result.outputs.get("plan")
        if not plan:
            raise EvacError(result.error or "no plan")
        return dict(plan)

    def _on_confirm(self, ack: Callable[..., Any], body: dict[str, Any], respond: Callable[..., Any]) -> None:
        ack()
        value = json.loads(body["actions"][0]["value"])
        user, channel = body["user"]["id"], body["channel"]["id"]
        host, token = value["host"], value["token"]
        if not self._check("evacuate", user, channel, respond, {"target": host, "button": "confirm"}):
            return
        with self._lock:
            if token in self.started:
                job = self.started[token]
                respond(
                    response_type="ephemeral", text=f"Already started: job {job}" if job else "Already being started"
                )
                return
            preview = self.previews.get(token)
            if preview is None:
                respond(response_type="ephemeral", text="This preview expired; run `/evacuate` again.")
                return
            self.started[token] = 0
        try:
            fresh = self.plan(host)
            if _moves(fresh) != _moves(preview["plan"]):
                with self._lock:
                    del self.started[token]
                    new = secrets.token_hex(8)
                    self.previews[new] = {**preview, "plan": fresh}
                self.bolt.client.chat_update(
                    channel=channel,
                    ts=body["message"]["ts"],
                    text=f"Drain {host}? (plan changed)",
                    blocks=blocks.preview(host, preview["reason"], fresh, new),
                )
                respond(
                    response_type="ephemeral",
                    text="The fleet changed since this preview; here is the new plan. Confirm again.",
                )
                return
            self.start_job(
                self.drain_runbook,
                {"host": host, "reason": preview["reason"]},
                host,
                channel,
                f"Drain {host}",
                token=token,
                actor=user,
            )
        except LockedError as exc:
            with self._lock:
                self.started.pop(token, None)
            respond(response_type="ephemeral", text=str(exc))
        except EvacError as exc:
            with self._lock:
                self.started.pop(token, None)
            respond(response_type="ephemeral", text=f"Not started: {exc}")
            return
        self.bolt.client.chat_update(
            channel=channel,
            ts=body["message"]["ts"],
            text=f"Drain {host}: confirmed by <@{user}>",
            blocks=[
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": f"Drain of *{host}* confirmed by <@{user}>; progress below."},
                }
            ],
        )

    def start_job(
        self,
        runbook: str,
        given: dict[str, Any],
        target: str,
        channel: str,
        title: str,
        token: str = "",
        actor: str = "",
    ) -> int:
        book = self.evac.runbook(runbook)
        params = bind_params(book, given, self.evac.host_names())
        job = self.evac.engine.submit(book, params, target)
        if token:
            with self._lock:
                self.started[token] = job
        self.evac.journal.audit(f"slack:{actor}", "run", target, {"job": job, "runbook": runbook})
        self.progress.track(job, channel, title)
        thread = threading.Thread(target=self.evac.engine.run, args=(job, book), daemon=True, name=f"slack-job-{job}")
        thread.start()
        self.jobs.append(thread)
        return job

    def close(self, timeout: float = 30) -> None:
        """Finish in-flight listeners and jobs started here, then stop posting progress."""
        self.executor.shutdown(wait=True)
        for thread in self.jobs:
            thread.join(timeout)
        self.progress.stop()

    def _on_cancel_preview(self, ack: Callable[..., Any], body: dict[str, Any]) -> None:
        ack()
        value = json.loads(body["actions"][0]["value"])
        with self._lock:
            self.previews.pop(value["token"], None)
        self.evac.journal.audit(f"slack:{body['user']['id']}", "preview.cancel", value["host"], {})
        self.bolt.client.chat_update(
            channel=body["channel"]["id"],
            ts=body["message"]["ts"],
            text="Drain not started",
            blocks=[
                {
                    "type": "section",
                    "text": {
                        "type": "mrkdwn",
                        "text": f"Drain of *{value['host']}* not started (<@{body['user']['id']}>).",
                    },
                }
            ],
        )

    # ---------------------------------------------------------------- /evac
    def _on_evac(self, ack: Callable[..., Any], command: dict[str, Any], respond: Callable[..., Any]) -> None:
        ack()
        words = (command.get("text") or "help").split()
        verb, rest = words[0], words[1:]
        user, channel = command["user_id"], command["channel_id"]
        handlers: dict[str, Callable[[list[str], str, str, Callable[..., Any]], None]] = {
            "status": self._status,
            "cancel": self._cancel,
            "hosts": self._hosts,
            "brake": self._brake,
            "help": self._help,
        }
        handler = handlers.get(verb)
        if handler is None:
            respond(response_type="ephemeral", text=f"Unknown command `{verb}`{suggest(verb, handlers)}.\n{HELP}")
            return
        rule = "status" if verb == "brake" and not rest else verb  # looking is read-only; releasing is not
        if self._check(rule, user, channel, respond, {"target": " ".join(rest), "text": command.get("text")}):
            handler(rest, user, channel, respond)

    def _help(self, args: list[str], user: str, channel: str, respond: Callable[..., Any]) -> None:
        visible = [line for line in HELP.splitlines() if not line.startswith("`/") or self._may(line, user, channel)]
        respond(response_type="ephemeral", text="\n".join(visible))

    def _may(self, line: str, user: str, channel: str) -> bool:
        word = line.split()[1].strip("`") if line.startswith("`/evac ") else "evacuate"
        return allowed(self.config.acl, word, user, channel, self.groups_of)[0]

    def _status(self, args: list[str], user: str, channel: str, respond: Callable[..., Any]) -> None:
        journal = self.evac.journal
        if args:
            if not args[0].isdigit() or journal.job(int(args[0])) is None:
                respond(response_type="ephemeral", text=f"No job `{args[0]}`. Usage: `/evac status [JOB]`")
                return
            job = journal.job(int(args[0]))
            assert job is not None
            done = [e for _, e in journal.events(job.id) if e.kind == "item.finished"]
            ok = sum(1 for e in done if e.data.get("state") == "succeeded")
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
        if len(args) != 1 or not args[0].isdigit():
            respond(response_type="ephemeral", text="Usage: `/evac cancel JOB`")
            return
        self._cancel_job(int(args[0]), user, respond)

    def _cancel_job(self, job_id: int, user: str, respond: Callable[..., Any]) -> None:
        job = self.evac.journal.job(job_id)
        if job is None or job.finished:
            respond(response_type="ephemeral", text=f"Job {job_id} is not running.")
            return
        self.evac.engine.cancel(job_id)
        self.evac.journal.audit(f"slack:{user}", "cancel", job.target, {"job": job_id})
        respond(
            response_type="in_channel",
            text=f"<@{user}> cancelled job {job_id}: running migrations abort, then it rolls back.",
        )

    def _on_cancel_job(self, ack: Callable[..., Any], body: dict[str, Any], respond: Callable[..., Any]) -> None:
        ack()
        user, channel = body["user"]["id"], body["channel"]["id"]
        job_id = int(body["actions"][0]["value"])
        if self._check("cancel", user, channel, respond, {"target": str(job_id), "button": "cancel"}):
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
        elif release_held(journal, f"slack:{user}") is None:
            respond(response_type="ephemeral", text="The storm brake is not engaged.")
        else:
            respond(
                response_type="in_channel",
                text=f"<@{user}> released the storm brake: automatic failover resumes, "
                "and hosts that are still down are fenced and failed over now.",
            )

    def _on_approve(self, ack: Callable[..., Any], body: dict[str, Any], respond: Callable[..., Any]) -> None:
        """A runbook's approval gate: its own approvers list decides; without one, the ``approve`` rule."""
        ack()
        user, channel = body["user"]["id"], body["channel"]["id"]
        value = json.loads(body["actions"][0]["value"])
        job_id, step = int(value["job"]), str(value["step"])
        journal = self.evac.journal
        asked = [e for _, e in journal.events(job_id) if e.kind == "approval.requested" and e.step == step]
        if not asked:
            respond(response_type="ephemeral", text=f"Job {job_id} has no approval waiting at step `{step}`.")
            return
        approvers = set(asked[-1].data.get("approvers", []))
        if approvers:
            ok = user in approvers or bool(self.groups_of(user) & approvers)
            journal.audit(f"slack:{user}", "approve" if ok else "approve.refused", str(job_id), {"step": step})
            if not ok:
                respond(response_type="ephemeral", text="Sorry, you are not among this step's approvers.")
                return
        elif not self._check("approve", user, channel, respond, {"target": str(job_id), "step": step}):
            return
        if journal.approved_by(job_id, step):
            respond(response_type="ephemeral", text=f"Already approved by {journal.approved_by(job_id, step)}.")
            return
        journal.approve(job_id, step, f"slack:{user}")
        respond(response_type="in_channel", text=f"<@{user}> approved job {job_id} (step `{step}`).")

    # ---------------------------------------------------------------- alerts
    def _on_fence_manual(self, ack: Callable[..., Any], body: dict[str, Any], respond: Callable[..., Any]) -> None:
        ack()
        user, channel = body["user"]["id"], body["channel"]["id"]
        host = body["actions"][0]["value"]
        if not self._check("fence", user, channel, respond, {"target": host, "button": "manual fence"}):
            return
        spec = self.evac.inventory.host(host)
        if reachable(spec.uri, 2.0):
            respond(response_type="ephemeral", text=f"{host} answers on its libvirt port: it is not off. Nothing done.")
            return
        self.evac.journal.set_host_state(host, "fenced", f"confirmed off by hand in Slack by {user}", f"slack:{user}")
        try:
            job = self.start_job(
                self.failover_runbook,
                {"host": host, "reason": f"manual fence by {user}"},
                host,
                channel,
                f"Restart guests of {host}",
                actor=user,
            )
        except (LockedError, ConfigError) as exc:
            respond(response_type="ephemeral", text=str(exc))
            return
        respond(
            response_type="in_channel", text=f"<@{user}> confirmed {host} is off; restarting its guests (job {job})."
        )


def _moves(plan: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((m["guest"], m["target"]) for m in plan.get("moves", []))
