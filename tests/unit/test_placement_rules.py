"""A guest's ``hosts`` (must) and ``prefer`` (should) rules bind every plan placement makes:
drain, failover, return and rebalance all go through ``place``."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from evac.guestrules import GuestSettings, TagRules, resolve
from evac.model import GuestRules
from evac.placement import Policy, place, plan_drain
from tests.unit.test_placement import POLICY, guest, host


def ruled(name: str, on: str, mem: int = 512, hosts: tuple[str, ...] = (), prefer: tuple[str, ...] = (), **kw):  # type: ignore[no-untyped-def]
    return guest(name, on, mem, rules=GuestRules(hosts=hosts, prefer=prefer), **kw)


def test_a_guest_goes_only_to_a_host_its_hosts_rule_names() -> None:
    src = host("h1", guests=(ruled("db", "h1", hosts=("h3",)),))
    plan = plan_drain([src, host("h2", mem=16384), host("h3", mem=2048)], "h1", POLICY)
    assert [(m.guest, m.target) for m in plan.moves] == [("db", "h3")]
    assert "within its hosts rule (h3)" in plan.moves[0].reason


def test_a_guest_its_hosts_cannot_take_stays_with_each_hosts_reason() -> None:
    src = host("h1", guests=(ruled("db", "h1", hosts=("h2", "h3")),))
    full = host("h3", mem=612, guests=(guest("x", "h3", mem=512),))
    plan = plan_drain([src, host("h2", state="maintenance"), full, host("h4", mem=16384)], "h1", POLICY)
    assert plan.moves == ()
    assert (
        plan.unplaceable[0].reason == "must run on h2, h3: h2: in maintenance; h3: memory: needs 512 MiB, 100 MiB free"
    )


def test_the_hosts_rule_reason_names_the_host_being_left_and_hosts_not_in_the_inventory() -> None:
    src = host("h1", guests=(ruled("db", "h1", hosts=("h1", "h9")),))
    plan = plan_drain([src, host("h2")], "h1", POLICY)
    assert plan.unplaceable[0].reason == "must run on h1, h9: h1: the host it leaves; h9: not in the inventory"


def test_the_hosts_rule_names_a_down_or_unreachable_host_by_its_state() -> None:
    src = host("h1", guests=(ruled("db", "h1", hosts=("h2", "h3")),))
    plan = plan_drain([src, host("h2", state="down"), host("h3", state="unreachable")], "h1", POLICY)
    assert plan.unplaceable[0].reason == "must run on h2, h3: h2: down; h3: unreachable"


def test_the_hosts_rule_is_a_rule_even_when_the_only_allowed_host_is_a_spare() -> None:
    src = host("h1", guests=(ruled("db", "h1", hosts=("spare",)),))
    plan = plan_drain([src, host("h2"), host("spare", spare=True)], "h1", POLICY)
    assert [m.target for m in plan.moves] == ["spare"]


def test_the_hosts_rule_reason_says_when_its_spare_is_not_allowed() -> None:
    src = host("h1", guests=(ruled("db", "h1", hosts=("spare",)),))
    no_spares = Policy(headroom_memory_mib=0, use_spares=False)
    plan = plan_drain([src, host("h2"), host("spare", spare=True)], "h1", no_spares)
    assert plan.unplaceable[0].reason == "must run on spare: spare: spare host, and spares are not allowed"


def test_a_retry_that_excluded_the_allowed_host_says_so() -> None:
    g = ruled("db", "h1", hosts=("h2",))
    _, stuck = place([g], "h1", [host("h1", guests=(g,)), host("h2"), host("h3")], POLICY, exclude=["h2"])
    assert stuck[0].reason == "must run on h2: h2: excluded"


def test_a_preferred_host_that_fits_wins_over_one_with_more_room() -> None:
    src = host("h1", guests=(ruled("web", "h1", prefer=("h3",)),))
    plan = plan_drain([src, host("h2", mem=16384), host("h3", mem=2048)], "h1", POLICY)
    assert plan.moves[0].target == "h3"
    assert plan.moves[0].reason.startswith("preferred host: ")


def test_among_several_preferred_hosts_the_one_with_most_room_wins() -> None:
    src = host("h1", guests=(ruled("web", "h1", prefer=("h3", "h4")),))
    plan = plan_drain([src, host("h2", mem=16384), host("h3", mem=2048), host("h4", mem=4096)], "h1", POLICY)
    assert plan.moves[0].target == "h4"
    assert plan.moves[0].reason.startswith("preferred host with most free memory: ")


def test_when_no_preferred_host_fits_another_takes_the_guest_and_the_reason_says_why() -> None:
    src = host("h1", guests=(ruled("web", "h1", prefer=("h3",)),))
    plan = plan_drain([src, host("h2"), host("h3", state="maintenance")], "h1", POLICY)
    assert plan.moves[0].target == "h2"
    assert "no preferred host fits (h3: in maintenance)" in plan.moves[0].reason


def test_prefer_never_overrides_the_hosts_rule() -> None:
    src = host("h1", guests=(ruled("web", "h1", hosts=("h2",), prefer=("h3",)),))
    plan = plan_drain([src, host("h2"), host("h3")], "h1", POLICY)
    assert plan.moves[0].target == "h2"
    assert "no preferred host fits (h3: outside its hosts rule)" in plan.moves[0].reason


def test_a_preferred_spare_waits_until_no_regular_host_fits() -> None:
    src = host("h1", guests=(ruled("web", "h1", prefer=("spare",)),))
    plan = plan_drain([src, host("h2"), host("spare", spare=True)], "h1", POLICY)
    assert plan.moves[0].target == "h2"
    assert "spare: spare host, used only when no other fits" in plan.moves[0].reason


def test_a_plugin_chooses_among_the_preferred_hosts_only() -> None:
    src = host("h1", guests=(ruled("web", "h1", prefer=("h3", "h4")),))
    offered: list[list[str]] = []

    def choose(g: object, candidates: list[str]) -> str:
        offered.append(candidates)
        return candidates[-1]

    plan = plan_drain([src, host("h2"), host("h3"), host("h4")], "h1", POLICY, choose)
    assert offered == [["h3", "h4"]]
    assert plan.moves[0].reason.startswith("chosen by plugin among preferred hosts")


def test_rules_from_a_tag_bind_like_the_guests_own() -> None:
    settings = GuestSettings(tags={"db": TagRules(rules=GuestRules(hosts=("h3",)))})
    src = host("h1", guests=(resolve(guest("db1", "h1", tags=("db",)), settings),))
    plan = plan_drain([src, host("h2", mem=16384), host("h3")], "h1", POLICY)
    assert [m.target for m in plan.moves] == ["h3"]


names = st.sampled_from(["h2", "h3", "h4"])


@settings(max_examples=150, deadline=None)
@given(
    allowed=st.lists(st.lists(names, max_size=2, unique=True), min_size=1, max_size=6),
    mems=st.lists(st.integers(min_value=64, max_value=2048), min_size=6, max_size=6),
    states=st.lists(st.sampled_from(["up", "up", "maintenance", "down"]), min_size=3, max_size=3),
)
def test_no_guest_is_ever_placed_outside_its_hosts_rule(
    allowed: list[list[str]], mems: list[int], states: list[str]
) -> None:
    guests = tuple(ruled(f"g{i}", "h1", mems[i], hosts=tuple(a)) for i, a in enumerate(allowed))
    others = [host(n, mem=2048, state=s) for n, s in zip(["h2", "h3", "h4"], states, strict=True)]
    plan = plan_drain([host("h1", guests=guests), *others], "h1", POLICY)
    rules = {g.name: g.rules.hosts for g in guests}
    for move in plan.moves:
        assert not rules[move.guest] or move.target in rules[move.guest]
    for stuck in plan.unplaceable:
        if rules[stuck.guest]:
            assert stuck.reason.startswith(f"must run on {', '.join(rules[stuck.guest])}: ")
    assert len(plan.moves) + len(plan.unplaceable) == len(guests)
