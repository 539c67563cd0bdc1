"""Doing and undoing each fault on a lab, and healing everything at the end.

The lab's own primitives (``evac.lab``) do the work; this module only maps a fault kind
onto them, and brings a lost host back the way an operator would: network healed,
powered on, its replica and etcd member started, back in service once its failover is
over.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import replace

from bench.labkit import Replicas, until
from evac.errors import EvacError
from evac.journal import Journal
from evac.lab import Lab
from evac.lab.agents import WATCHDOG_TIMEOUT
from evac.lab.guests import qemu_pids
from evac.lab.layout import LabError
from evac.monitor import exempt
from evac.states import HostMode

from .faults import DESTINATION, LEADER, Fault, FaultKind
from .sampler import Sampler

FAILOVER_BOUND = 60.0  # s a lost host's failover may take before it is powered on anyway
LOST_HOST_LEFT = "lost host not failed over"  # how a revive that gave up says so (invariants.lost_hosts_left)
DESTINATION_WAIT = 15.0  # s a migration's destination is waited for (the workload moves guests every few seconds)
RESET_BOUND = WATCHDOG_TIMEOUT + 10.0  # s for a host whose agent was killed to be reset by its watchdog


def inject(lab: Lab, replicas: Replicas, fault: Fault, sampler: Sampler, avoid: str = "") -> Fault:
    """Inject ``fault``; returns it with the target it hit, or with an empty target when
    nothing was done. A migration's destination is waited for (``DESTINATION_WAIT``); a
    controller fault aimed at the leader hits whichever replica leads. Neither hits
    ``avoid`` (the host an overlapping fault already holds)."""
    kind, target = fault.kind, fault.target
    if kind is FaultKind.KILL_DESTINATION:
        deadline = time.monotonic() + max(fault.hold, DESTINATION_WAIT)
        while (found := sampler.incoming()) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if found is None or found == avoid:
            return fault
        fault = replace(fault, target=found)
        lab.kill_host(found)
        return fault
    if target == LEADER:
        target = replicas.leader() or DESTINATION
        if target in (DESTINATION, avoid):
            return replace(fault, target=DESTINATION)
        fault = replace(fault, target=target)
    if kind is FaultKind.KILL_CONTROLLER:
        lab.stop_serve(target, signal.SIGKILL)
    elif kind is FaultKind.RESTART_SERVICE:
        lab.stop_serve(target, signal.SIGTERM)
    elif kind is FaultKind.POWER_OFF:
        lab.kill_host(target)
    elif kind is FaultKind.CUT_HOST:
        lab.cut(target)
    elif kind is FaultKind.CUT_ETCD:
        lab.cut_etcd(target)
    elif kind is FaultKind.KILL_ETCD:
        lab.kill_etcd(target)
    elif kind is FaultKind.PACKET_LOSS:
        lab.set_loss(target, 20)
    elif kind is FaultKind.KILL_QEMU:
        for pid in qemu_pids(target):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    elif kind is FaultKind.STOP_AGENT:
        lab.stop_agent(target, signal.SIGKILL)
    return fault


def heal(lab: Lab, replicas: Replicas, journal: Journal, fault: Fault, log: Callable[[str], None]) -> None:
    """Undo ``fault``; a lost host comes back only once evac is done failing it over."""
    kind, target = fault.kind, fault.target
    if not target:
        return
    if kind in (FaultKind.KILL_CONTROLLER, FaultKind.RESTART_SERVICE):
        if lab.power_state(target) == "on":
            replicas.start(target)
    elif kind is FaultKind.CUT_ETCD:
        lab.heal_etcd(target)
    elif kind is FaultKind.KILL_ETCD:
        if lab.power_state(target) == "on":
            lab.start_etcd(target)
    elif kind is FaultKind.PACKET_LOSS:
        lab.set_loss(target, 0)
    elif kind is FaultKind.CUT_HOST:
        lab.heal(target)
        if lab.power_state(target) == "off":  # fenced while cut
            revive(lab, replicas, journal, target, log)
    elif kind in (FaultKind.POWER_OFF, FaultKind.KILL_DESTINATION):
        revive(lab, replicas, journal, target, log)
    elif kind is FaultKind.STOP_AGENT:
        try:  # a killed agent leaves its watchdog armed: the host is reset
            until(lambda: lab.power_state(target) == "off", RESET_BOUND, f"{target} reset by its watchdog", every=0.2)
        except TimeoutError as exc:
            log(f"  ! {exc}")
        revive(lab, replicas, journal, target, log)


def release_brake(journal: Journal, log: Callable[[str], None]) -> None:
    """Two hosts lost within the monitor's window engage the storm brake, which pauses
    failover until an operator releases it: the nemesis releases it (the operator who
    checked that the hosts are really down), so the lost hosts' guests are restarted."""
    brake = journal.brake()
    if brake is not None:
        log(f"  storm brake engaged ({brake.reason.split(':')[0]}); released")
        journal.release_brake()


