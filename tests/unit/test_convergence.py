"""The adaptive convergence policy escalates only when measurements say it must."""

from __future__ import annotations

from evac import hookimpl
from evac.convergence import Escalation, Sample
from evac.model import Guest
from evac.plugins import plugin_manager
from evac_plugins.convergence import AdaptivePolicy

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
