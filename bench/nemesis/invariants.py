"""The invariants, as pure checks on what was recorded outside evac: libvirt's running
lists sampled on every host, QEMU's logs, the lab power switch's log, and (for the jobs
and the snapshots it recorded) the journal, compared with virsh.

Each check returns the violations it found; a clean run has none.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# QEMU's own refusal when another QEMU holds the disk image (the lab's image locks
# refuse before virtlockd does); one line per refused start.
REFUSED = 'Failed to get "write" lock'


@dataclass(frozen=True)
class Sample:
    """What libvirt said at ``t`` (seconds into the run): the guests whose vCPUs run, per
    host that answered. A host that did not answer is absent from ``running``."""

    t: float
    running: Mapping[str, frozenset[str]]


@dataclass(frozen=True)
class Violation:
    invariant: str
    t: float | None  # seconds into the run, where it has a moment
    detail: str

    def line(self) -> str:
        at = f"t={self.t:.2f}s " if self.t is not None else ""
        return f"{self.invariant}: {at}{self.detail}"


def double_listings(samples: Iterable[Sample]) -> list[tuple[float, str, tuple[str, ...], int]]:
    """``(first t, guest, hosts, samples in a row)`` for every stretch of consecutive
    samples listing a guest running on the same two (or more) hosts."""
    stretches: list[tuple[float, str, tuple[str, ...], int]] = []
    ongoing: dict[tuple[str, tuple[str, ...]], tuple[float, int]] = {}
    for sample in samples:
        where: dict[str, list[str]] = {}
        for host, guests in sample.running.items():
            for guest in guests:
                where.setdefault(guest, []).append(host)
        now = {(g, tuple(sorted(hs))) for g, hs in where.items() if len(hs) > 1}
        for key in list(ongoing):
            if key not in now:
                t, n = ongoing.pop(key)
                stretches.append((t, key[0], key[1], n))
        for key in now:
            t, n = ongoing.get(key, (sample.t, 0))
            ongoing[key] = (t, n + 1)
    stretches += [(t, g, hs, n) for (g, hs), (t, n) in ongoing.items()]
    return sorted(stretches)


def double_runs(samples: Iterable[Sample]) -> list[Violation]:
    """A guest running on two hosts in two samples in a row (one violation per stretch).

    The hosts of one sample are asked one after the other, so a migration's switchover
    can fall between two of them and show the guest on both in that one sample (the
    source listed before it paused, the destination after it resumed); ``transient``
    counts those. A real double run lasts until a fence, far longer than 0.25 s, and a
    second QEMU is refused by the image lock (``refused_starts``) besides."""
    return [
        Violation("runs twice", t, f"{guest} running on {', '.join(hosts)} in {n} samples in a row")
        for t, guest, hosts, n in double_listings(samples)
        if n > 1
    ]


def transient(samples: Iterable[Sample]) -> int:
    """Single-sample double listings (see ``double_runs``)."""
    return sum(1 for *_, n in double_listings(samples) if n == 1)


def runs_once(final: Sample, guests: Iterable[str], stopped: Iterable[str] = ()) -> list[Violation]:
    """After heal and settle every guest runs exactly once, except those a job stopped
    (they may run nowhere, never twice)."""
    found: list[Violation] = []
    allowed_off = set(stopped)
    for guest in sorted(guests):
        hosts = sorted(h for h, gs in final.running.items() if guest in gs)
        if len(hosts) > 1 or (not hosts and guest not in allowed_off):
            where = f"on {', '.join(hosts)}" if hosts else "nowhere"
            found.append(Violation("runs once after settle", final.t, f"{guest} running {where}"))
    return found


def excused(stopped: Mapping[str, float], samples: Sequence[Sample]) -> set[str]:
    """The guests evac said it left stopped (guest -> when, in seconds into the run) that
    ran in no sample since: a restart policy's word, not a guest lost. One that ran again
    after it was left stopped is owed its running like any other."""
    last_ran: dict[str, float] = {}
    for sample in samples:
        for guests in sample.running.values():
            for guest in guests:
                last_ran[guest] = sample.t
    return {guest for guest, t in stopped.items() if last_ran.get(guest, float("-inf")) <= t}


def refused_starts(logs: Mapping[str, str]) -> dict[str, int]:
    """QEMU starts refused by an image lock, per guest log (``host/guest`` -> count)."""
    return {name: text.count(REFUSED) for name, text in logs.items() if REFUSED in text}


def unfinished(jobs: Sequence[tuple[int, str, str, str, bool]]) -> list[Violation]:
    """``(id, runbook, target, state, terminal)``: every job terminal once the bound passed."""
    return [
        Violation("job terminal", None, f"job {i} {runbook} {target} still {state}")
        for i, runbook, target, state, terminal in jobs
        if not terminal
    ]


def journal_disagrees(
    defined: Mapping[str, frozenset[str]], recorded: Mapping[str, frozenset[str]], guests: Iterable[str]
) -> list[Violation]:
    """The journal's snapshot of each answering host defines what virsh defines there (for
    the run's guests): a recorded location is the real one."""
    found: list[Violation] = []
    ours = set(guests)
    for host in sorted(defined):
        real, kept = defined[host] & ours, recorded.get(host, frozenset()) & ours
        for guest in sorted(real - kept):
            found.append(Violation("journal agrees", None, f"{guest} is defined on {host}; its snapshot lacks it"))
        for guest in sorted(kept - real):
            found.append(Violation("journal agrees", None, f"{host}'s snapshot has {guest}; virsh does not"))
    return found


