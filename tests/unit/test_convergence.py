"""The adaptive convergence policy escalates only when measurements say it must."""

from __future__ import annotations

import pytest

from evac import hookimpl
from evac.convergence import Escalation, MeasuringPolicy, Sample, Strategy
from evac.dirtyrate import DirtyRate, DirtyRateStatus
from evac.model import Guest
from evac.plugins import plugin_manager
from evac_plugins.convergence import AdaptivePolicy, choose_strategy

MiB = 2**20
GUEST = Guest("g", "u", "h1", "running", 256, 1, True)


def samples(passes: list[tuple[int, int]], dirty: float, bandwidth: float = 50 * MiB) -> list[Sample]:
    """(pass, remaining bytes) pairs, as the monitor would sample them."""
    return [Sample(i * 0.25, 0, remaining, 256 * MiB, dirty, bandwidth, p) for i, (p, remaining) in enumerate(passes)]


def test_first_pass_is_left_alone_whatever_the_rates() -> None:
    assert AdaptivePolicy().decide(samples([(1, 200 * MiB), (1, 150 * MiB)], dirty=900 * MiB), []) is None


def test_converging_migration_is_left_alone() -> None:
    assert AdaptivePolicy().decide(samples([(1, 100 * MiB), (2, 20 * MiB), (3, 5 * MiB)], dirty=5 * MiB), []) is None


def test_small_remainder_raises_max_downtime_to_what_finishes_it() -> None:
    step = AdaptivePolicy().decide(samples([(1, 90 * MiB), (2, 12 * MiB), (3, 10 * MiB)], dirty=60 * MiB), [])
    assert step is not None and step.kind == "max_downtime"
    assert step.value == int(10 / 50 * 1000 * 1.5)


def test_a_long_pause_is_not_preferred_to_postcopy() -> None:
    step = AdaptivePolicy().decide(samples([(1, 90 * MiB), (2, 40 * MiB), (3, 30 * MiB)], dirty=60 * MiB), [])
    assert step is not None and step.kind == "postcopy"


def test_without_postcopy_a_longer_pause_within_the_limit_is_used() -> None:
    step = AdaptivePolicy(allow_postcopy=False).decide(
        samples([(1, 90 * MiB), (2, 40 * MiB), (3, 30 * MiB)], dirty=60 * MiB), []
    )
    assert step is not None and step.kind == "max_downtime"


def test_remainder_too_big_for_the_downtime_limit_switches_to_postcopy() -> None:
    step = AdaptivePolicy(downtime_limit_ms=500).decide(samples([(1, 90 * MiB), (2, 80 * MiB)], dirty=900 * MiB), [])
    assert step == Escalation("postcopy", 0, step.reason) and "pre-copy cannot finish" in step.reason


def test_raised_downtime_gets_two_passes_before_postcopy() -> None:
    policy = AdaptivePolicy()
    first = policy.decide(samples([(1, 90 * MiB), (2, 10 * MiB)], dirty=60 * MiB), [])
    assert first is not None and first.kind == "max_downtime"
    assert policy.decide(samples([(1, 90 * MiB), (2, 10 * MiB), (3, 9 * MiB)], dirty=60 * MiB), [first]) is None
    later = policy.decide(samples([(1, 90 * MiB), (2, 10 * MiB), (4, 11 * MiB)], dirty=60 * MiB), [first])
    assert later is not None and later.kind == "postcopy"


def test_without_postcopy_a_hopeless_migration_is_aborted() -> None:
    step = AdaptivePolicy(allow_postcopy=False, downtime_limit_ms=100).decide(
        samples([(1, 90 * MiB), (2, 80 * MiB)], dirty=900 * MiB), []
    )
    assert step is not None and step.kind == "abort"


def test_stalled_passes_escalate_even_when_rates_look_fine() -> None:
    passes = [(1, 100 * MiB), (2, 50 * MiB), (3, 50 * MiB), (4, 50 * MiB)]
    step = AdaptivePolicy(downtime_limit_ms=100).decide(samples(passes, dirty=1 * MiB), [])
    assert step is not None and step.kind == "postcopy" and "no progress" in step.reason


