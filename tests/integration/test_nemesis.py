"""A short nemesis on the HA lab: random faults, some overlapping (a fixed seed, then a
random one printed in the log), while drains, returns and rebalances run through the
CLI, the REST API and Slack, and no invariant broken, as seen from libvirt on every host, QEMU's logs and the lab power
switch's log. The long runs are the bench's (``python -m bench.nemesis``)."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest

from bench.nemesis.inject import heal_all
from bench.nemesis.report import text
from bench.nemesis.run import Stage, run, say, stage, tidy
from evac.lab import Lab
from evac.lab.guests import GuestSpec

FIXED_SEED = 20261128
FAULT_SECONDS = (20.0, 10.0)  # the fixed seed's run, then the random one's: faults start within these
HOLD = (1.0, 3.0)  # s each fault lasts: short, so CI sees several


@pytest.fixture
def nemesis(ha_lab: Lab) -> Iterator[Stage]:
    """Replicas with a REST API token and a Slack bot, agents on every host, and two guests
    (one on the host without a member, the other restarted only after it); afterwards
    every host healed, powered and in service, guests, replicas and agents gone."""
    guests = {"host4": [GuestSpec("nem-a")], "host2": [GuestSpec("nem-b", after=("nem-a",))]}
    st = stage(ha_lab, guests, agents=True)
    try:
        yield st
    finally:
        heal_all(ha_lab, st.replicas, st.journal, say)
        tidy(st)


def test_a_short_nemesis_breaks_no_invariant(nemesis: Stage) -> None:
    again = os.environ.get("EVAC_NEMESIS_SEED")  # replay a seed a CI log printed
    seeds = (FIXED_SEED, int(again) if again else random.SystemRandom().randrange(1, 2**31))
    print(f"nemesis seeds {seeds} (replay: python -m bench.nemesis --seed SEED)")
    violations = []
    for seed, seconds in zip(seeds, FAULT_SECONDS, strict=True):
        outcome = run(nemesis, seconds, seed, hold=HOLD)
        print(text(outcome))
        assert outcome.injected, f"seed {seed}: no fault was injected"
        violations += [f"seed {seed}: {v.line()}" for v in outcome.violations]
    assert not violations, "\n".join(violations)
