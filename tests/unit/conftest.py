"""Fixtures for unit tests that need a real etcd (tests.etcdserver): one server per session,
a key prefix per test; and ``controllers``, evac controllers sharing one journal on either
backend, for the tests that hold both journals to one contract."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from evac.etcdclient import Cluster, EtcdSettings
from evac.etcdjournal import EtcdJournal
from evac.etcdsession import Session
from evac.journal import Journal, _start_time
from evac.sqlitejournal import SqliteJournal
from tests.conftest import require
from tests.etcdserver import ETCD, EtcdServer, etcd_server

BACKENDS = ["sqlite", "etcd"]


@pytest.fixture(scope="session")
def etcd() -> Iterator[EtcdServer]:
    require(os.access(ETCD, os.X_OK), f"etcd is not installed ({ETCD}); setup.sh installs it")
    with etcd_server() as server:
        yield server


@pytest.fixture
def etcd_settings(etcd: EtcdServer) -> EtcdSettings:
    """Settings for the session's etcd under a prefix only this test uses."""
    return etcd.settings(f"/t/{uuid.uuid4().hex}/")


class Controllers:
    """Evac controllers on one shared journal: :meth:`start` one, :meth:`kill` it (its
    jobs and slots become another's to take), :meth:`owner` names it."""

    backend = ""

    def start(self) -> Journal:
        raise NotImplementedError

    def kill(self, journal: Journal) -> None:
        raise NotImplementedError

    def owner(self, journal: Journal) -> str:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class SqliteControllers(Controllers):
    """Each controller stands for a live process of its own (a ``sleep``): killed, its
    owner string names a dead process, as a SIGKILLed evac leaves it."""

    backend = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.journals: list[SqliteJournal] = []

    def start(self) -> Journal:
        process = subprocess.Popen(["sleep", "120"])
        journal = SqliteJournal(self.path, owner=f"{socket.gethostname()}:{process.pid}:{_start_time(process.pid)}")
        self.processes[id(journal)] = process
        self.journals.append(journal)
        return journal

    def kill(self, journal: Journal) -> None:
        process = self.processes[id(journal)]
        process.kill()
        process.wait()

    def owner(self, journal: Journal) -> str:
        assert isinstance(journal, SqliteJournal)
        return journal._owner

    def close(self) -> None:
        for process in self.processes.values():
            process.kill()
            process.wait()
        for journal in self.journals:
            journal.close()


class EtcdControllers(Controllers):
    """Each controller has its own client and session lease; killed, its lease is revoked."""

    backend = "etcd"

    def __init__(self, settings: EtcdSettings) -> None:
        self.settings = settings
        self.journals: list[EtcdJournal] = []

    def start(self) -> Journal:
        cluster = Cluster(self.settings)
        session = Session(cluster, self.settings.lease_ttl)
        session.start()
        journal = EtcdJournal(cluster, session)
        self.journals.append(journal)
        return journal

    def kill(self, journal: Journal) -> None:
        assert isinstance(journal, EtcdJournal)
        journal.session.stop(revoke=True)

    def owner(self, journal: Journal) -> str:
        assert isinstance(journal, EtcdJournal)
        return journal.session.owner

    def close(self) -> None:
        for journal in self.journals:
            journal.session.stop(revoke=True)
        if self.journals:
            self.journals[0].cluster.delete_prefix(self.settings.prefix)
        for journal in self.journals:
            journal.cluster.close()


def open_controllers(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Controllers:
    if backend == "etcd":
        server: EtcdServer = request.getfixturevalue("etcd")
        return EtcdControllers(server.settings(f"/t/{uuid.uuid4().hex}/"))
    return SqliteControllers(tmp_path / f"journal-{uuid.uuid4().hex[:8]}.db")


@pytest.fixture(params=BACKENDS)
def controllers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Controllers]:
    """Controllers on a SQLite file, then on etcd: every test using it runs on both."""
    opened = open_controllers(request.param, request, tmp_path)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def etcd_controllers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Controllers]:
    """Controllers on etcd only, for what only a journal shared by processes that each hold
    a lease can show: one process owns an embedded journal, and nobody else takes its jobs
    while it lives."""
    opened = open_controllers("etcd", request, tmp_path)
    try:
        yield opened
    finally:
        opened.close()
