"""``first_seen``: what a webhook's nonce and an alert's fingerprint are checked against."""

from __future__ import annotations

from pathlib import Path

from evac.sqlitejournal import SqliteJournal


def test_a_key_is_new_once_then_a_repeat_for_every_process_on_the_journal(tmp_path: Path) -> None:
    one, other = SqliteJournal(tmp_path / "j.db"), SqliteJournal(tmp_path / "j.db")
    assert one.first_seen("nonce:abc", 300)
    assert not one.first_seen("nonce:abc", 300)
    assert not other.first_seen("nonce:abc", 300)
    assert other.first_seen("nonce:def", 300)


def test_a_key_is_new_again_once_its_time_is_over(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    assert journal.first_seen("alert:fp", -1)  # already expired when recorded
    assert journal.first_seen("alert:fp", 300)