@dataclass(frozen=True)
class Claim:
    """A replica's log line saying it leads: when (wall clock), which host, which revision."""

    ts: float
    host: str
    revision: int


SKEW = 1.0  # s: a claim is logged just after the election, and a fence reads its token just before it presses


def fences_by_non_leaders(
    presses: Iterable[Mapping[str, Any]], claims: Iterable[Claim], since: float
) -> list[Violation]:
    """Every press the power switch accepted with a token since ``since`` was made under
    the leadership of that moment: its token is a revision a replica logged leading with,
    and no newer leadership had been logged more than ``SKEW`` seconds before the press.

    Whoever pressed (the leader's monitor, or an operator's failover run by the CLI or by
    any replica the request reached, which fence under the current leader's token), a
    deposed leader's token is what a split brain would fence with: the switch accepts
    it as long as it saw no newer one, so the check is made here, against the logs."""
    ordered = sorted(claims, key=lambda c: c.ts)
    revisions = {c.revision for c in ordered}
    found: list[Violation] = []
    for press in presses:
        if press["ts"] < since or not press["accepted"] or not press.get("token"):
            continue
        token, caller = int(press["token"]), str(press["caller"]).split(":")[0]
        newer = [c for c in ordered if c.revision > token and c.ts < press["ts"] - SKEW]
        if token not in revisions:
            detail = f"{caller} powered {press['host']} off with token {token}, a revision no replica led with"
        elif newer:
            detail = (
                f"{caller} powered {press['host']} off with token {token}, after {newer[0].host} "
                f"led with revision {newer[0].revision} ({press['ts'] - newer[0].ts:.1f} s before)"
            )
        else:
            continue
        found.append(Violation("fence by leader", press["ts"] - since, detail))
    return found


LEADS = "this replica leads (revision "
STAMP = "%Y-%m-%d %H:%M:%S"  # evac serve's log lines begin with it, then ",milliseconds"


def leader_claims(logs: Mapping[str, str]) -> list[Claim]:
    """Every "this replica leads (revision N)" line of each host's ``serve.log``, with the
    time it was logged: in the local time zone, which the lab's hosts share with the bench
    (they are namespaces of one machine)."""
    claims: list[Claim] = []
    for host, text in logs.items():
        for line in text.splitlines():
            at = line.find(LEADS)
            if at < 0:
                continue
            digits = line[at + len(LEADS) :].split(")")[0]
            try:
                ts = time.mktime(time.strptime(line[:19], STAMP)) + int(line[20:23]) / 1000
            except ValueError:
                continue
            if digits.isdigit():
                claims.append(Claim(ts, host, int(digits)))
    return claims


def lost_hosts_left(notes: Iterable[str], left: str) -> list[Violation]:
    """Every host the nemesis lost (powered off, or reset by its watchdog) is fenced and
    failed over within the bound, unless evac leaves it alone by design (a finished drain
    emptied it): the run's notes (``t=12.3s ...``) say where a revive gave up waiting,
    with ``left`` in the line."""
    found = []
    for note in notes:
        if left in note:
            t, _, line = note.partition("s ")
            found.append(Violation("every lost host is failed over", float(t.removeprefix("t=")), line.strip()))
    return found
