"""The restart order after a host failure: ``after`` rules, then priority, then memory;
the waves the plan shows; the warnings for rules that cannot be honoured (no guest is
ever left down for one); and the wait one restart does before its start.

All pure: guests are built in memory, the wait gets a fake clock and fake checks. The
last test runs the real engine to show a ``for_each`` step takes its items in list order,
which is why a topological list cannot deadlock the step's pool."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evac import Action, StepContext, hookimpl
from evac.errors import Cancelled
from evac.guestrules import GuestSettings, TagRules, resolve
from evac.model import Guest, GuestRules, HaMetadata, Readiness
from evac.restartorder import (
    Dependency,
    Look,
    RestartOrder,
    Seen,
    after_source,
    await_ready,
    has_agent_channel,
    plan_order,
)
from tests.unit.enginekit import engine, runbook


def guest(
    name: str,
    priority: int = 0,
    memory: int = 512,
    after: tuple[str, ...] = (),
    ready: Readiness | None = None,
    tags: tuple[str, ...] = (),
    address: str | None = None,
    host: str = "host1",
    state: str = "running",
) -> Guest:
    return Guest(
        name=name,
        uuid="",
        host=host,
        state=state,
        memory_mib=memory,
        vcpus=1,
        persistent=True,
        priority=priority,
        tags=tags,
        address=address,
        rules=GuestRules(after=after, ready=ready),
    )


def names(order: RestartOrder) -> list[str]:
    return [o.guest for o in order.order]


def waves(order: RestartOrder) -> dict[str, int]:
    return {o.guest: o.wave for o in order.order}


# ---------------------------------------------------------------- the order


def test_guests_without_after_rules_come_back_highest_priority_then_largest_first() -> None:
    order = plan_order([guest("small", 1, 256), guest("big", 1, 2048), guest("top", 9, 128), guest("low", 0, 4096)])
    assert names(order) == ["top", "big", "small", "low"]
    assert set(waves(order).values()) == {1} and order.warnings == ()


def test_a_guest_comes_after_the_guest_its_after_rule_names_whatever_their_priorities() -> None:
    order = plan_order([guest("web", 10, after=("db",)), guest("db", 0)])
    assert names(order) == ["db", "web"]
    assert waves(order) == {"db": 1, "web": 2}
    assert order.of("web").after == ("db",)


def test_an_after_tag_waits_for_every_guest_with_that_tag() -> None:
    order = plan_order([guest("app", after=("db",)), guest("db1", tags=("db",)), guest("db2", tags=("db",))])
    assert names(order)[-1] == "app"
    assert order.of("app").after == ("db1", "db2")
    assert order.of("app").wave == 2


def test_waves_count_the_longest_chain_of_waits() -> None:
    order = plan_order([guest("c", after=("b",)), guest("b", after=("a",)), guest("a"), guest("d", after=("a",))])
    assert waves(order) == {"a": 1, "b": 2, "c": 3, "d": 2}


def test_a_guest_others_wait_for_goes_as_early_as_the_most_important_of_them() -> None:
    batch = [guest(f"batch{i}", 5) for i in range(3)]
    order = plan_order([*batch, guest("db", 0), guest("web", 10, after=("db",))])
    assert names(order) == ["db", "web", "batch0", "batch1", "batch2"]
    assert next(o for o in order.order if o.guest == "db").wave == 1


def test_an_after_entry_matching_nothing_is_a_warning_and_the_guest_waits_for_nothing() -> None:
    order = plan_order([guest("web", after=("dbx",))])
    assert order.of("web") == replace(order.of("web"), wave=1, after=())
    assert order.warnings == ("web: after entry 'dbx' names no guest and no other guest's tag; ignored",)


def test_a_guest_naming_itself_in_after_is_a_warning_not_a_wait() -> None:
    order = plan_order([guest("web", after=("web",))])
    assert order.of("web").after == ()
    assert order.warnings == ("web: after names the guest itself; ignored",)


def test_a_tag_a_guest_carries_itself_does_not_make_it_wait_for_itself() -> None:
    order = plan_order([guest("db1", tags=("db",), after=("db",)), guest("db2", tags=("db",))])
    assert order.of("db1").after == ("db2",)


def test_a_dependency_left_down_is_named_with_why_and_not_waited_for() -> None:
    left = guest("db", tags=("db",))
    order = plan_order([guest("web", after=("db",))], not_restarted={"db": (left, "not protected: left stopped")})
    assert order.of("web").after == ()
    assert order.warnings == (
        "web waits for db, which is not restarted (not protected: left stopped): web starts without waiting for it",
    )


def test_a_dependency_running_elsewhere_is_waited_for_by_its_readiness_but_does_not_delay_the_list() -> None:
    db = guest("db", ready=Readiness.ECHO, address="198.19.3.5", host="host2")
    order = plan_order([guest("web", after=("db",)), guest("batch", 5)], elsewhere=[db])
    assert names(order) == ["batch", "web"]
    assert order.of("web") == replace(order.of("web"), wave=1, after=("db",))
    assert order.waits["db"] == Dependency("db", Readiness.ECHO, "198.19.3.5", "host2")
    assert not order.waits["db"].in_plan


def test_a_dependency_that_runs_nowhere_is_a_warning_not_a_wait() -> None:
    db = guest("db", host="host2", state="shutoff")
    order = plan_order([guest("web", after=("db",))], elsewhere=[db])
    assert order.of("web").after == () and "db" not in order.waits
    assert order.warnings == (
        "web waits for db, which does not run anywhere (shutoff on host2): web starts without waiting for it",
    )


def test_a_cycle_in_guests_metadata_is_named_in_one_line_and_those_guests_restart_without_waiting() -> None:
    a, b = guest("a", after=("b",)), guest("b", after=("a",))
    sources = {"a": 'metadata after="b"', "b": 'metadata after="a"'}
    order = plan_order([a, b, guest("c", after=("a",))], sources=sources)
    (warning,) = order.warnings
    assert warning == (
        'restart order ignored for a, b: their after rules go round in a cycle (a [metadata after="b"] -> '
        'b [metadata after="a"] -> a); they restart without waiting'
    )
    assert "\n" not in warning
    assert (order.of("a").after, order.of("b").after, order.of("c").after) == ((), (), ("a",))
    assert names(order).index("a") < names(order).index("c")


def test_the_plan_says_how_each_waited_for_guest_counts_as_ready() -> None:
    order = plan_order(
        [
            guest("db", ready=Readiness.ECHO, address="198.19.3.5"),
            guest("mq", ready=Readiness.AGENT),
            guest("app", after=("db", "mq")),
        ]
    )
    assert order.waits == {
        "db": Dependency("db", Readiness.ECHO, "198.19.3.5"),
        "mq": Dependency("mq", Readiness.AGENT),
    }
    assert "app" not in order.waits  # nobody waits for it


@pytest.mark.parametrize(
    ("db", "without_agent", "why"),
    [
        (guest("db", ready=Readiness.ECHO), (), "db: ready=echo but it has no address metadata"),
        (guest("db", ready=Readiness.ECHO, address="fd00::5"), (), "db: ready=echo checks IPv4 only (fd00::5)"),
        (guest("db", ready=Readiness.AGENT), ("db",), "db: ready=agent but its definition has no guest agent channel"),
    ],
)
def test_a_readiness_that_cannot_be_met_falls_back_to_started_with_a_warning(
    db: Guest, without_agent: tuple[str, ...], why: str
) -> None:
    order = plan_order([db, guest("web", after=("db",))], without_agent=without_agent)
    assert order.waits["db"].ready is Readiness.STARTED
    (warning,) = order.warnings
    assert warning.startswith(why) and warning.endswith("those after it wait only until it runs")


def test_the_after_rule_is_traced_to_the_metadata_or_the_tag_that_set_it() -> None:
    settings = GuestSettings(tags={"web": TagRules(rules=GuestRules(after=("db",)))})
    own = guest("a", after=("db", "dns"))
    tagged = replace(guest("b"), ha=HaMetadata(tags=("web",)))
    assert after_source(own, settings) == 'metadata after="db,dns"'
    assert after_source(tagged, settings) == "guests.tags.web.after"
    assert resolve(tagged, settings).rules.after == ("db",)


def test_a_definition_with_a_guest_agent_channel_is_told_from_one_without() -> None:
    channel = (
        "<domain><devices><channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/>"
        "</channel></devices></domain>"
    )
    assert has_agent_channel(channel)
    assert not has_agent_channel("<domain><devices/></domain>")
    assert not has_agent_channel("not xml")


def test_a_dependency_survives_the_plans_outputs() -> None:
    dep = Dependency("db", Readiness.ECHO, "198.19.3.5", "host2")
    assert Dependency.of(dep.as_dict()) == dep
    assert Dependency.of({"guest": "db", "ready": "bogus"}) == Dependency("db", Readiness.STARTED)


rules = st.dictionaries(
    st.sampled_from("abcdefgh"),
    st.tuples(st.integers(0, 3), st.lists(st.sampled_from("abcdefghxy"), max_size=3)),
    min_size=1,
)


@given(rules)
def test_every_guest_comes_back_once_and_after_everything_it_still_waits_for(
    spec: dict[str, tuple[int, list[str]]],
) -> None:
    order = plan_order([guest(n, p, after=tuple(a)) for n, (p, a) in spec.items()])
    listed = names(order)
    assert sorted(listed) == sorted(spec)  # never a guest left down, cycles or not
    for place, item in enumerate(order.order):
        for dep in item.after:
            assert listed.index(dep) < place
            assert waves(order)[dep] < item.wave


# ---------------------------------------------------------------- the wait before one restart


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def looks(script: Mapping[str, list[Look]]) -> Any:
    """A check that answers each dependency's looks in turn (the last one repeats)."""
    left = {name: list(seen) for name, seen in script.items()}

    def check(dep: Dependency) -> Look:
        queue = left[dep.guest]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return check


