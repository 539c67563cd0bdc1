"""One nemesis run on a staged lab: faults one after another while the workload runs,
then heal, settle and check every invariant.

``stage`` readies a lab with etcd (replicas with a REST API token, a passed doctor,
guests booted); ``run`` is what both ``python -m bench.nemesis`` and the CI test call.
"""

from __future__ import annotations

import random
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.labkit import Replicas, until
from evac.app import App, make_app
from evac.doctor import diagnose, record
from evac.journal import Journal
from evac.lab import Lab
from evac.lab.guests import GuestSpec, create_guest, wait_console
from evac.states import HostMode

from . import invariants
from .faults import FaultKind, LabShape, kinds_for, next_fault
from .inject import heal, heal_all, inject, release_brake
from .invariants import Sample, Violation
from .report import Injected, Outcome
from .sampler import Sampler
from .workload import Workload

SETTLE_BOUND = 60.0  # s after a heal for the lab to settle before the next fault comes anyway
JOB_BOUND = 120.0  # s after the faults stop for every job to be terminal
AGREE_BOUND = 20.0  # s for the journal's snapshots to catch up with virsh


@dataclass
class Stage:
    lab: Lab
    replicas: Replicas
    app: App
    guests: list[str]
    token: str
    agents: bool = False

    @property
    def journal(self) -> Journal:
        return self.app.journal

    def shape(self) -> LabShape:
        return LabShape(tuple(self.lab.host_names()), tuple(self.replicas.hosts), tuple(self.guests), self.agents)


def say(line: str) -> None:
    print(line, flush=True)


def api_token(lab: Lab) -> tuple[str, Path]:
    path = Path(lab.root) / "nemesis-api-token"
    if not path.exists():
        path.write_text(secrets.token_hex(24))
        path.chmod(0o600)
    return path.read_text().strip(), path


def stage(lab: Lab, guests: dict[str, list[str]], agents: bool = False) -> Stage:
    """Replicas (config ``nemesis.yaml``, with an ``api:`` token) on every member's host,
    the doctor passed into etcd, and ``guests`` (host -> names) booted."""
    token, token_file = api_token(lab)
    if agents:
        lab.agent_section()
    api = {"tokens": [{"name": "nemesis", "token": f"file:{token_file}", "scopes": ["read", "run:*", "cancel"]}]}
    replicas = Replicas(lab, file="nemesis.yaml", api=api)
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
    for host, wanted in guests.items():
        for name in wanted:
            offsets[name] = create_guest(lab, host, GuestSpec(name=name))
            names.append(name)
    for name in names:
        wait_console(lab, name, after=offsets[name], timeout=300)
    return Stage(lab, replicas, app, names, token, agents)


def settled(st: Stage, sampler: Sampler, log: Callable[[str], None] | None = None) -> bool:
    """Every guest runs exactly once, one replica leads and sees every powered host up.
    With ``log``, an engaged storm brake is released (``inject.release_brake``)."""
    if log is not None:
        release_brake(st.journal, log)
    if invariants.runs_once(sampler.sample(), st.guests):
        return False
    leader = st.replicas.leader()
    return leader is not None and st.replicas.settled(leader)


def settle_time(st: Stage, sampler: Sampler, log: Callable[[str], None], bound: float = SETTLE_BOUND) -> float | None:
    start = time.monotonic()
    try:
        until(lambda: settled(st, sampler, log), bound, "settled", every=0.25)
    except TimeoutError:
        return None
    return round(time.monotonic() - start, 2)


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


def run(st: Stage, seconds: float, seed: int, hold: tuple[float, float] = (2.0, 6.0)) -> Outcome:
    """Faults for ``seconds`` (the last one is healed after), then heal, settle, check."""
    say(f"nemesis seed {seed}: {seconds:.0f} s of faults on {', '.join(st.lab.host_names())}, guests {st.guests}")
    lab, outcome = st.lab, Outcome(seed=seed, seconds=0.0)
    t0, wall0 = time.monotonic(), time.time()
    refused_before = invariants.refused_starts(qemu_logs(lab, st.guests))
    sampler = Sampler(lab, t0)
    sampler.start()
    until(lambda: settled(st, sampler, say), SETTLE_BOUND, "the lab settled before the first fault", every=0.25)
    workload = Workload(lab, st.replicas, st.token, seed + 1, t0, list(st.replicas.hosts))
    workload.start()
    rng, shape = random.Random(seed), st.shape()
    kinds = kinds_for(shape)

    def log(line: str) -> None:
        """What the nemesis did beyond a fault and its heal: printed and kept as a note."""
        say(line)
        outcome.notes.append(f"t={time.monotonic() - t0:.1f}s {line.strip()}")

    try:
        while time.monotonic() - t0 < seconds:
            fault = next_fault(rng, shape, kinds, hold)
            at = round(time.monotonic() - t0, 2)
            where = fault.target or "(the next migration's destination)"
            say(f"  [{at:6.1f}s] fault: {fault.kind} on {where} for {fault.hold:.1f} s")
            fault = inject(lab, st.replicas, fault, sampler)
            if fault.kind is FaultKind.KILL_DESTINATION and not fault.target:
                say("  no migration in flight: nothing powered off")
            time.sleep(fault.hold)  # the fault's own duration, not a wait for a result
            heal(lab, st.replicas, st.journal, fault, log)
            settle = settle_time(st, sampler, log)
            say(f"  [{time.monotonic() - t0:6.1f}s] healed {fault.kind} on {fault.target}; settled in {settle} s")
            outcome.injected.append(Injected(at, fault, settle))
    finally:
        workload.stop()
        heal_all(lab, st.replicas, st.journal, log)
    workload.finish()
    outcome.actions = workload.actions
    say(f"  [{time.monotonic() - t0:6.1f}s] faults stopped, everything healed; checking")
    outcome.violations += check_jobs(st, wall0)
    final = final_sample(st, sampler, log)
    outcome.violations += invariants.runs_once(final, st.guests)
    outcome.violations += check_journal(st, sampler)
    sampler.stop()
    outcome.samples, outcome.sample_gaps = len(sampler.samples), sampler.gaps
    outcome.violations = invariants.double_runs(sampler.samples) + outcome.violations
    outcome.transient = invariants.transient(sampler.samples)
    claims = invariants.leader_claims(serve_logs(lab, list(st.replicas.hosts)))
    outcome.violations += invariants.fences_by_non_leaders(lab.power_log(), claims, wall0)
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
    try:
        until(lambda: settled(st, sampler, log), SETTLE_BOUND, "settled after heal", every=0.25)
    except TimeoutError:
        pass
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
    for host, state in st.journal.host_states().items():
        if state.state != HostMode.ENABLED:
            st.journal.set_host_state(host, HostMode.ENABLED, "nemesis: back in service", "nemesis")
    for host in st.replicas.hosts:
        st.replicas.stop(host)
    if st.agents:
        st.lab.remove_agents()
    st.app.close()
