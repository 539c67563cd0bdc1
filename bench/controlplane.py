"""Control-plane speed: plan a drain over a synthetic fleet, and Slack slash-command ack latency.

    .venv/bin/python -m bench.controlplane [--hosts 1000] [--guests 20000] [--requests 1000]

Targets: plan in 1 s or less; ack p99 100 ms or less (bolt's HTTP handling, signed requests).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import tracemalloc
from pathlib import Path

from bench.report import publish
from evac.model import Guest
from evac.placement import HostView, Policy, plan_drain


def fleet(hosts: int, guests: int, seed: int = 7) -> list[HostView]:
    rng = random.Random(seed)
    per_host: list[list[Guest]] = [[] for _ in range(hosts)]
    for i in range(guests):
        h = i % hosts
        per_host[h].append(
            Guest(
                name=f"g{i}",
                uuid=str(i),
                host=f"h{h}",
                state="running",
                memory_mib=rng.choice((512, 1024, 2048, 4096)),
                vcpus=rng.choice((1, 2, 4)),
                persistent=True,
                priority=rng.randint(0, 3),
                anti_affinity=(f"grp{rng.randint(0, 200)}",) if rng.random() < 0.2 else (),
            )
        )
    return [
        HostView(name=f"h{h}", state="up", memory_mib=262144, cpus=64, guests=tuple(g), bridges=frozenset({"br0"}))
        for h, g in enumerate(per_host)
    ]


def bench_plan(hosts: int, guests: int, rounds: int = 5) -> tuple[list[float], float, float]:
    """Median-able plan times, the snapshot's memory, and the planner's own peak on top of it."""
    tracemalloc.start()
    views = fleet(hosts, guests)
    snapshot_mib = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    plan_drain(views, "h0", Policy())
    plan_peak_mib = (tracemalloc.get_traced_memory()[1] - base) / 2**20
    tracemalloc.stop()
    times = []
    for r in range(rounds):
        start = time.perf_counter()
        plan_drain(views, f"h{r}", Policy())
        times.append(time.perf_counter() - start)
    return times, snapshot_mib, plan_peak_mib


def bench_ack(requests: int) -> list[float]:
    import tempfile

    from slack_sdk import WebClient

    from evac.app import App
    from evac.plugins import plugin_manager
    from evac_bots.config import Rule, SlackConfig
    from evac_bots.slackapp import Bot
    from tests.slackmock import command_body, signed, slack_mock

    latencies = []
    with slack_mock() as mock, tempfile.TemporaryDirectory() as tmp:
        inventory = Path(tmp) / "hosts.yaml"
        inventory.write_text("hosts:\n  - {name: host1, uri: 'qemu+tcp://127.0.0.1:9/system'}\n")
        app = App(inventory_path=inventory, journal_path=Path(tmp) / "j.db", pm=plugin_manager())
        config = SlackConfig(
            bot_token="xoxb", signing_secret="s", mode="http", acl={"status": Rule(users=frozenset({"U1"}))}
        )
        bot = Bot(app, config, client=WebClient(token="xoxb", base_url=mock.url))
        for _ in range(requests):
            request = signed("s", command_body("/evac", "status", "U1", mock.response_url))
            start = time.perf_counter()
            response = bot.bolt.dispatch(request)
            latencies.append(time.perf_counter() - start)
            assert response.status == 200
        bot.close()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--guests", type=int, default=20000)
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    times, snapshot_mib, peak = bench_plan(args.hosts, args.guests)
    acks = sorted(bench_ack(args.requests))

    def p(q: float) -> float:
        return acks[min(len(acks) - 1, int(q * len(acks)))]

    rows = [
        (
            f"plan drain of 1 host, {args.hosts} hosts / {args.guests} guests (median of {len(times)})",
            f"{statistics.median(times):.3f} s",
            "<= 1 s",
            "met" if statistics.median(times) <= 1 else "MISSED",
        ),
        (
            f"fleet snapshot in memory ({args.hosts} hosts / {args.guests} guests)",
            f"{snapshot_mib:.1f} MiB",
            "report",
            "",
        ),
        ("plan drain: peak memory on top of the snapshot", f"{peak:.1f} MiB", "report", ""),
        (f"slash command ack p50 ({args.requests} signed requests)", f"{p(0.5) * 1000:.1f} ms", "report", ""),
        (
            f"slash command ack p99 ({args.requests} signed requests)",
            f"{p(0.99) * 1000:.1f} ms",
            "<= 100 ms",
            "met" if p(0.99) <= 0.1 else "MISSED",
        ),
    ]
    publish(
        "controlplane",
        "control plane",
        ("measure", "value", "target", "result"),
        rows,
        {
            "plan_seconds": times,
            "snapshot_mib": snapshot_mib,
            "plan_peak_mib": peak,
            "ack_p50_s": p(0.5),
            "ack_p99_s": p(0.99),
        },
    )


if __name__ == "__main__":
    main()