DB = Dependency("db", Readiness.ECHO, "198.19.3.5")
MQ = Dependency("mq", Readiness.STARTED)


def test_a_restart_whose_dependencies_are_ready_does_not_wait() -> None:
    clock = Clock()
    waited = await_ready([DB], looks({"db": [Look(Seen.READY)]}), clock.wait, clock)
    assert (waited.seconds, waited.ready, clock.waits, waited.note) == (0.0, ("db",), [], "")


def test_a_restart_waits_until_its_dependency_answers() -> None:
    clock = Clock()
    check = looks({"db": [Look(Seen.WAITING, "no echo answer")] * 3 + [Look(Seen.READY)]})
    waited = await_ready([DB], check, clock.wait, clock, timeout=300, interval=0.25)
    assert clock.waits == [0.25, 0.25, 0.25]
    assert waited.ready == ("db",) and waited.seconds == 0.75 and waited.note == ""


def test_after_the_timeout_the_guest_starts_anyway_and_says_its_dependency_was_not_ready() -> None:
    clock = Clock()
    check = looks({"db": [Look(Seen.WAITING, "no echo answer at 198.19.3.5")], "mq": [Look(Seen.READY)]})
    waited = await_ready([DB, MQ], check, clock.wait, clock, timeout=1.0, interval=0.25)
    assert waited.seconds == 1.0 and sum(clock.waits) == 1.0
    assert waited.ready == ("mq",)
    assert (
        waited.note == "started without its dependencies ready: db not ready after 1 s (no echo answer at 198.19.3.5)"
    )


