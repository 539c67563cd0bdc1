"""One nemesis run on a staged lab: rounds of faults (some overlapping) while the
workload runs, then heal, settle and check every invariant.

``stage`` readies a lab with etcd (replicas with a REST API token and a Slack bot on the
mock Web API, a passed doctor, agents if asked, guests booted); ``run`` is what both
``python -m bench.nemesis`` and the CI test call.
"""

from __future__ import annotations

import random
import secrets
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.labkit import Replicas, until
from evac.app import App, make_app
from evac.doctor import diagnose, record
from evac.errors import EvacError
from evac.journal import Journal
from evac.lab import Lab
from evac.lab.agents import WATCHDOG_TIMEOUT
from evac.lab.guests import GuestSpec, create_guest, wait_console
from evac.states import HostMode
from tests.slackmock import SlackMock

from . import invariants
from .faults import OVERLAP, Fault, FaultKind, LabShape, Round, kinds_for, next_round
from .inject import LOST_HOST_LEFT, heal, heal_all, inject, release_brake, revive_lost
from .invariants import Sample, Violation
from .report import Injected, Outcome
from .sampler import Sampler
from .workload import SLACK_USER, SlackSide, Workload

SETTLE_BOUND = 90.0  # s after a round's heals for the lab to settle before the next round comes anyway
JOB_BOUND = 120.0  # s after the faults stop for every job to be terminal
AGREE_BOUND = 20.0  # s for the journal's snapshots to catch up with virsh
# With agents, a host whose lease lapsed during a fault resets itself a watchdog timeout
# after it stopped feeding, which can come after the heal: settled must hold this long.
QUIET_WITH_AGENTS = WATCHDOG_TIMEOUT + 3.0


@dataclass
class Stage:
    lab: Lab
    replicas: Replicas
    app: App
    guests: list[str]
    token: str
    slack: SlackSide
    agents: bool = False

    @property
    def journal(self) -> Journal:
        return self.app.journal

    @property
    def quiet(self) -> float:
        return QUIET_WITH_AGENTS if self.agents else 0.0

    def shape(self) -> LabShape:
        return LabShape(tuple(self.lab.host_names()), tuple(self.replicas.hosts), tuple(self.guests), self.agents)


def say(line: str) -> None:
    print(line, flush=True)


def lab_secret(lab: Lab, name: str) -> tuple[str, Path]:
    """A secret kept in the lab's root (made on first use), and its file."""
    path = Path(lab.root) / name
    if not path.exists():
        path.write_text(secrets.token_hex(24))
        path.chmod(0o600)
    return path.read_text().strip(), path


def slack_section(lab: Lab, mock: SlackMock) -> tuple[dict[str, Any], str]:
    """The replicas' ``slack:`` section (HTTP mode, on the mock Web API at the lab's bridge)
    and its signing secret: the workload's user may drain, return and rebalance."""
    secret, secret_file = lab_secret(lab, "nemesis-slack-secret")
    _, bot_file = lab_secret(lab, "nemesis-slack-bot-token")
    section = {
        "bot_token": f"file:{bot_file}",
        "signing_secret": f"file:{secret_file}",
        "mode": "http",
        "api_url": mock.url,
        "acl": {command: {"users": [SLACK_USER]} for command in ("evacuate", "return", "rebalance", "status")},
    }
    return section, secret


def stage(lab: Lab, guests: dict[str, list[GuestSpec]], agents: bool = False) -> Stage:
    """Replicas (config ``nemesis.yaml``, with an ``api:`` token and a Slack bot on the
    mock Web API) on every member's host, the doctor passed into etcd, agents if asked,
    and ``guests`` (host -> specs) booted."""
    token, token_file = lab_secret(lab, "nemesis-api-token")
    if agents:
        lab.agent_section()
    mock = SlackMock(address=lab.bridge_ip)
    slack, secret = slack_section(lab, mock)
    api = {"tokens": [{"name": "nemesis", "token": f"file:{token_file}", "scopes": ["read", "run:*", "cancel"]}]}
    replicas = Replicas(lab, file="nemesis.yaml", api=api, slack=slack)
    app = make_app(replicas.configs[replicas.hosts[0]])
    for doctor in diagnose(app):
        record(app.journal, doctor)
    for host in replicas.hosts:
        replicas.start(host)
    if agents:
        for host in lab.host_names():
            lab.start_agent(host)
    names: list[str] = []
    offsets = {}
    for host, specs in guests.items():
        for spec in specs:
            offsets[spec.name] = create_guest(lab, host, spec)
            names.append(spec.name)
    for name in names:
        wait_console(lab, name, after=offsets[name], timeout=300)
    return Stage(lab, replicas, app, names, token, SlackSide(mock, secret), agents)