def test_postcopy_is_enabled_at_start_only_when_allowed() -> None:
    assert AdaptivePolicy().start_flags(GUEST) == ("POSTCOPY",)
    assert AdaptivePolicy(allow_postcopy=False).start_flags(GUEST) == ()


def test_evac_convergence_policy_defaults_to_the_adaptive_policy_and_a_plugin_can_override() -> None:
    pm = plugin_manager()
    default = pm.hook.evac_convergence_policy(guest=GUEST, options={"allow_postcopy": "false"})
    assert isinstance(default, AdaptivePolicy) and not default.allow_postcopy

    class Never:
        def start_flags(self, guest: Guest) -> tuple[str, ...]:
            return ()

        def decide(self, samples, applied):  # type: ignore[no-untyped-def]
            return None

    class Plugin:
        @hookimpl
        def evac_convergence_policy(self, guest, options):  # type: ignore[no-untyped-def]
            return Never()

    pm.register(Plugin())
    assert isinstance(pm.hook.evac_convergence_policy(guest=GUEST, options={}), Never)


def test_a_guest_that_needed_postcopy_last_time_switches_halfway_through_the_first_pass() -> None:
    early = [Sample(0.25, 10 * MiB, 200 * MiB, 256 * MiB, 0, 50 * MiB, 1)]
    halfway = [*early, Sample(2.6, 130 * MiB, 126 * MiB, 256 * MiB, 0, 50 * MiB, 1)]
    assert AdaptivePolicy(learned="postcopy").decide(early, []) is None
    step = AdaptivePolicy(learned="postcopy").decide(halfway, [])
    assert step is not None and step.kind == "postcopy" and "last time" in step.reason
    assert AdaptivePolicy().decide(halfway, []) is None


