"""``vm.verify``: once libvirt shows a guest running and persistent on its target and gone
from its source, every ``evac_verify_guest`` plugin judges it; any reason fails the step."""

from __future__ import annotations

from pathlib import Path

import pytest

from evac import hookimpl
from evac.appview import AppView
from evac.hypervisor import Hypervisor
from evac.inventory import HostSpec
from evac.model import Guest
from evac.sqlitejournal import SqliteJournal
from evac.testing import EvacKit, FakeFleet, RunResult, make_plugin_manager

VERIFY = """
name: verify
steps:
  - {id: verify, action: vm.verify, with: {guest: web1, target: host2, source: host1}}
"""


class Judge:
    """A tiny plugin: answers ``reason`` (None: satisfied) and keeps what it was asked about."""

    def __init__(self, reason: str | None = None) -> None:
        self.reason = reason
        self.asked: list[tuple[str, str, str]] = []

    @hookimpl
    def evac_verify_guest(self, guest: Guest, host: HostSpec, app: AppView) -> str | None:
        self.asked.append((guest.name, guest.host, host.name))
        return self.reason


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch) -> FakeFleet:
    """web1 has moved from host1 to host2."""
    fleet = FakeFleet()
    monkeypatch.setattr(Hypervisor, "connect", staticmethod(fleet.connect))
    fleet.add_host("host1")
    fleet.add_host("host2")
    fleet.add_guest("host2", "web1")
    return fleet


def verify(fleet: FakeFleet, workdir: Path, *judges: Judge) -> RunResult:
    journal = SqliteJournal(":memory:")
    try:
        return EvacKit(make_plugin_manager("drain", *judges), journal, fleet, workdir).run(VERIFY)
    finally:
        journal.close()


def test_a_plugins_reason_fails_the_step(fleet: FakeFleet, tmp_path: Path) -> None:
    result = verify(fleet, tmp_path, Judge("web1 runs on host2 but does not answer ping"))
    assert result.state == "failed"
    assert result.error == "step 'verify': web1 runs on host2 but does not answer ping"


def test_every_plugins_reason_is_given_joined(fleet: FakeFleet, tmp_path: Path) -> None:
    result = verify(fleet, tmp_path, Judge("no ping"), Judge(), Judge("no http"))
    assert result.error in ("step 'verify': no ping; no http", "step 'verify': no http; no ping")


def test_a_guest_every_plugin_is_satisfied_with_passes(fleet: FakeFleet, tmp_path: Path) -> None:
    judge = Judge()
    result = verify(fleet, tmp_path, judge)
    assert result.state == "succeeded", result.error
    assert judge.asked == [("web1", "host2", "host2")]


def test_plugins_are_not_asked_about_a_guest_libvirt_already_failed(fleet: FakeFleet, tmp_path: Path) -> None:
    fleet.add_guest("host1", "web1")  # still defined on its source
    judge = Judge()
    result = verify(fleet, tmp_path, judge)
    assert result.error == "step 'verify': web1: still defined on host1"
    assert judge.asked == []
