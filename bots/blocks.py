"""Block Kit messages: plan preview, live progress, final summary and alerts.

Section text is capped by Slack (~3000 characters): tables are cut with "and N more"
and the full report goes to the thread as a file.
"""

from __future__ import annotations

import json
from typing import Any

from evac.runbook import Runbook
from evac.states import JobState

TEXT_LIMIT = 2900


def _table(rows: list[str], limit: int = TEXT_LIMIT) -> str:
    out: list[str] = []
    size = 0
    for index, row in enumerate(rows):
        if size + len(row) + 1 > limit - 40:
            out.append(f"… and {len(rows) - index} more")
            break
        out.append(row)
        size += len(row) + 1
    return "```" + "\n".join(out) + "```" if out else "_none_"


def _text(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text}


def button(
    action: str, label: str, value: str, style: str = "", confirm: tuple[str, str, str] | None = None
) -> dict[str, Any]:
    """A button; ``confirm`` (title, question, yes) puts a confirmation dialog in front of it."""
    element: dict[str, Any] = {"type": "button", "action_id": action, "value": value, "text": _text(label)}
    if style:
        element["style"] = style
    if confirm:
        title, question, yes = confirm
        element["confirm"] = {
            "title": _text(title),
            "text": {"type": "mrkdwn", "text": question},
            "confirm": _text(yes),
            "deny": _text("Back"),
        }
    return element


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:TEXT_LIMIT]}}


def preview(host: str, reason: str, plan: dict[str, Any], token: str) -> list[dict[str, Any]]:
    moves = plan.get("moves", [])
    stuck = plan.get("unplaceable", [])
    rows = [f"{m['guest']:<24} {m['memory_mib']:>6} MiB  -> {m['target']:<12} {m['strategy']}" for m in moves]
    out: list[dict[str, Any]] = [
        {"type": "header", "text": _text(f"Drain {host}?")},
        section(f"*{len(moves)}* guest(s) move, *{len(stuck)}* cannot. Reason: {reason or '-'}"),
        section(_table(rows)),
    ]
    if stuck:
        out.append(section("*Stay on the host:*\n" + _table([f"{u['guest']}: {u['reason']}" for u in stuck], 1500)))
    for warning in plan.get("warnings", []):
        out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f":warning: {warning}"}]})
    # The buttons carry the preview's token and nothing else: the host, reason and plan a
    # click starts come from the preview the bot stored under it, never from the click.
    question = f"Live-migrate {len(moves)} guest(s) off *{host}* and keep it in maintenance."
    out.append(
        {
            "type": "actions",
            "block_id": "evac_preview",
            "elements": [
                button("evac_confirm", "Confirm drain", token, "primary", (f"Drain {host}?", question, "Drain")),
                button("evac_cancel_preview", "Cancel", token, "danger"),
            ],
        }
    )
    return out


PLAN_CHANGED = "The fleet changed since this preview; here is the new plan. Confirm again."


def escape(text: str) -> str:
    """Text as mrkdwn shows it: no mention, link or broadcast (``<!channel>``) hidden in it.
    Whatever a user typed, or an event carries from another channel, goes through here."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def run_preview(
    title: str, book: Runbook, given: dict[str, Any], plan: dict[str, Any] | None, steps: list[str], token: str
) -> list[dict[str, Any]]:
    """A runbook's dry run, to confirm: the plan its plan step made (moves, what stays and
    why, each host's load before and after) when it has one, else the steps it would run."""
    params = " ".join(f"`{k}={escape(_cut(_shown(v), 60))}`" for k, v in given.items()) or "its defaults"
    about = f"\n_{_cut(book.description, 300)}_" if book.description else ""
    out: list[dict[str, Any]] = [
        {"type": "header", "text": _text(_cut(f"{title}?", 150))},
        section(f"Runbook `{book.name}` with {params}{about}"),
    ]
    if plan is None:
        out.append(section("*Steps it would run:*\n" + "\n".join(steps)))
        question = f"Start `{book.name}` with {params}."
    else:
        moves, stuck, skipped = plan.get("moves", []), plan.get("unplaceable", []), plan.get("skipped", [])
        counts = [f"*{len(moves)}* guest(s) move"]
        counts += [f"*{len(stuck)}* cannot"] if stuck else []
        counts += [f"*{len(skipped)}* skipped"] if skipped else []
        out.append(section(", ".join(counts) + "."))
        out.append(section(_table([_move_row(m) for m in moves])))
        for heading, rows in (("Stay where they are", stuck), ("Skipped", skipped)):
            if rows:
                out.append(section(f"*{heading}:*\n" + _table([f"{u['guest']}: {u['reason']}" for u in rows], 1500)))
        loads = _loads(plan)
        if loads:
            out.append(section("*Memory load per host, before → after:*\n" + _table(loads, 1500)))
        notes = [str(plan["summary"])] if plan.get("summary") else []
        notes += [f":warning: {w}" for w in plan.get("warnings", [])]
        for note in notes:
            out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(note, TEXT_LIMIT)}]})
        question = f"Move {len(moves)} guest(s) as planned (`{book.name}`)."
    gates = [s for s in book.all_steps() if s.approval]
    if gates:
        question += f" It then waits for approval at {', '.join(f'`{s.id}`' for s in gates)}."
    dialog = (_cut(f"{title}?", 24), _cut(question, 300), "Start")  # Slack's limits for a confirmation dialog
    out.append(
        {
            "type": "actions",
            "block_id": "evac_run_preview",
            "elements": [
                button("evac_run_confirm", "Confirm", token, "primary", dialog),
                button("evac_run_cancel", "Cancel", token, "danger"),
            ],
        }
    )
    return out