def test_what_was_learned_is_kept_in_the_journal(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from evac.sqlitejournal import SqliteJournal

    SqliteJournal(tmp_path / "j.db").remember("convergence:web1", "postcopy")
    assert SqliteJournal(tmp_path / "j.db").recall("convergence:web1") == "postcopy"
    assert SqliteJournal(tmp_path / "j.db").recall("convergence:db1") is None


def first_pass(processed_mib: int) -> list[Sample]:
    """Two samples of a first pass of a 256 MiB guest at 50 MiB/s, ``processed_mib`` sent."""
    return [
        Sample(0.25, 10 * MiB, 246 * MiB, 256 * MiB, 0, 50 * MiB, 1),
        Sample(2.6, processed_mib * MiB, (256 - processed_mib) * MiB, 256 * MiB, 0, 50 * MiB, 1),
    ]


def measured(mib_per_second: float) -> DirtyRate:
    return DirtyRate(DirtyRateStatus.MEASURED, mib_per_second * MiB, 1.0)


@pytest.mark.parametrize(
    ("dirty", "memory", "link", "postcopy", "strategy", "why"),
    [
        (0, 256, 50, True, Strategy.PLAIN, "pre-copy takes 1.0x a post-copy, then a 0 ms pause"),  # idle
        (10, 256, 50, True, Strategy.PLAIN, "pre-copy takes 1.2x a post-copy, then a 200 ms pause"),
        (
            12,
            256,
            50,
            True,
            Strategy.POSTCOPY,
            "pre-copy would end with a pause of about 240 ms",
        ),  # the lab's busy guest
        (50, 256, 50, True, Strategy.POSTCOPY, "pre-copy cannot converge"),
        (900, 256, 50, True, Strategy.POSTCOPY, "pre-copy cannot converge"),
        (100, 4096, 1100, True, Strategy.PLAIN, "pre-copy takes 1.1x a post-copy, then a 91 ms pause"),  # 10 GbE
        (450, 4096, 1100, True, Strategy.POSTCOPY, "pre-copy would end with a pause of about 409 ms"),
        (220, 4096, 1100, True, Strategy.PLAIN, "pre-copy takes 1.2x a post-copy, then a 200 ms pause"),
        (240, 4096, 1100, True, Strategy.POSTCOPY, "pre-copy would end with a pause of about 218 ms"),
        (500, 256, 1100, True, Strategy.POSTCOPY, "pre-copy would end with a pause of about 233 ms"),  # rewrites it all
        (900, 256, 50, False, Strategy.PLAIN, "post-copy is off"),
        (900, 256, 0, True, Strategy.PLAIN, "no link rate to compare with"),
    ],
)
def test_the_strategy_follows_from_dirty_rate_link_and_memory(
    dirty: float, memory: int, link: float, postcopy: bool, strategy: Strategy, why: str
) -> None:
    plan = choose_strategy(dirty * MiB, 1.0, memory * MiB, link * MiB, allow_postcopy=postcopy)
    assert (plan.strategy, plan.reason.split(": ", 1)[1]) == (strategy, why)


def test_a_tighter_downtime_limit_tightens_the_quiet_pause() -> None:
    assert choose_strategy(8 * MiB, 1.0, 256 * MiB, 50 * MiB, quiet_pause_ms=300).strategy is Strategy.PLAIN
    assert choose_strategy(8 * MiB, 1.0, 256 * MiB, 50 * MiB, quiet_pause_ms=200).strategy is Strategy.POSTCOPY
    policy = AdaptivePolicy(downtime_limit_ms=200)
    policy.use_dirty_rate(measured(8))
    step = policy.decide(first_pass(130), [])
    assert step is not None and step.kind == "postcopy"


def test_a_longer_measurement_counts_what_the_guest_wrote_in_all_of_it() -> None:
    assert choose_strategy(6 * MiB, 2.0, 256 * MiB, 50 * MiB).strategy is Strategy.POSTCOPY
    assert choose_strategy(6 * MiB, 1.0, 256 * MiB, 50 * MiB).strategy is Strategy.PLAIN


def test_a_guest_without_history_wants_its_dirty_rate_measured() -> None:
    assert AdaptivePolicy().wants_dirty_rate(GUEST)


@pytest.mark.parametrize("learned", ["postcopy", "plain"])
def test_a_guest_with_history_is_not_measured(learned: str) -> None:
    assert not AdaptivePolicy(learned=learned).wants_dirty_rate(GUEST)


def test_a_guest_is_not_measured_when_post_copy_is_off() -> None:
    assert not AdaptivePolicy(allow_postcopy=False).wants_dirty_rate(GUEST)


def test_a_guest_too_small_for_qemu_to_sample_is_not_measured() -> None:
    assert not AdaptivePolicy().wants_dirty_rate(Guest("g", "u", "h1", "running", 64, 1, True))


def test_a_guest_is_measured_once() -> None:
    policy = AdaptivePolicy()
    policy.use_dirty_rate(measured(26))
    assert not policy.wants_dirty_rate(GUEST)


def test_a_busy_guest_measured_before_the_start_switches_halfway_through_the_first_pass() -> None:
    policy = AdaptivePolicy()
    policy.use_dirty_rate(measured(26))
    assert policy.decide(first_pass(100), []) is None
    step = policy.decide(first_pass(130), [])
    assert step is not None and step.kind == "postcopy"
    assert step.reason == (
        "dirty 26 MiB/s measured vs link 50 MiB/s: pre-copy would end with a pause of about 520 ms: "
        "switching after half a pass"
    )


def test_a_quiet_guest_measured_before_the_start_is_left_to_pre_copy() -> None:
    policy = AdaptivePolicy()
    policy.use_dirty_rate(measured(2))
    assert policy.decide(first_pass(130), []) is None


def test_a_guest_that_could_not_be_measured_is_left_to_pre_copy() -> None:
    policy = AdaptivePolicy()
    policy.use_dirty_rate(DirtyRate(DirtyRateStatus.UNSUPPORTED, reason="dirty-ring"))
    assert policy.decide(first_pass(130), []) is None


def test_a_rate_that_comes_after_halfway_switches_at_once() -> None:
    policy = AdaptivePolicy()
    assert policy.decide(first_pass(200), []) is None
    policy.use_dirty_rate(measured(900))
    step = policy.decide(first_pass(200), [])
    assert step is not None and step.kind == "postcopy" and "cannot converge" in step.reason


def test_the_default_policy_measures_and_a_policy_without_the_methods_is_not_measured_for() -> None:
    class Never:
        def start_flags(self, guest: Guest) -> tuple[str, ...]:
            return ()

        def decide(self, samples, applied):  # type: ignore[no-untyped-def]
            return None

    assert isinstance(AdaptivePolicy(), MeasuringPolicy)
    assert not isinstance(Never(), MeasuringPolicy)