def test_a_dependency_whose_restart_failed_is_not_waited_for() -> None:
    clock = Clock()
    check = looks({"db": [Look(Seen.GONE, "its restart failed (no room)")]})
    waited = await_ready([DB], check, clock.wait, clock, timeout=300)
    assert clock.waits == [] and waited.gone == {"db": "its restart failed (no room)"}
    assert waited.note == "started without its dependencies ready: db: its restart failed (no room)"


def test_a_timeout_of_zero_looks_once_and_does_not_wait() -> None:
    clock = Clock()
    waited = await_ready([DB], looks({"db": [Look(Seen.WAITING, "x")]}), clock.wait, clock, timeout=0)
    assert clock.waits == [] and set(waited.late) == {"db"}


def test_a_cancel_during_the_wait_stops_it() -> None:
    clock = Clock()

    def cancelled(_seconds: float) -> None:
        raise Cancelled("step 'restart' aborted")

    with pytest.raises(Cancelled):
        await_ready([DB], looks({"db": [Look(Seen.WAITING)]}), cancelled, clock)


# ---------------------------------------------------------------- the engine takes items in list order


class WaitsForFirst:
    """``order.item``: every item but the first waits (up to 10 s) until the first has run,
    as a restart waits for what it comes after. Were later items taken first, two of them
    would hold both slots of the pool and time out."""

    def __init__(self) -> None:
        self.first_done = threading.Event()
        self.timed_out: list[str] = []

    def run(self, ctx: StepContext) -> Mapping[str, Any]:
        if ctx.item == "first":
            self.first_done.set()
            return {}
        if not self.first_done.wait(10):
            self.timed_out.append(str(ctx.item))
        return {}

    @hookimpl
    def evac_actions(self) -> list[Action]:
        return [Action("order.item", self.run)]


def test_a_for_each_step_takes_its_items_in_list_order_so_waiting_items_cannot_starve_the_first(
    tmp_path: Path,
) -> None:
    plugin = WaitsForFirst()
    items = ["first", *(f"w{i}" for i in range(6))]
    rb = runbook(f"name: t\nsteps:\n  - {{id: s, action: order.item, for_each: {items}, concurrency: 2}}\n")
    result = engine(tmp_path, plugin).execute(rb, {})
    assert result.state == "succeeded"
    assert plugin.timed_out == []
