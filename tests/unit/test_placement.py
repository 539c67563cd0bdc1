"""Placement is a pure function: capacity, rules and reasons, without libvirt."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from evac.model import Guest, Interface
from evac.placement import HostView, Policy, place, plan_drain

POLICY = Policy(headroom_memory_mib=0)


def guest(name: str, host: str, mem: int = 512, **kw) -> Guest:  # type: ignore[no-untyped-def]
    return Guest(
        name=name,
        uuid=name,
        host=host,
        state=kw.pop("state", "running"),
        memory_mib=mem,
        vcpus=kw.pop("vcpus", 1),
        persistent=True,
        **kw,
    )


def host(name: str, mem: int = 4096, guests: tuple[Guest, ...] = (), **kw) -> HostView:  # type: ignore[no-untyped-def]
    return HostView(name=name, state=kw.pop("state", "up"), memory_mib=mem, cpus=kw.pop("cpus", 8), guests=guests, **kw)


def test_every_running_guest_gets_a_target_with_room() -> None:
    src = host("h1", guests=(guest("a", "h1"), guest("b", "h1")))
    plan = plan_drain([src, host("h2"), host("h3")], "h1", POLICY)
    assert sorted(m.guest for m in plan.moves) == ["a", "b"]
    assert {m.target for m in plan.moves} == {"h2", "h3"}  # spread: most free memory first
    assert plan.unplaceable == ()


def test_stopped_guests_stay_defined_where_they_are() -> None:
    src = host("h1", guests=(guest("a", "h1", state="shutoff"),))
    plan = plan_drain([src, host("h2")], "h1", POLICY)
    assert (plan.moves, plan.untouched) == ((), ("a",))


def test_hosts_in_maintenance_or_down_take_nothing() -> None:
    src = host("h1", guests=(guest("a", "h1"),))
    plan = plan_drain([src, host("h2", state="maintenance"), host("h3", state="down")], "h1", POLICY)
    assert plan.unplaceable[0].reason == "no other host is up and out of maintenance"


def test_guest_too_big_for_any_host_is_reported_with_the_memory_shortfall() -> None:
    src = host("h1", guests=(guest("big", "h1", mem=8192),))
    plan = plan_drain([src, host("h2", mem=4096)], "h1", POLICY)
    assert plan.unplaceable[0].reason == "no host fits: h2: memory: needs 8192 MiB, 4096 MiB free"


def test_unplaceable_reason_names_the_rule_not_memory_when_a_rule_blocks() -> None:
    nic = Interface(kind="bridge", source="br-storage")
    src = host("h1", guests=(guest("a", "h1", interfaces=(nic,)),))
    plan = plan_drain(
        [src, host("h2", bridges=frozenset({"br0"})), host("h3", bridges=frozenset({"br0"}))], "h1", POLICY
    )
    assert plan.unplaceable[0].reason == "no host fits: h2, h3: no bridge 'br-storage'"


def test_bridge_mtu_smaller_than_the_guests_is_refused() -> None:
    nic = Interface(kind="bridge", source="br0", mtu=9000)
    src = host("h1", guests=(guest("a", "h1", interfaces=(nic,)),))
    plan = plan_drain([src, host("h2", bridges=frozenset({"br0"}), bridge_mtus=(("br0", 1500),))], "h1", POLICY)
    assert "MTU 1500 < 9000" in plan.unplaceable[0].reason


def test_a_bridge_another_host_names_differently_is_found_through_the_network_map() -> None:
    nic = Interface(kind="bridge", source="br0")
    src = host("h1", guests=(guest("a", "h1", interfaces=(nic,)),), networks=(("vm", "br0"),))
    renamed = host("h2", bridges=frozenset({"br-vm"}), networks=(("vm", "br-vm"),))
    unmapped = host("h3", bridges=frozenset({"br-vm"}))
    plan = plan_drain([src, renamed, unmapped], "h1", POLICY)
    assert [m.target for m in plan.moves] == ["h2"]


def test_a_mapped_bridge_missing_on_the_target_is_named_in_the_reason() -> None:
    nic = Interface(kind="bridge", source="br0")
    src = host("h1", guests=(guest("a", "h1", interfaces=(nic,)),), networks=(("vm", "br0"),))
    plan = plan_drain([src, host("h2", bridges=frozenset({"br0"}), networks=(("vm", "br-vm"),))], "h1", POLICY)
    assert "no bridge 'br-vm' (for 'br0')" in plan.unplaceable[0].reason


def test_anti_affinity_keeps_group_members_apart() -> None:
    src = host("h1", guests=(guest("db1", "h1", anti_affinity=("db",)), guest("db2", "h1", anti_affinity=("db",))))
    other = host("h2", guests=(guest("db3", "h2", anti_affinity=("db",)),))
    plan = plan_drain([src, other, host("h3")], "h1", POLICY)
    assert [m.target for m in plan.moves] == ["h3"]
    assert "anti-affinity group 'db'" in plan.unplaceable[0].reason


def test_affinity_prefers_the_host_with_group_members() -> None:
    src = host("h1", guests=(guest("app", "h1", affinity=("web",)),))
    near = host("h2", mem=2048, guests=(guest("web1", "h2", affinity=("web",)),))
    plan = plan_drain([src, near, host("h3", mem=8192)], "h1", POLICY)
    assert plan.moves[0].target == "h2"


def test_higher_priority_guests_are_placed_first_when_room_is_short() -> None:
    src = host("h1", guests=(guest("low", "h1", mem=1024, priority=0), guest("high", "h1", mem=1024, priority=10)))
    plan = plan_drain([src, host("h2", mem=1024)], "h1", POLICY)
    assert [m.guest for m in plan.moves] == ["high"]
    assert [u.guest for u in plan.unplaceable] == ["low"]


def test_spare_hosts_are_used_only_when_no_other_host_fits() -> None:
    src = host("h1", guests=(guest("a", "h1", mem=1024), guest("b", "h1", mem=1024)))
    plan = plan_drain([src, host("h2", mem=1024), host("spare", mem=8192, spare=True)], "h1", POLICY)
    assert {(m.guest, m.target) for m in plan.moves} == {("a", "h2"), ("b", "spare")}


def test_reserved_memory_and_headroom_are_kept_free() -> None:
    src = host("h1", guests=(guest("a", "h1", mem=1024),))
    plan = plan_drain([src, host("h2", mem=2048, reserved_memory_mib=768)], "h1", Policy(headroom_memory_mib=512))
    assert plan.unplaceable and "768 MiB free" in plan.unplaceable[0].reason


def test_a_plugin_may_choose_among_the_hosts_that_fit() -> None:
    src = host("h1", guests=(guest("a", "h1"),))
    plan = plan_drain([src, host("h2"), host("h3", mem=1024)], "h1", POLICY, choose=lambda g, c: "h3")
    assert (plan.moves[0].target, plan.moves[0].reason.split(":")[0]) == ("h3", "chosen by plugin")


def test_a_plugin_choice_outside_the_hosts_that_fit_is_ignored() -> None:
    src = host("h1", guests=(guest("a", "h1", mem=2048),))
    plan = plan_drain([src, host("h2"), host("h3", mem=1024)], "h1", POLICY, choose=lambda g, c: "h3")
    assert plan.moves[0].target == "h2"


def test_drain_that_leaves_no_room_for_another_failure_warns_n_plus_1() -> None:
    src = host("h1", guests=(guest("a", "h1", mem=2048),))
    plan = plan_drain([src, host("h2", mem=2048), host("h3", mem=1024)], "h1", POLICY)
    assert plan.moves and any(w.startswith("N+1") for w in plan.warnings)


def test_retry_elsewhere_excludes_failed_targets() -> None:
    g = guest("a", "h1")
    moves, _ = place([g], "h1", [host("h1", guests=(g,)), host("h2", mem=8192), host("h3")], POLICY, exclude=["h2"])
    assert moves[0].target == "h3"


memories = st.integers(min_value=96, max_value=4096)


@st.composite
def fleets(draw):  # type: ignore[no-untyped-def]
    n_hosts = draw(st.integers(min_value=2, max_value=6))
    hosts = []
    for i in range(n_hosts):
        guests = tuple(
            guest(
                f"g{i}-{j}",
                f"h{i}",
                mem=draw(memories),
                vcpus=draw(st.integers(1, 4)),
                anti_affinity=tuple(draw(st.lists(st.sampled_from(["x", "y"]), max_size=1))),
            )
            for j in range(draw(st.integers(min_value=0, max_value=6)))
        )
        hosts.append(host(f"h{i}", mem=draw(st.integers(2048, 16384)), cpus=draw(st.integers(2, 16)), guests=guests))
    return hosts


@settings(max_examples=300, deadline=None)
@given(fleets(), st.floats(min_value=1.0, max_value=2.0))
def test_placement_never_exceeds_capacity_nor_breaks_anti_affinity(hosts: list[HostView], overcommit: float) -> None:
    policy = Policy(memory_overcommit=overcommit, headroom_memory_mib=128)
    plan = plan_drain(hosts, "h0", policy)
    moved = {m.guest for m in plan.moves} | {u.guest for u in plan.unplaceable}
    assert moved == {g.name for g in hosts[0].guests}
    for target in hosts[1:]:
        arriving = [
            g for g in hosts[0].guests if any(m.guest == g.name and m.target == target.name for m in plan.moves)
        ]
        if not arriving:
            continue
        before_mem = sum(g.memory_mib for g in target.guests)
        assert before_mem + sum(g.memory_mib for g in arriving) <= max(target.memory_capacity(policy), before_mem)
        assert sum(g.vcpus for g in target.guests + tuple(arriving)) <= max(
            target.cpu_capacity(policy), sum(g.vcpus for g in target.guests)
        )
        groups = [grp for g in target.guests + tuple(arriving) for grp in g.anti_affinity]
        existing = [grp for g in target.guests for grp in g.anti_affinity]
        for grp in set(groups):
            assert groups.count(grp) <= max(1, existing.count(grp))


def test_a_fenced_host_stays_fenced_in_the_view_even_unprobed() -> None:
    from evac.fleet import host_views
    from evac.inventory import HostSpec, Inventory
    from evac.journal import HostState
    from evac.model import HostStatus
    from evac.states import HostMode

    inv = Inventory(hosts=(HostSpec("h1", "qemu+tcp://h1/system"), HostSpec("h2", "qemu+tcp://h2/system")))
    statuses = (HostStatus("h1", "u", "down"), HostStatus("h2", "u", "unreachable"))
    views = host_views(inv, statuses, {"h1": HostState("h1", HostMode.FENCED, "", "", 0.0)}, {})
    assert [v.state for v in views] == ["fenced", "unreachable"]
