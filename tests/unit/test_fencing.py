"""The fence chain: methods in order, each confirmed by reading the power back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from evac import FenceAgent, FenceMethod, hookimpl
from evac.errors import ConfigError, FencingError
from evac.fencing import fence_host, fence_methods, legacy_fence_agent_plugins
from evac.inventory import FenceSpec, HostSpec
from evac.plugins import plugin_manager


@dataclass
class Outlet:
    """A PDU outlet; ``lies`` reports success but never switches off (like method=cycle agents)."""

    state: str = "on"
    lies: bool = False
    calls: list[str] = field(default_factory=list)

    def power_off(self) -> None:
        self.calls.append("off")
        if not self.lies:
            self.state = "off"

    def power_state(self) -> str:
        self.calls.append("status")
        return self.state


class Pdu:
    def __init__(self, outlets: dict[str, Outlet]) -> None:
        self.outlets = outlets

    @hookimpl
    def evac_fence_agent(self, host: HostSpec, method: str, options: dict[str, Any]) -> Outlet | None:
        return self.outlets[options["outlet"]] if method == "pdu" else None


def fence(outlets: dict[str, Outlet], *chain: str) -> Any:
    pm = plugin_manager(load_entrypoints=False)
    pm.register(Pdu(outlets))
    host = HostSpec("h1", "qemu+tcp://h1/system", fence=tuple(FenceSpec("pdu", {"outlet": o}) for o in chain))
    return fence_host(pm, host, confirm_timeout=0.05, poll=0.01, sleep=lambda _s: None)


def test_first_method_that_confirms_off_wins() -> None:
    a, b = Outlet(), Outlet()
    result = fence({"a": a, "b": b}, "a", "b")
    assert (result.method, a.state, b.calls) == ("pdu", "off", [])


def test_agent_claiming_success_while_power_stays_on_does_not_count() -> None:
    liar, honest = Outlet(lies=True), Outlet()
    result = fence({"liar": liar, "honest": honest}, "liar", "honest")
    assert [a.ok for a in result.attempts] == [False, True]
    assert "power still 'on'" in result.attempts[0].detail
    assert honest.state == "off"


def test_no_configured_method_says_how_to_proceed_by_hand() -> None:
    with pytest.raises(FencingError, match="no fence methods configured.*--confirm-manually"):
        fence({})


def test_method_no_plugin_provides_is_a_failed_attempt() -> None:
    with pytest.raises(FencingError, match="no plugin provides fence method 'pdu'"):
        fence_host(
            plugin_manager(load_entrypoints=False), HostSpec("h1", "qemu:///system", fence=(FenceSpec("pdu", {}),))
        )


# ---------------------------------------------------------------- fence methods registered through evac_fence_methods
class PduMethods:
    def __init__(self, outlets: dict[str, Outlet], name: str = "pdu") -> None:
        self.outlets = outlets
        self.name = name

    @hookimpl
    def evac_fence_methods(self) -> list[FenceMethod]:
        return [FenceMethod(self.name, lambda host, s: self.outlets[s["outlet"]], required=("outlet",))]


def test_a_registered_fence_method_builds_the_agent_from_the_hosts_settings() -> None:
    outlet = Outlet()
    pm = plugin_manager(load_entrypoints=False)
    pm.register(PduMethods({"4": outlet}))
    host = HostSpec("h1", "qemu:///system", fence=(FenceSpec("pdu", {"outlet": "4"}),))
    result = fence_host(pm, host, confirm_timeout=0.05, poll=0.01, sleep=lambda _s: None)
    assert (result.method, outlet.state) == ("pdu", "off")
    assert isinstance(outlet, FenceAgent)


def test_two_plugins_registering_one_fence_method_is_an_error_naming_both() -> None:
    pm = plugin_manager(load_entrypoints=False)
    pm.register(PduMethods({}), name="one")
    pm.register(PduMethods({}), name="two")
    with pytest.raises(
        ConfigError, match="fence method 'pdu' is registered by two plugins: '(one|two)' and '(two|one)'"
    ):
        fence_methods(pm)


def test_the_built_in_fence_methods_are_listed_with_their_settings() -> None:
    methods = fence_methods(plugin_manager())
    assert {"redfish", "agent", "ssh"} <= set(methods)
    assert methods["redfish"].required == ("url",)
    assert methods["agent"].optional is None


def test_evac_fence_agent_still_provides_methods_no_registration_lists() -> None:
    pm = plugin_manager(load_entrypoints=False)
    pm.register(Pdu({"a": Outlet()}), name="legacy")
    assert legacy_fence_agent_plugins(pm) == ["legacy"]
    assert fence_methods(pm) == {}
    assert fence({"a": Outlet()}, "a").method == "pdu"


def test_fence_method_names_are_lowercase_words() -> None:
    with pytest.raises(ValueError, match="expected a lowercase word"):
        FenceMethod("My PDU", lambda host, s: Outlet())