def handled(journal: Journal, host: str, log: Callable[[str], None]) -> bool:
    """evac is done with a lost host: fenced, and no failover of it still running; or
    left alone as evac leaves a host its finished drain emptied (``monitor.exempt``: the
    settle's "runs once" check finds any guest such a host took down with it)."""
    try:
        release_brake(journal, log)
        state = journal.host_states().get(host)
        busy = any(j.runbook == "host-failure" and j.target == host for j in journal.unfinished_jobs())
        left_alone = state is not None and state.state == HostMode.MAINTENANCE and exempt(state, journal) is not None
    except EvacError:  # etcd still electing: ask again
        return False
    return not busy and (left_alone or (state is not None and state.state == HostMode.FENCED))


def revive(lab: Lab, replicas: Replicas, journal: Journal, host: str, log: Callable[[str], None]) -> None:
    """Power a lost host on once evac fenced it and failed it over (as an operator would
    after the repair), or after FAILOVER_BOUND, said in the log."""
    if lab.power_state(host) == "off":
        try:
            until(lambda: handled(journal, host, log), FAILOVER_BOUND, f"{host} fenced and failed over", every=0.5)
        except TimeoutError:
            why = why_not_handled(lab, replicas, journal, host)
            log(f"  ! {LOST_HOST_LEFT}: {host} within {FAILOVER_BOUND:.0f} s; powering it on anyway; {why}")
        try:
            lab.start_host(host)
        except (LabError, EvacError) as exc:  # its daemons were still coming up: settling revives it again
            log(f"  ! {host} not powered on yet: {exc}")
            return
    try:
        if host in replicas.hosts:
            replicas.start(host)
        if lab.has_agents():
            lab.start_agent(host)
        enable(journal, host)
    except (TimeoutError, LabError, EvacError) as exc:  # etcd without quorum yet: settling tries again
        log(f"  ! {host} powered on, not yet back in service: {exc}")


def why_not_handled(lab: Lab, replicas: Replicas, journal: Journal, host: str) -> str:
    """What evac showed of a lost host it did not fail over: its state, the jobs on it, who
    leads and what the replicas last logged about it (the CI log is all there is)."""
    try:
        state = journal.host_states().get(host)
        jobs = [f"job {j.id} {j.runbook}" for j in journal.unfinished_jobs() if j.target == host]
        said = f"state {state.state if state else 'enabled'}, unfinished: {jobs or 'none'}"
    except EvacError as exc:
        said = f"journal: {exc}"
    lines = []
    for replica in replicas.running():
        log_file = lab.host_dir(replica) / "log" / "serve.log"
        about = [line for line in log_file.read_text(errors="replace").splitlines() if host in line]
        lines += [f"{replica}: {line[11:200]}" for line in about[-4:]]
    return f"{said}; leader {replicas.leader()}; " + " | ".join(lines)


def enable(journal: Journal, host: str) -> None:
    """A fenced host back in service (the operator's ``evac host enable``, without a return)."""
    state = journal.host_states().get(host)
    if state is not None and state.state == HostMode.FENCED:
        journal.set_host_state(host, HostMode.ENABLED, "nemesis: powered on again", "nemesis")


def revive_lost(lab: Lab, replicas: Replicas, journal: Journal, log: Callable[[str], None]) -> None:
    """Every host found powered off revived (with agents, a host resets itself when its
    lease lapsed during a fault, which can come after the heal), and a powered host's
    replica or agent that a revive could not start yet (no quorum then) started."""
    for host in lab.host_names():
        if lab.power_state(host) == "off":
            log(f"  {host} found powered off; reviving it")
            revive(lab, replicas, journal, host, log)
        elif (host in replicas.hosts and not lab.serve_pids(host)) or (lab.has_agents() and not lab.agent_pids(host)):
            log(f"  {host}'s replica or agent is not running; starting it")
            revive(lab, replicas, journal, host, log)


def heal_all(lab: Lab, replicas: Replicas, journal: Journal, log: Callable[[str], None]) -> None:
    """Everything back: networks, etcd members, the powered hosts' replicas (a lost host's
    failover needs a majority of them), then the lost hosts, agents, service."""
    for host in lab.host_names():
        if lab.is_cut(host):
            lab.heal(host)
        lab.set_loss(host, 0)
        if lab.has_etcd() and host in lab.etcd_member_names() and lab.etcd_is_cut(host):
            lab.heal_etcd(host)
    for host in lab.host_names():
        if lab.power_state(host) == "on" and host in lab.etcd_member_names():
            if not lab.etcd_health().get(host, True):
                lab.start_etcd(host)
            if host in replicas.hosts:
                replicas.start(host)
    for host in lab.host_names():
        if lab.power_state(host) == "off":
            revive(lab, replicas, journal, host, log)
    for host in lab.host_names():
        if lab.has_agents() and not lab.agent_pids(host):
            lab.start_agent(host)
        enable(journal, host)