def _move_row(move: dict[str, Any]) -> str:
    why = move.get("reason") or move.get("strategy") or ""
    return (
        f"{move.get('guest', '?'):<20} {move.get('memory_mib', 0):>6} MiB  "
        f"{move.get('source', ''):>10} -> {move.get('target', '?'):<10} {_cut(str(why), 60)}"
    )


def _loads(plan: dict[str, Any]) -> list[str]:
    """``host  41.0% -> 35.5%  (5 -> 4 guests)`` per host, when the plan has loads before and after."""
    before, after = plan.get("before"), plan.get("after")
    if not isinstance(before, dict) or not isinstance(after, dict):
        return []
    rows = []
    for host in sorted(before):
        was, now = before[host], after.get(host, {})
        rows.append(
            f"{host:<12} {was.get('memory_pct', 0):>5.1f}% -> {now.get('memory_pct', 0):>5.1f}%  "
            f"({was.get('guests', 0)} -> {now.get('guests', 0)} guests)"
        )
    return rows


def _shown(value: Any) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def bar(done: int, total: int, width: int = 20) -> str:
    filled = int(width * done / total) if total else 0
    return "█" * filled + "░" * (width - filled)


def progress(
    title: str, job_id: int, done: int, failed: int, total: int, notes: list[str], state: str = JobState.RUNNING
) -> list[dict[str, Any]]:
    counts = f"{done + failed}/{total}" if total else "planning"
    out = [
        section(
            f"*{title}* — job {job_id} — {state}\n`{bar(done + failed, total)}` {counts} ({done} ok, {failed} failed)"
        )
    ]
    if notes:
        out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": "\n".join(notes[-5:])[:TEXT_LIMIT]}]})
    if state == JobState.RUNNING:
        question = "Running migrations abort (guests stay on their source), then the job rolls back."
        out.append(
            {
                "type": "actions",
                "elements": [
                    button(
                        "evac_cancel_job",
                        "Cancel job",
                        str(job_id),
                        "danger",
                        (f"Cancel job {job_id}?", question, "Cancel job"),
                    )
                ],
            }
        )
    return out


def fence_alert(host: str, message: str, job_id: int) -> list[dict[str, Any]]:
    """A failover whose fence failed, with a button to restart the host's guests once an
    operator has powered it off. The button carries the failed job's id and nothing else:
    the host a click restarts comes from that job in the journal, never from the click."""
    question = f"Confirm only after checking *{host}* is off: if it runs, its guests would run twice."
    return [
        section(f":rotating_light: *{host} could not be fenced* (job {job_id})\n{message}"),
        {
            "type": "actions",
            "elements": [
                button(
                    "evac_fence_manual",
                    f"I powered {host} off: restart its guests",
                    str(job_id),
                    "danger",
                    (f"Is {host} really off?", question, "It is off"),
                )
            ],
        },
    ]


def alert(job_id: int, message: str) -> str:
    """Any other alert a job raises: text for the alerts channel, no button."""
    return f":rotating_light: job {job_id}: {message}"


def approval(job_id: int, step: str, text: str, approvers: list[str]) -> list[dict[str, Any]]:
    who = (
        ", ".join(f"<@{a}>" if a.startswith(("U", "W")) else f"<!subteam^{a}>" for a in approvers)
        or "anyone allowed to approve"
    )
    value = json.dumps({"job": job_id, "step": step})
    return [
        section(f":raised_hand: *Job {job_id} waits for approval* (step `{step}`)\n{text}\nApprovers: {who}"),
        {
            "type": "actions",
            "elements": [
                button("evac_approve", "Approve", value, "primary", (f"Approve job {job_id}?", text, "Approve"))
            ],
        },
    ]