def guest_specs(hosts: list[str], count: int) -> dict[str, list[GuestSpec]]:
    """``count`` guests spread over ``hosts``: one in four busy (dirtying memory, so its
    migrations need tuning to converge), and every fourth one restarted by a failover
    only after the one before it (``after=``), so restart ordering is under faults too."""
    specs: dict[str, list[GuestSpec]] = {h: [] for h in hosts}
    for i in range(count):
        busy = i % 4 == 1
        after = (f"nem-{i - 1}",) if i % 4 == 3 else ()
        spec = GuestSpec(
            name=f"nem-{i}", memory_mib=192 if busy else 128, dirty_mb=24 if busy else 0, dirty_pause_ms=20, after=after
        )
        specs[hosts[i % len(hosts)]].append(spec)
    return specs


def unsettled(st: Stage, sampler: Sampler, log: Callable[[str], None]) -> str:
    """Why the lab has not settled, or "": every host powered, every guest runs exactly
    once (or was left stopped by evac), one replica leads and sees every host up. On the
    way, an engaged storm brake is released (``inject.release_brake``) and a host found
    powered off is revived (``inject.revive_lost``), as the operator would."""
    try:
        release_brake(st.journal, log)
    except EvacError as exc:  # etcd without quorum: the lab is not settled, and says why
        return f"journal: {exc}"
    revive_lost(st.lab, st.replicas, st.journal, log)
    off = [h for h in st.lab.host_names() if st.lab.power_state(h) == "off"]
    if off:
        return f"powered off: {', '.join(off)}"
    sample = sampler.sample()
    if invariants.runs_once(sample, st.guests):
        try:
            wrong = invariants.runs_once(sample, st.guests, excused(st, sampler))
        except EvacError as exc:
            return f"journal: {exc}"
        if wrong:
            return "; ".join(v.detail for v in wrong)
    leader = st.replicas.leader()
    if leader is None:
        return f"no one replica leads (running: {', '.join(st.replicas.running()) or 'none'})"
    if not st.replicas.settled(leader):
        return f"the leader {leader} does not see every host up: {(st.replicas.health(leader) or {}).get('hosts')}"
    return ""


def left_stopped(st: Stage, sampler: Sampler) -> dict[str, tuple[float, str]]:
    """guest -> (seconds into the run, why) for each guest evac's audit says it left
    stopped during this run (its restart policy gave up on it), the latest word each."""
    found: dict[str, tuple[float, str]] = {}
    for entry in sorted(st.journal.audit_log(1000), key=lambda a: a.ts):
        if entry.action == "guest.left_stopped" and entry.ts >= sampler.wall0:
            found[entry.target] = (entry.ts - sampler.wall0, str(entry.detail.get("why", "")))
    return found


def excused(st: Stage, sampler: Sampler) -> set[str]:
    """The guests that may run nowhere: left stopped by evac, and not run since."""
    stopped = {guest: t for guest, (t, _) in left_stopped(st, sampler).items()}
    return invariants.excused(stopped, sampler.samples) if stopped else set()


def start_by_hand(st: Stage, sampler: Sampler, log: Callable[[str], None]) -> None:
    """The operator's answer to a guest left stopped ("find out why, then start it by
    hand") before the next run: ``virsh start`` where it is defined."""
    final = sampler.sample()
    running = {g for guests in final.running.values() for g in guests}
    for host, defined in sampler.defined().items():
        for guest in sorted(set(st.guests) & defined - running):
            virsh = ["virsh", "-q", "-c", st.lab.host(host).uri, "start", guest]
            done = subprocess.run(virsh, capture_output=True, text=True, check=False)
            said = "started" if done.returncode == 0 else f"not started ({done.stderr.strip()[:100]})"
            log(f"  {guest} ran nowhere (left stopped); {said} by hand on {host}")
            if done.returncode == 0:
                running.add(guest)


