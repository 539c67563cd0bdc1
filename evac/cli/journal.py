"""``evac journal copy``: grow a single controller into replicas without losing history."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..etcdclient import Cluster, EtcdSettings, parse_url
from ..etcdjournal import EtcdJournal
from ..etcdsession import Session
from ..journal import Journal
from ..journalcopy import copy
from ..sqlitejournal import SqliteJournal
from .output import print_table


def register(sub: Any) -> None:
    parser = sub.add_parser("journal", help="the journal: copy it between SQLite and etcd")
    verbs = parser.add_subparsers(dest="verb", required=True)
    copier = verbs.add_parser(
        "copy",
        help="copy every job, event, audit row and host state into an empty journal",
        description="Each side is a SQLite file or an etcd:// URL; etcd's TLS files and key prefix come "
        "from the etcd: section of --config. Stop evac serve first: running jobs are not copied.",
    )
    copier.add_argument("--from", dest="source", required=True, metavar="JOURNAL")
    copier.add_argument("--to", dest="target", required=True, metavar="JOURNAL")
    copier.set_defaults(func=run_copy)


def run_copy(args: argparse.Namespace) -> int:
    from . import make_app

    app = make_app(args)
    if args.source == args.target:
        raise ConfigError("journal copy: --from and --to name the same journal")
    sessions: list[Session] = []
    try:
        source = _open(app, args.source, "--from", sessions, must_exist=True)
        target = _open(app, args.target, "--to", sessions, must_exist=False)
        counts = copy(source, target)
    finally:
        for session in sessions:
            session.stop(revoke=True)
    print_table(f"copied {args.source} -> {args.target}", ("records", "count"), sorted(counts.items()))
    return 0


def _open(app: Any, where: str, option: str, sessions: list[Session], must_exist: bool) -> Journal:
    if where.startswith("etcd://"):
        cluster = app.settings.cluster
        if cluster is not None:
            etcd = replace(cluster.etcd, endpoints=parse_url(where, tls=cluster.etcd.ca is not None))
        else:
            etcd = EtcdSettings(endpoints=parse_url(where, tls=False))
        client = Cluster(etcd)
        session = Session(client, etcd.lease_ttl, name="journal-copy")
        session.start()
        sessions.append(session)
        return EtcdJournal(client, session)
    path = Path(where)
    if must_exist and not path.is_file():
        raise ConfigError(f"journal copy: {option} {where}: no such journal file")
    return SqliteJournal(path)
