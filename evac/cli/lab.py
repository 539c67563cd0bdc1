"""``evac lab``: bring the local multi-host lab up and down, and inject faults.

A development tool, like ``pytest --fixtures``: it imports ``evac.lab`` only when one of
its verbs runs, so the rest of the CLI (and a production install) never loads the lab.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .output import console, print_json, print_table
from .parser import Parser

if TYPE_CHECKING:
    from ..lab import Lab


def register(sub: Any) -> None:
    lab = sub.add_parser("lab", help="a local multi-host libvirt lab (root)")
    lab.add_argument(
        "--lab-dir", type=Path, default=None, help="lab state directory (default: $EVAC_LAB_DIR, else /tmp/evac-lab)"
    )
    verbs = lab.add_subparsers(dest="verb", required=True, parser_class=Parser)
    up = verbs.add_parser("up", help="create or repair the lab")
    up.add_argument("--hosts", type=int, default=3)
    up.add_argument("--guests-per-host", type=int, default=2)
    up.add_argument(
        "--etcd",
        action="store_true",
        help="also run a 3-member etcd cluster, one member on each of the first three hosts",
    )
    up.add_argument(
        "--agents",
        action="store_true",
        help="also run `evac agent` on every host, feeding the lab's watchdog for it (needs --etcd)",
    )
    up.set_defaults(func=cmd_up)
    verbs.add_parser("down", help="remove the lab completely").set_defaults(func=cmd_down)
    status = verbs.add_parser("status", help="hosts: power, network, daemons")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    for verb, helptext in (
        ("kill-host", "power a host off (every process of it dies)"),
        ("start-host", "power a host on again"),
        ("cut", "partition a host from the network (it keeps running)"),
        ("heal", "reconnect a cut host"),
        ("kill-etcd", "kill only the host's etcd member"),
        ("start-etcd", "start the host's etcd member again"),
        ("cut-etcd", "partition the host from etcd only (libvirt and ssh still answer)"),
        ("heal-etcd", "undo cut-etcd"),
    ):
        p = verbs.add_parser(verb, help=helptext)
        p.add_argument("host")
        p.set_defaults(func=cmd_fault, verb_name=verb)
    etcd = verbs.add_parser("etcd", help="the etcd cluster: member, health, leader, cut")
    etcd.add_argument("--json", action="store_true")
    etcd.set_defaults(func=cmd_etcd)
    serve = verbs.add_parser("serve", help="start an `evac serve` replica inside a host (on the lab's etcd)")
    serve.add_argument("host")
    serve.add_argument("--stop", action="store_true", help="stop the host's replica instead")
    serve.set_defaults(func=cmd_serve)
    agent = verbs.add_parser("agent", help="start `evac agent` inside a host, with the lab's watchdog for it")
    agent.add_argument("host")
    how = agent.add_mutually_exclusive_group()
    how.add_argument("--stop", action="store_true", help="the clean stop (SIGTERM): the watchdog is disarmed")
    how.add_argument("--kill", action="store_true", help="a crash (SIGKILL): the watchdog resets the host")
    agent.set_defaults(func=cmd_agent)
    loss = verbs.add_parser("loss", help="drop a share of a host's packets (0 clears)")
    loss.add_argument("host")
    loss.add_argument("percent", type=int)
    loss.set_defaults(func=cmd_loss)
    probe = verbs.add_parser("probe", help="ping guests from the lab's client and report the gaps users saw")
    probe.add_argument("guests", nargs="+", metavar="GUEST")
    probe.add_argument("--interval", type=float, default=0.01, help="seconds between echoes to each guest")
    probe.add_argument("--duration", type=float, default=None, help="stop after this many seconds (else Ctrl-C)")
    probe.set_defaults(func=cmd_probe)
    guest = verbs.add_parser("add-guest", help="define and start one more guest")
    guest.add_argument("name")
    guest.add_argument("--host", required=True)
    guest.add_argument("--memory", type=int, default=128, help="MiB (at least 96)")
    guest.add_argument("--dirty-mb", type=int, default=0, help="MiB of memory rewritten continuously")
    guest.add_argument("--dirty-pause-ms", type=int, default=0, help="pause between rewrite passes")
    guest.add_argument("--priority", type=int, default=0)
    guest.add_argument("--anti-affinity", action="append", default=[], metavar="GROUP")
    guest.add_argument("--local-disk", action="store_true", help="disk on the host, not shared storage")
    guest.add_argument("--bridge", default="br0", help="bridge of its NIC ('' for none)")
    guest.add_argument("--no-wait", action="store_true", help="do not wait for the console's LAB-READY")
    guest.set_defaults(func=cmd_add_guest)


def open_lab(args: argparse.Namespace) -> Lab:
    """The lab at ``--lab-dir`` (else the default one), importing the lab only now."""
    from ..lab import Lab
    from ..lab.layout import DEFAULT_DIR

    return Lab.open(args.lab_dir or DEFAULT_DIR)


def cmd_up(args: argparse.Namespace) -> int:
    from ..lab.guests import build_assets

    lab = open_lab(args)
    if args.guests_per_host < 0:
        from ..errors import ConfigError

        raise ConfigError(f"--guests-per-host: expected 0 or more, got {args.guests_per_host}")
    t0 = time.monotonic()
    build_assets(lab)
    t_assets = time.monotonic() - t0
    if args.agents and not args.etcd:
        from ..errors import ConfigError

        raise ConfigError("--agents: agents hold leases in etcd; add --etcd")
    t_hosts = lab.up(args.hosts, etcd=args.etcd)
    if args.agents:
        for h in lab.hosts():
            lab.start_agent(h.name)
    t1 = time.monotonic()
    started = start_default_guests(lab, args.guests_per_host)
    t_guests = time.monotonic() - t1
    etcd = f"; etcd {lab.etcd_url()}" if args.etcd else ""
    etcd += "; an agent and a watchdog on every host" if args.agents else ""
    console.print(
        f"lab up: {len(lab.hosts())} hosts in {t_hosts:.2f} s (guest assets {t_assets:.2f} s); "
        f"{len(started)} guests booted in {t_guests:.2f} s; inventory {lab.inventory_file}{etcd}"
    )
    return 0


def start_default_guests(lab: Lab, per_host: int) -> list[str]:
    """Create the missing ``hostN-vmM`` guests (ones migrated elsewhere count as present)."""
    from ..fleet import snapshot
    from ..inventory import load_inventory
    from ..lab.guests import GuestSpec, create_guest, default_guest_names, wait_console

    existing = {g.name for h in snapshot(load_inventory(lab.inventory_file)) for g in h.guests}
    todo = [
        (host.name, name)
        for host in lab.hosts()
        for name in default_guest_names(host.name, per_host)
        if name not in existing
    ]

    def boot(item: tuple[str, str]) -> str:
        host, name = item
        offset = create_guest(lab, host, GuestSpec(name=name))
        wait_console(lab, name, after=offset, timeout=300)
        return name

    with ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
        return list(pool.map(boot, todo))


def cmd_down(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    open_lab(args).down()
    console.print(f"lab down in {time.monotonic() - t0:.2f} s")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    rows = open_lab(args).status()
    if args.json:
        print_json(rows)
        return 0
    columns: tuple[str, ...] = ("host", "address", "power", "network", "libvirtd", "processes")
    if any("etcd" in row for row in rows):
        columns += ("etcd",)
    print_table("lab", columns, ([row[c] for c in columns] for row in rows))
    return 0


def cmd_fault(args: argparse.Namespace) -> int:
    lab = open_lab(args)
    action = {
        "kill-host": lab.kill_host,
        "start-host": lab.start_host,
        "cut": lab.cut,
        "heal": lab.heal,
        "kill-etcd": lab.kill_etcd,
        "start-etcd": lab.start_etcd,
        "cut-etcd": lab.cut_etcd,
        "heal-etcd": lab.heal_etcd,
    }[args.verb_name]
    if args.verb_name.endswith("-etcd"):
        require_etcd(lab)
    action(args.host)
    return 0


def require_etcd(lab: Lab) -> None:
    from ..lab import LabError

    if not lab.has_etcd():
        raise LabError(f"the lab at {lab.root} has no etcd cluster; bring it up with: evac lab up --etcd")


def cmd_etcd(args: argparse.Namespace) -> int:
    lab = open_lab(args)
    require_etcd(lab)
    rows = lab.etcd_status()
    if args.json:
        print_json(rows)
        return 0
    columns = ("member", "endpoint", "running", "healthy", "leader", "cut")
    print_table("etcd", columns, ([row[c] for c in columns] for row in rows))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    lab = open_lab(args)
    lab.host(args.host)  # an unknown host is one line, before anything starts
    if args.stop:
        lab.stop_serve(args.host)
        console.print(f"{args.host}: evac serve stopped")
        return 0
    require_etcd(lab)
    if lab.serve_pids(args.host):
        console.print(f"{args.host}: evac serve already runs at {lab.serve_url(args.host)}")
        return 0
    config = lab.serve(args.host)
    log = lab.host_dir(args.host) / "log" / "serve.log"
    console.print(f"{args.host}: evac serve starting at {lab.serve_url(args.host)} (config {config}, log {log})")
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    import signal

    lab = open_lab(args)
    lab.host(args.host)
    if args.stop or args.kill:
        lab.stop_agent(args.host, signal.SIGKILL if args.kill else signal.SIGTERM)
        done = "killed: its watchdog stays armed" if args.kill else "stopped: its watchdog is disarmed"
        console.print(f"{args.host}: evac agent {done}")
        return 0
    require_etcd(lab)
    config = lab.start_agent(args.host)
    log = lab.host_dir(args.host) / "log" / "agent.log"
    console.print(f"{args.host}: evac agent runs, watchdog armed (config {config}, log {log})")
    return 0


def cmd_loss(args: argparse.Namespace) -> int:
    means = open_lab(args).set_loss(args.host, args.percent)
    console.print(f"{args.host}: {args.percent} % packet loss ({means})")
    return 0


def cmd_add_guest(args: argparse.Namespace) -> int:
    from ..lab.guests import GuestSpec, create_guest, wait_console

    lab = open_lab(args)
    spec = GuestSpec(
        name=args.name,
        memory_mib=args.memory,
        dirty_mb=args.dirty_mb,
        dirty_pause_ms=args.dirty_pause_ms,
        priority=args.priority,
        anti_affinity=tuple(args.anti_affinity),
        local_disk=args.local_disk,
        bridge=args.bridge or None,
    )
    offset = create_guest(lab, args.host, spec)
    if not args.no_wait:
        console.print(wait_console(lab, args.name, after=offset, timeout=300))
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    """Stream each guest's counts every second; the final table on Ctrl-C or ``--duration``."""
    from ..errors import ConfigError

    if not 0.001 <= args.interval <= 10:
        raise ConfigError(f"--interval: expected 0.001 to 10 seconds, got {args.interval}")
    if args.duration is not None and args.duration <= 0:
        raise ConfigError(f"--duration: expected more than 0 seconds, got {args.duration}")
    lab = open_lab(args)
    deadline = time.monotonic() + args.duration if args.duration else None
    with lab.probe(args.guests, args.interval) as probe:
        shown = 0
        try:
            while probe.process.poll() is None and (deadline is None or time.monotonic() < deadline):
                time.sleep(0.2)
                if len(probe.lines) > shown:
                    shown = len(probe.lines)
                    console.print(
                        "  ".join(
                            f"{name}: {e.answered}/{e.sent} answered, longest gap {e.longest_gap:.2f} s"
                            for name, e in probe.latest.items()
                        )
                    )
        except KeyboardInterrupt:
            pass
        final = probe.stop()
    rows = []
    for name, echoes in final.items():
        e = echoes.stats()
        rows.append((name, e.sent, e.answered, e.lost, f"{e.longest_gap:.3f}"))
    print_table(
        f"echoes every {args.interval * 1000:g} ms from the lab's client",
        ("guest", "sent", "answered", "lost", "longest gap (s)"),
        rows,
    )
    return 0
