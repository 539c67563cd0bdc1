"""Job progress in Slack: one message per job, updated in place; details in its thread.

An ``evac_event`` observer. Slack calls never run on the engine's threads: events go to
a queue and one worker talks to Slack, updating each message at most once a second.
Jobs nobody started from Slack (automatic failovers) and host alerts go to the alerts
channel.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from evac import hookimpl
from evac.events import Event
from evac.states import EventKind, ItemState, JobState

from . import blocks
from .blocks import escape

log = logging.getLogger("evac.slack")
ITEM_STEPS = ("migrate", "restart")
FENCE_FAILED = "fence_failed"  # the ``kind`` of the alert plugins/failover.py raises when a fence fails
STARTS = (EventKind.JOB_STARTED, EventKind.JOB_RESUMED)
HOST_ICONS = {  # host and control-plane events the alerts channel hears of
    EventKind.HOST_DOWN: ":red_circle:",
    EventKind.MONITOR_STORM_BRAKE: ":octagonal_sign:",
    EventKind.HOST_CLEANED: ":broom:",
    EventKind.HOST_FAILOVER_NOT_STARTED: ":warning:",
    EventKind.CLUSTER_UNAVAILABLE: ":rotating_light:",
    EventKind.CLUSTER_AVAILABLE: ":large_green_circle:",
    EventKind.CLUSTER_LEADER: ":crown:",
    EventKind.GUEST_LEFT_STOPPED: ":warning:",
    EventKind.HA_DISARMED: ":double_vertical_bar:",
    EventKind.HA_ARMED: ":arrow_forward:",
    EventKind.HA_HELD: ":double_vertical_bar:",
    EventKind.HA_RESERVE_BROKEN: ":warning:",
    EventKind.HA_RESERVE_RESTORED: ":large_green_circle:",
}


@dataclass
class Tracked:
    channel: str
    ts: str
    title: str
    total: int = 0
    done: int = 0
    failed: int = 0
    notes: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    last_update: float = 0.0
    dirty: bool = False


class SlackProgress:
    def __init__(self, client: WebClient, alerts_channel: str = "", min_interval: float = 1.0) -> None:
        self.client = client
        self.alerts_channel = alerts_channel
        self.min_interval = min_interval
        self.jobs: dict[int, Tracked] = {}
        self._queue: queue.Queue[Event | None] = queue.Queue()
        self._lock = threading.Lock()
        self.idle = threading.Event()
        self._worker = threading.Thread(target=self._work, daemon=True, name="slack-progress")
        self._worker.start()

    def track(self, job_id: int, channel: str, title: str) -> Tracked:
        """Post the job's progress message now; later events update it."""
        response = self.client.chat_postMessage(
            channel=channel, text=f"{title}: job {job_id} starting", blocks=blocks.progress(title, job_id, 0, 0, 0, [])
        )
        tracked = Tracked(channel=response["channel"], ts=response["ts"], title=title)
        with self._lock:
            self.jobs[job_id] = tracked
        return tracked

    def stop(self) -> None:
        self._queue.put(None)
        self._worker.join(10)

    @hookimpl
    def evac_event(self, event: Event) -> None:
        self.idle.clear()
        self._queue.put(event)

    # ---------------------------------------------------------------- worker
    def _work(self) -> None:
        while True:
            try:
                event = self._queue.get(timeout=self.min_interval)
            except queue.Empty:
                self._flush()
                self.idle.set()
                continue
            if event is None:
                return
            try:
                self._handle(event)
            except SlackApiError as exc:
                log.warning("slack call failed on %s: %s", event.kind, exc.response.get("error"))
            except Exception:
                log.exception("slack progress failed on %s", event.kind)
            if self._queue.empty():
                self._flush()
                self.idle.set()

    def _handle(self, event: Event) -> None:
        if event.job_id == 0:
            self._host_event(event)
            return
        tracked = self.jobs.get(event.job_id)
        if tracked is None:
            if event.kind in STARTS and self.alerts_channel and not event.data.get("dry_run"):
                title = f"{event.data.get('runbook')} {event.data.get('target') or ''}".strip()
                tracked = self.track(event.job_id, self.alerts_channel, f"Automatic: {title}")
            else:
                return
        if event.kind == EventKind.STEP_ITEMS and event.step in ITEM_STEPS:
            tracked.total = int(event.data.get("count", 0))
            tracked.dirty = True
        elif event.kind == EventKind.ITEM_FINISHED and event.step in ITEM_STEPS:
            ok = event.data.get("state") == ItemState.SUCCEEDED
            tracked.done += ok
            tracked.failed += not ok
            line = self._item_line(event, ok)
            tracked.lines.append(line)
            self.client.chat_postMessage(channel=tracked.channel, thread_ts=tracked.ts, text=line)
            tracked.dirty = True
        elif event.kind == EventKind.PROGRESS and event.data.get("escalation"):
            tracked.notes.append(f"{event.item}: {event.message}")
            tracked.dirty = True
        elif event.kind == EventKind.PROGRESS and event.data.get("level") == "alert":
            self._alert(event, tracked)
        elif event.kind == EventKind.APPROVAL_REQUESTED:
            self.client.chat_postMessage(
                channel=tracked.channel,
                text=f"Job {event.job_id} waits for approval: {event.message}",
                blocks=blocks.approval(event.job_id, event.step, event.message, list(event.data.get("approvers", []))),
            )
        elif event.kind == EventKind.JOB_FINISHED:
            self._finish(event, tracked)

    def _alert(self, event: Event, tracked: Tracked) -> None:
        """A fence that failed gets the manual-fence button (in the job's thread); any other
        alert, or one without a ``kind`` (older plugins, ``notify.log``), is plain text in
        the alerts channel (the job's thread when there is none)."""
        if event.data.get("kind") == FENCE_FAILED and event.data.get("host"):
            host = str(event.data["host"])
            self.client.chat_postMessage(
                channel=tracked.channel,
                thread_ts=tracked.ts,
                text=event.message,
                blocks=blocks.fence_alert(host, event.message, event.job_id),
            )
        elif self.alerts_channel:
            self.client.chat_postMessage(channel=self.alerts_channel, text=blocks.alert(event.job_id, event.message))
        else:
            self.client.chat_postMessage(
                channel=tracked.channel, thread_ts=tracked.ts, text=blocks.alert(event.job_id, event.message)
            )

    def _item_line(self, event: Event, ok: bool) -> str:
        if not ok:
            return f":x: {event.item}: {event.message}"
        out = event.data.get("outputs") or {}
        bits = [f"-> {out['target']}"] if out.get("target") else []
        if out.get("seconds"):
            bits.append(f"{out['seconds']} s")
        if out.get("downtime_ms") is not None:
            bits.append(f"{out['downtime_ms']} ms downtime")
        if (out.get("outage") or {}).get("longest_gap_s") is not None:
            bits.append(f"unanswered {out['outage']['longest_gap_s']} s ({out['outage']['check']})")
        if out.get("escalations"):
            bits.append("escalated: " + "; ".join(out["escalations"]))
        return f":white_check_mark: {event.item} {' '.join(bits)}".strip()

    def _finish(self, event: Event, tracked: Tracked) -> None:
        state = str(event.data.get("state"))
        tracked.notes.append(f"finished: {state}" + (f" — {event.message}" if event.message else ""))
        self._update(event.job_id, tracked, state)
        report = "\n".join([f"job {event.job_id} {tracked.title}: {state}", *tracked.lines, *tracked.notes])
        if len(report) > blocks.TEXT_LIMIT:
            self.client.files_upload_v2(
                channel=tracked.channel,
                thread_ts=tracked.ts,
                content=report,
                filename=f"evac-job-{event.job_id}.txt",
                title=f"job {event.job_id} report",
            )
        else:
            self.client.chat_postMessage(channel=tracked.channel, thread_ts=tracked.ts, text=f"```{report}```")
        with self._lock:
            self.jobs.pop(event.job_id, None)

    def _flush(self) -> None:
        now = time.monotonic()
        for job_id, tracked in list(self.jobs.items()):
            if tracked.dirty and now - tracked.last_update >= self.min_interval:
                self._update(job_id, tracked, JobState.RUNNING)

    def _update(self, job_id: int, tracked: Tracked, state: str) -> None:
        tracked.dirty = False
        tracked.last_update = time.monotonic()
        self.client.chat_update(
            channel=tracked.channel,
            ts=tracked.ts,
            text=f"{tracked.title}: {state}",
            blocks=blocks.progress(
                tracked.title, job_id, tracked.done, tracked.failed, tracked.total, tracked.notes, state
            ),
        )

    def _host_event(self, event: Event) -> None:
        if not self.alerts_channel or event.kind not in HOST_ICONS:
            return
        icon = HOST_ICONS[EventKind(event.kind)]
        self.client.chat_postMessage(
            channel=self.alerts_channel, text=f"{icon} {event.kind} {escape(event.item)}: {escape(event.message)}"
        )