def settle_time(st: Stage, sampler: Sampler, log: Callable[[str], None], bound: float = SETTLE_BOUND) -> float | None:
    """Seconds until settled, and still settled ``st.quiet`` seconds later; None: not
    within ``bound``."""
    start = time.monotonic()
    since: float | None = None
    why = ""
    while time.monotonic() - start < bound:
        why = unsettled(st, sampler, log)
        if not why:
            since = since if since is not None else time.monotonic()
            if time.monotonic() - since >= st.quiet:
                return round(since - start, 2)
        else:
            since = None
        time.sleep(0.25)
    log(f"  ! not settled within {bound:.0f} s: {why}")
    return None


def qemu_logs(lab: Lab, guests: list[str]) -> dict[str, str]:
    logs = {}
    for host in lab.host_names():
        for guest in guests:
            path = Path(lab.host_dir(host)) / "log" / "qemu" / f"{guest}.log"
            if path.exists():
                logs[f"{host}/{guest}"] = path.read_text(errors="replace")
    return logs


def serve_logs(lab: Lab, hosts: list[str]) -> dict[str, str]:
    logs = {}
    for host in hosts:
        path = Path(lab.host_dir(host)) / "log" / "serve.log"
        if path.exists():
            logs[host] = path.read_text(errors="replace")
    return logs


def play(st: Stage, rnd: Round, sampler: Sampler, t0: float, log: Callable[[str], None]) -> list[Injected]:
    """Inject the round's faults and heal each when its hold is over, each heal on a
    thread of its own: a heal that revives a host waits for its failover first, and that
    failover may need the replica the other fault stopped, which must not wait for it.
    Then settle."""
    start = time.monotonic()

    def at(offset: float) -> float:
        time.sleep(max(0.0, start + offset - time.monotonic()))  # the round's own timeline
        return round(time.monotonic() - t0, 2)

    def hit(fault: Fault, avoid: str = "") -> tuple[float, Fault]:
        when = round(time.monotonic() - t0, 2)
        where = fault.target or "(the next migration's destination)"
        say(f"  [{when:6.1f}s] fault: {fault.kind} on {where} for {fault.hold:.1f} s")
        done = inject(st.lab, st.replicas, fault, sampler, avoid)
        if not done.target:
            say(f"  no {'migration in flight' if fault.kind is FaultKind.KILL_DESTINATION else 'target'}: nothing done")
        return when, done

    hits = [hit(rnd.first)]
    heals = [(rnd.first.hold, hits[0][1])]
    if rnd.second is not None and rnd.second.target != hits[0][1].target:  # the leader may be the first's host
        at(rnd.delay)
        hits.append(hit(rnd.second, avoid=hits[0][1].target))
        heals.append((rnd.delay + rnd.second.hold, hits[1][1]))
    failed: list[BaseException] = []

    def heal_at(offset: float, fault: Fault) -> None:
        at(offset)
        try:
            heal(st.lab, st.replicas, st.journal, fault, log)
        except BaseException as exc:  # raised again on the run's thread
            failed.append(exc)

    healers = [threading.Thread(target=heal_at, args=h, name=f"heal-{h[1].kind.name}") for h in heals]
    for healer in healers:
        healer.start()
    for healer in healers:
        healer.join()
    if failed:
        raise failed[0]
    healed_at = time.monotonic() - t0
    settle = settle_time(st, sampler, log)
    healed = "; ".join(f"{f.kind} on {f.target or '-'}" for _, f in hits)
    say(f"  [{time.monotonic() - t0:6.1f}s] healed {healed}; settled in {settle} s")
    overlapped = len(hits) > 1 and all(f.target for _, f in hits)
    return [
        Injected(when, fault, settle, overlapped, None if settle is None else round(healed_at + settle - when, 2))
        for when, fault in hits
    ]


