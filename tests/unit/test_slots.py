"""Per-host migration slots are shared by every evac process on one journal."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from evac.sqlitejournal import SqliteJournal


def test_a_slot_admits_up_to_its_limit_across_processes(tmp_path: Path) -> None:
    service, cli = SqliteJournal(tmp_path / "j.db"), SqliteJournal(tmp_path / "j.db")
    assert service.take_slot("in:host2", 2, "1:vm1")
    assert cli.take_slot("in:host2", 2, "7:vm9")
    assert not cli.take_slot("in:host2", 2, "7:vm10")
    assert cli.take_slot("in:host3", 2, "7:vm10")  # another host's slot is its own


def test_a_released_place_is_free_again(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    journal.take_slot("out:host3", 1, "1:vm1")
    journal.release_slot("out:host3", "1:vm1")
    assert journal.take_slot("out:host3", 1, "1:vm2")


def test_taking_a_place_twice_is_the_same_place(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    assert journal.take_slot("in:host2", 1, "1:vm1")
    assert journal.take_slot("in:host2", 1, "1:vm1")


def test_a_dead_process_does_not_keep_its_places(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    journal._db.execute(  # what a SIGKILLed evac leaves behind
        "INSERT INTO slots (slot, holder, owner, since) VALUES ('in:host2', '3:vm1', ?, ?)",
        (f"{socket.gethostname()}:999999999:0", time.time()),
    )
    assert journal.take_slot("in:host2", 1, "4:vm2")
