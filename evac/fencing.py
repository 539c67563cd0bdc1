"""Fencing: power a host off through its chain of methods and confirm it is off.

Nothing a dead host ran may start elsewhere until it is fenced: this module is the only
way evac declares a host fenced. Each method in the host's inventory ``fence:`` list is
tried in order (e.g. redfish, then a PDU, then ssh); a method counts only when the power
is read back as off afterwards, since some agents report success before the node is off.

A plugin provides a method by returning a :class:`FenceMethod` from
``evac_fence_methods()``: its name, the settings it takes (checked with file:line when the
inventory loads) and a factory that builds a :class:`FenceAgent` for one host. The older
``evac_fence_agent(host, method, options)`` hook still works, but its methods cannot be
listed or checked before a fence is needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

import pluggy

from .errors import ConfigError, EvacError, FencingError, Interrupted
from .inventory import FenceSpec, HostSpec
from .registry import by_name

if TYPE_CHECKING:
    from .appview import AppView

METHOD_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")


@runtime_checkable
class FenceAgent(Protocol):
    """What a fence method's factory returns: one host's power switch.

    ``power_off()`` switches the host off hard (no graceful shutdown) and raises
    ``FencingError`` (or any exception) when it cannot; ``power_state()`` reads the power
    back. evac polls ``power_state()`` until it says ``off``: an agent that reports
    success while the power stays on does not count, and the next method is tried.
    """

    def power_off(self) -> None:
        """Switch the host off hard (no graceful shutdown)."""
        ...

    def power_state(self) -> str:
        """``on``, ``off`` or ``unknown``."""
        ...


@dataclass(frozen=True)
class FenceMethod:
    """A fence method a plugin registers through ``evac_fence_methods``.

    ``factory(host, settings)`` builds the agent for one host from its inventory entry
    (``settings`` is the entry without ``method``); it should not talk to the hardware yet.
    ``required`` and ``optional`` name the settings the entry may have: the inventory
    loader rejects a missing required one and an unknown one, naming file:line and field.
    ``optional=None`` accepts any other setting (the ``agent`` method passes them on).
    ``with_app(host, settings, app)``, when given, is used instead of ``factory`` wherever
    the running evac is at hand: a method that judges from evac's own state (``watchdog``
    reads the agents' leases in etcd) needs it.
    """

    name: str
    factory: Callable[[HostSpec, Mapping[str, Any]], FenceAgent]
    description: str = ""
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] | None = ()
    with_app: Callable[[HostSpec, Mapping[str, Any], AppView], FenceAgent] | None = None

    def __post_init__(self) -> None:
        if not self.name or not set(self.name) <= METHOD_NAME_CHARS:
            raise ValueError(f"fence method name {self.name!r}: expected a lowercase word, like redfish")

    @property
    def settings(self) -> tuple[str, ...]:
        """Every setting the method names (required first)."""
        return (*self.required, *(self.optional or ()))


def registered_fence_methods(pm: pluggy.PluginManager) -> list[tuple[str, FenceMethod]]:
    """(plugin name, method) for every registration through ``evac_fence_methods``, duplicates included."""
    hook = getattr(pm.hook, "evac_fence_methods", None)
    if hook is None:  # no plugin implements it (and no spec declares it)
        return []
    pairs: list[tuple[str, FenceMethod]] = []
    for impl in reversed(hook.get_hookimpls()):
        methods = cast("Iterable[FenceMethod] | None", impl.function())
        pairs.extend((impl.plugin_name, method) for method in methods or ())
    return pairs


def fence_methods(pm: pluggy.PluginManager) -> dict[str, FenceMethod]:
    """Every registered fence method by name; a name registered twice is an error naming both plugins.

    Pass it to ``load_inventory(path, fence_methods=...)`` so a bad ``fence:`` entry is
    reported when the inventory loads, not when a host dies.
    """
    return by_name("fence method", registered_fence_methods(pm))


def legacy_fence_agent_plugins(pm: pluggy.PluginManager) -> list[str]:
    """Plugins that provide agents through ``evac_fence_agent``: their method names cannot be
    listed, so the inventory cannot call a method it does not know a mistake while they load."""
    return sorted({impl.plugin_name for impl in pm.hook.evac_fence_agent.get_hookimpls()})


@dataclass(frozen=True)
class FenceAttempt:
    method: str
    ok: bool
    seconds: float
    detail: str = ""


@dataclass(frozen=True)
class FenceResult:
    host: str
    method: str
    seconds: float
    attempts: tuple[FenceAttempt, ...] = field(default_factory=tuple)


def read_secret_file(host: str, method: str, path: str) -> str:
    """A fence method's ``password_file``, stripped; a missing or unreadable file is a
    one-line error (``evac config check`` reports it, and a file others can read, before a
    fence needs it). For fence plugins."""
    try:
        return Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{host}: fence method {method}: password_file {path}: {reason}") from None


def agent_for(pm: pluggy.PluginManager, host: HostSpec, spec: FenceSpec, app: AppView | None = None) -> FenceAgent:
    """The agent for one entry of ``host``'s fence chain: a registered method's factory
    (``with_app`` when ``app`` is given), else the first ``evac_fence_agent`` implementation
    that answers."""
    method = fence_methods(pm).get(spec.method)
    if method is not None:
        if method.with_app is not None and app is not None:
            return method.with_app(host, spec.options, app)
        return method.factory(host, spec.options)
    agent: FenceAgent | None = pm.hook.evac_fence_agent(host=host, method=spec.method, options=spec.options)
    if agent is None:
        raise FencingError(f"{host.name}: no plugin provides fence method '{spec.method}'")
    return agent


def fence_host(
    pm: pluggy.PluginManager,
    host: HostSpec,
    confirm_timeout: float = 30.0,
    poll: float = 0.1,
    sleep: Callable[[float], None] = time.sleep,
    guard: Callable[[], object] = lambda: None,
    app: AppView | None = None,
) -> FenceResult:
    """Power ``host`` off by the first method that works and confirms; ``FencingError`` if none.

    ``guard`` runs right before each method presses power (a job's fencing-token check):
    a chain can take long enough for the right to act to lapse between two methods."""
    if not host.fence:
        raise FencingError(
            f"{host.name}: no fence methods configured; fence by hand, then `evac fence {host.name} --confirm-manually`"
        )
    started = time.monotonic()
    attempts: list[FenceAttempt] = []
    for spec in host.fence:
        t0 = time.monotonic()
        try:
            agent = agent_for(pm, host, spec, app)
            guard()
            agent.power_off()
            deadline = time.monotonic() + confirm_timeout
            state = agent.power_state()
            while state != "off" and time.monotonic() < deadline:
                sleep(poll)
                state = agent.power_state()
            if state != "off":
                raise FencingError(f"power still '{state}' {confirm_timeout:g} s after power off")
        except Interrupted:
            raise  # the right to act is gone: no further method, and the job is not failed
        except EvacError as exc:
            attempts.append(FenceAttempt(spec.method, False, time.monotonic() - t0, str(exc)))
            continue
        except Exception as exc:  # a plugin's own bug must not stop the chain
            attempts.append(FenceAttempt(spec.method, False, time.monotonic() - t0, f"{type(exc).__name__}: {exc}"))
            continue
        attempts.append(FenceAttempt(spec.method, True, time.monotonic() - t0))
        return FenceResult(host.name, spec.method, time.monotonic() - started, tuple(attempts))
    tried = "; ".join(f"{a.method}: {a.detail}" for a in attempts)
    raise FencingError(
        f"{host.name}: every fence method failed ({tried}). Its guests are NOT restarted. "
        f"Power it off by hand, then run `evac fence {host.name} --confirm-manually`."
    )