def run(
    st: Stage, seconds: float, seed: int, hold: tuple[float, float] = (2.0, 6.0), overlap: float = OVERLAP
) -> Outcome:
    """Rounds of faults for ``seconds`` (the last one is healed after), then heal, settle, check."""
    say(f"nemesis seed {seed}: {seconds:.0f} s of faults on {', '.join(st.lab.host_names())}, guests {st.guests}")
    lab, outcome = st.lab, Outcome(seed=seed, seconds=0.0)
    t0, wall0 = time.monotonic(), time.time()
    refused_before = invariants.refused_starts(qemu_logs(lab, st.guests))
    sampler = Sampler(lab, t0)
    sampler.start()
    start_by_hand(st, sampler, say)
    if settle_time(st, sampler, say) is None:
        raise TimeoutError(f"the lab did not settle within {SETTLE_BOUND:.0f} s before the first fault")
    workload = Workload(lab, st.replicas, st.token, seed + 1, t0, list(st.replicas.hosts), st.slack)
    workload.start()
    rng, shape = random.Random(seed), st.shape()
    kinds = kinds_for(shape)

    def log(line: str) -> None:
        """What the nemesis did beyond a fault and its heal: printed and kept as a note."""
        say(line)
        outcome.notes.append(f"t={time.monotonic() - t0:.1f}s {line.strip()}")

    try:
        while time.monotonic() - t0 < seconds:
            outcome.injected += play(st, next_round(rng, shape, kinds, hold, overlap), sampler, t0, log)
    finally:
        workload.stop()
        heal_all(lab, st.replicas, st.journal, log)
    workload.finish()
    outcome.actions = workload.actions
    say(f"  [{time.monotonic() - t0:6.1f}s] faults stopped, everything healed; checking")
    outcome.violations += check_jobs(st, wall0)
    final = final_sample(st, sampler, log)
    stopped = excused(st, sampler)
    outcome.violations += invariants.runs_once(final, st.guests, stopped)
    outcome.stopped = {g: why for g, (_, why) in left_stopped(st, sampler).items() if g in stopped}
    outcome.violations += check_journal(st, sampler)
    sampler.stop()
    outcome.samples, outcome.sample_gaps = len(sampler.samples), sampler.gaps
    outcome.violations = invariants.double_runs(sampler.samples) + outcome.violations
    outcome.transient = invariants.transient(sampler.samples)
    claims = invariants.leader_claims(serve_logs(lab, list(st.replicas.hosts)))
    outcome.violations += invariants.fences_by_non_leaders(lab.power_log(), claims, wall0)
    outcome.violations += invariants.lost_hosts_left(outcome.notes, LOST_HOST_LEFT)
    refused = invariants.refused_starts(qemu_logs(lab, st.guests))
    outcome.refused_starts = {k: n - refused_before.get(k, 0) for k, n in refused.items()}
    outcome.refused_starts = {k: n for k, n in outcome.refused_starts.items() if n}
    outcome.jobs = dict(
        Counter(f"{j.runbook} {j.state}" for j in st.journal.jobs(500) if j.created >= wall0 and not j.dry_run)
    )
    outcome.seconds = time.monotonic() - t0
    return outcome


def check_jobs(st: Stage, wall0: float) -> list[Violation]:
    def unfinished() -> list[tuple[int, str, str, str, bool]]:
        jobs = [j for j in st.journal.jobs(500) if j.created >= wall0]
        return [(j.id, j.runbook, j.target, str(j.state), j.state.terminal) for j in jobs]

    try:
        until(lambda: not invariants.unfinished(unfinished()), JOB_BOUND, "every job terminal", every=0.5)
    except TimeoutError:
        pass
    return invariants.unfinished(unfinished())


def final_sample(st: Stage, sampler: Sampler, log: Callable[[str], None]) -> Sample:
    settle_time(st, sampler, log)
    return sampler.sample()


def check_journal(st: Stage, sampler: Sampler) -> list[Violation]:
    def disagreements() -> list[Violation]:
        defined = sampler.defined()
        recorded = {h: frozenset(st.journal.definitions(h)) for h in defined}
        return invariants.journal_disagrees(defined, recorded, st.guests)

    try:
        until(lambda: not disagreements(), AGREE_BOUND, "the journal agrees with virsh", every=0.5)
    except TimeoutError:
        pass
    return disagreements()


def tidy(st: Stage) -> None:
    """Leave the lab as the other HA tests expect: guests removed, replicas and agents gone."""
    from bench.labkit import destroy_all

    destroy_all(st.lab, st.guests)
    try:
        for host, state in st.journal.host_states().items():
            if state.state != HostMode.ENABLED:
                st.journal.set_host_state(host, HostMode.ENABLED, "nemesis: back in service", "nemesis")
    except EvacError as exc:  # the lab's next `up` repairs etcd; the hosts' states stay as they are
        say(f"tidy: hosts not put back in service: {exc}")
    for host in st.replicas.hosts:
        st.replicas.stop(host)
    if st.agents:
        st.lab.remove_agents()
    st.app.close()
    st.slack.mock.stop()
