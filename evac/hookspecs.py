"""Every hook evac calls. Each is typed and documented; ``tests/unit/test_hookspecs.py``
fails when one lacks a docstring with an example, or a test that calls it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .hooks import hookspec

if TYPE_CHECKING:
    from .actions import Action, StepContext
    from .appview import AppView, ServicePart
    from .config import ServiceConfig
    from .convergence import ConvergencePolicy, MigrationTuning
    from .doctor import DoctorCheck
    from .events import Event
    from .evidence import EvidenceSource, MonitorSettings
    from .fencing import FenceAgent, FenceMethod
    from .inventory import HostSpec
    from .model import Guest
    from .watchdog import WatchdogMethod


@hookspec
def evac_actions() -> Sequence[Action]:
    """Register runbook actions.

    Return a sequence of :class:`evac.Action`. Two plugins registering the same action
    name is an error that names both plugins.

    Example::

        @hookimpl
        def evac_actions():
            return [Action(name="notify.log", run=lambda ctx: print(ctx.inputs["text"]))]
    """
    raise NotImplementedError


@hookspec
def evac_runbook_dirs() -> Sequence[Path]:
    """Directories of runbooks a plugin ships (``*.yaml``), found by ``evac runbook list``.

    Runbooks found earlier win on a name clash: the core's own, then plugins' in
    registration order.

    Example::

        @hookimpl
        def evac_runbook_dirs():
            return [Path(__file__).parent / "runbooks"]
    """
    raise NotImplementedError


@hookspec
def evac_error_classes() -> Mapping[str, type[BaseException]]:
    """Exception classes a runbook's ``retry.on`` may name, beyond evac's own.

    Return a mapping of name to class; a plugin's action raises them.

    Example::

        @hookimpl
        def evac_error_classes():
            return {"RedfishBusy": RedfishBusy}
    """
    raise NotImplementedError


@hookspec
def evac_event(event: Event) -> None:
    """Observe every event: job, step and item transitions, retries and progress.

    Called synchronously from the engine's threads: return quickly, hand slow work
    (a Slack API call) to a queue. Exceptions are logged and never stop a job.

    Example::

        @hookimpl
        def evac_event(event):
            if event.kind == "job.finished":
                print(event.job_id, event.data["state"])
    """


@hookspec(firstresult=True)
def evac_run_step(ctx: StepContext, action: Action) -> Mapping[str, Any] | None:
    """Run one step (or one ``for_each`` item) and return its outputs.

    ``firstresult``: the core's implementation runs ``action.run(ctx)`` (or ``plan``
    in a dry run); return None to defer to it. Cross-cutting concerns (timing, audit,
    locking around a step) are ``wrapper=True`` implementations that ``yield``.

    Example::

        @hookimpl(wrapper=True)
        def evac_run_step(ctx, action):
            started = time.monotonic()
            try:
                return (yield)
            finally:
                print(action.name, time.monotonic() - started)
    """


@hookspec(firstresult=True)
def evac_choose_target(guest: Guest, candidates: Sequence[str]) -> str | None:
    """Pick the host a guest goes to, among ``candidates`` (every host where it fits and its
    ``hosts`` rule allows; only its preferred hosts when any of those fit).

    ``firstresult``: the first non-None answer wins; return None to defer to evac's
    placement (most free memory, affinity groups first). An answer not in
    ``candidates`` is ignored, so a plugin cannot break capacity or anti-affinity.

    Example::

        @hookimpl
        def evac_choose_target(guest, candidates):
            same_rack = [c for c in candidates if c.startswith("rack1-")]
            return same_rack[0] if same_rack else None
    """


@hookspec
def evac_migration_tuning(
    guest: Guest, source: HostSpec, target: HostSpec, options: Mapping[str, Any]
) -> MigrationTuning | None:
    """Contribute typed parameters and flags to one live migration (storage, network, compression, ...).

    Every plugin's answer is merged; two plugins setting one parameter to different
    values is an error. Raise ``evac.errors.MigrationError`` to refuse the migration
    before it starts (a preflight: the target lacks the guest's bridge). ``options`` are
    the step's inputs (``compression``, ``bandwidth_mib``, ...).

    Example::

        @hookimpl
        def evac_migration_tuning(guest, source, target, options):
            if options.get("tls"):
                return MigrationTuning(params={}, flags=("TLS",), notes=("tls",))
            return None
    """


@hookspec
def evac_verify_guest(guest: Guest, host: HostSpec, app: AppView) -> str | None:
    """Check a guest that has just landed on ``host`` (``vm.verify``, after a live migration).

    ``vm.verify`` calls every plugin once libvirt shows the guest running and persistent
    there; each answers None when satisfied or a one-line reason it is not (the guest
    runs but does not answer on its network). Every reason fails the step, joined.
    ``guest`` is as ``host``'s libvirt describes it now, metadata included.

    Example::

        @hookimpl
        def evac_verify_guest(guest, host, app):
            if not answers_ping(guest):
                return f"{guest.name} runs on {host.name} but does not answer ping"
            return None
    """


@hookspec(firstresult=True)
def evac_convergence_policy(guest: Guest, options: Mapping[str, Any]) -> ConvergencePolicy | None:
    """The policy that watches a migration and escalates when it will not converge.

    ``firstresult``: return None to defer to the next plugin (the built-in adaptive
    policy comes last). A policy that also implements ``evac.MeasuringPolicy`` and wants
    it (``wants_dirty_rate(guest)``: a guest with no history, say) is handed the guest's
    dirty rate, measured by QEMU from just before the migration starts, through
    ``use_dirty_rate(rate)`` as soon as it is known (within the first pass).

    Example::

        @hookimpl
        def evac_convergence_policy(guest, options):
            return NeverEscalate() if "no-postcopy" in guest.name else None
    """


@hookspec(firstresult=True)
def evac_fence_agent(host: HostSpec, method: str, options: Mapping[str, Any]) -> FenceAgent | None:
    """The agent that powers ``host`` off by ``method`` (one entry of its ``fence:`` chain).

    The older way, for agents whose method names cannot be listed: prefer
    :func:`evac_fence_methods`, which ``evac plugins`` lists and the inventory checks.
    ``firstresult``: return None to defer when ``method`` is not yours. The agent has
    ``power_off()`` and ``power_state() -> "on" | "off" | "unknown"``; evac confirms
    ``off`` before it restarts anything, and tries the next method on any failure.

    Example::

        @hookimpl
        def evac_fence_agent(host, method, options):
            if method != "pdu":
                return None
            return PduOutlet(options["url"], options["outlet"])
    """


@hookspec
def evac_fence_methods() -> Sequence[FenceMethod]:
    """Register fence methods: the names an inventory host's ``fence:`` entries may use.

    Return a sequence of :class:`evac.FenceMethod` (name, required and optional settings,
    and ``factory(host, settings)`` building an :class:`evac.FenceAgent`). Two plugins
    registering one name is an error naming both; ``evac plugins`` lists them and the
    inventory loader checks each entry's settings against them (file:line).

    Example::

        @hookimpl
        def evac_fence_methods():
            return [FenceMethod("pdu", lambda host, s: PduOutlet(s["url"], s["outlet"]), required=("url", "outlet"))]
    """
    raise NotImplementedError


@hookspec
def evac_watchdogs() -> Sequence[WatchdogMethod]:
    """Register watchdog methods: what ``agent.watchdog.method`` may name for ``evac agent``.

    Return a sequence of :class:`evac.watchdog.WatchdogMethod` (name, required and optional
    settings, and ``factory(settings)`` building an :class:`evac.watchdog.Watchdog` that is
    not armed yet). The watchdog has ``arm(timeout) -> float`` (the timeout it will use),
    ``feed()``, ``disarm()`` (the magic close: the timer stops) and ``abandon()`` (closed
    without it: the host is reset, as after a crash). Two plugins registering one name is
    an error naming both.

    Example::

        @hookimpl
        def evac_watchdogs():
            return [WatchdogMethod("ipmi", lambda s: IpmiWatchdog(s["bmc"]), required=("bmc",))]
    """
    raise NotImplementedError


@hookspec
def evac_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add subcommands to the ``evac`` command line (``subparsers`` is argparse's).

    Set ``func`` on each parser: it receives the parsed arguments; ``evac.cli.make_app(args)``
    gives the application (read from ``--config``, which every command takes). The
    Slack bot adds ``evac slack`` this way, so the core never imports it.

    Example::

        @hookimpl
        def evac_commands(subparsers):
            parser = subparsers.add_parser("hello", help="say hello")
            parser.set_defaults(func=lambda args: print("hello") or 0)
    """


@hookspec
def evac_config_sections() -> Mapping[str, Callable[[Any, str], Any]]:
    """Claim top-level sections of ``evac.yaml``: name -> parser(data, source).

    The parser validates its section (raising ``ConfigError`` with file:line) and returns
    what the plugin needs; ``evac config check`` and ``evac serve`` call it.

    Example::

        @hookimpl
        def evac_config_sections():
            return {"pagerduty": lambda data, source: parse_pagerduty(data, source)}
    """
    raise NotImplementedError


@hookspec
def evac_services(app: AppView, config: ServiceConfig) -> Sequence[ServicePart]:
    """Long-running parts ``evac serve`` starts beside the monitor and the HTTP API.

    Return :class:`evac.appview.ServicePart` objects: ``start()``, ``stop()`` and
    optionally ``mounts()`` (a mapping of HTTP path to an ASGI app, mounted on the
    service's web server behind its deadlines and limits; two services mounting one path
    is an error). ``config`` is the parsed ``ServiceConfig``, plugins' sections in
    ``config.sections``.

    Example::

        @hookimpl
        def evac_services(app, config):
            section = config.sections.get("slack")
            return [SlackService(app, section)] if section else []
    """
    raise NotImplementedError


@hookspec
def evac_evidence_sources(app: AppView, settings: MonitorSettings) -> Sequence[EvidenceSource]:
    """Sources of evidence the monitor weighs about every host, beside its own.

    The monitor's own are ``libvirt`` (its keepalive connection), ``probe`` (the host's
    libvirt and SSH ports) and ``power`` (the BMC, through the first fence method). A
    source has a unique ``name`` (a name given twice is an error), a
    :class:`evac.evidence.Rule` (is a loss proof alone, or one of the two independent
    losses ``down`` needs; how many dead verdicts in a row confirm it) and
    ``watch(host, report)``: a watch the host's thread polls every ``watch.every``
    seconds, or None for a host the source cannot tell about. A watch may also push
    evidence from its own thread through ``report`` (an etcd watch of agents' leases);
    the host's thread wakes at once. ``settings`` is the monitor's ``MonitorSettings``.

    Example::

        @hookimpl
        def evac_evidence_sources(app, settings):
            return [LeaseSource(etcd_client(app), rule=Rule(confirm=1))]
    """
    raise NotImplementedError


@hookspec
def evac_doctor_checks() -> Sequence[DoctorCheck]:
    """Register checks ``evac doctor`` runs on every host before evac is trusted to fence.

    Return a sequence of :class:`evac.doctor.DoctorCheck`: a unique ``name``, ``run(ctx,
    host) -> Finding`` (``ctx`` is an :class:`evac.doctor.DoctorContext`: the app and the
    run's options; ``host`` a ``HostSpec``), a ``timeout`` and ``safety=True`` when a failure
    makes automatic fencing unsafe. A check that raises is a ``fail`` with its one-line
    error; two plugins registering one name is an error naming both.

    Example::

        @hookimpl
        def evac_doctor_checks():
            return [DoctorCheck("ntp", lambda ctx, host: Finding(Result.PASS, "chrony synced"))]
    """
    raise NotImplementedError
