"""Journal faults: one line naming the file and the way out, never a traceback.

The faults are real files (a directory, garbage bytes, a malformed database, an immutable
file, another process holding the lock, a page limit standing in for a full disk). Run as
root, file modes do not stop writes, so read-only is made with ``chattr +i`` (and chmod
when not root); a read-only or full filesystem is mounted in a private mount namespace
where ``unshare -m`` works, and skipped where it does not.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from evac import sqlitejournal
from evac.app import App
from evac.cli import main
from evac.errors import JournalError
from evac.sqlitejournal import SqliteJournal
from evac.states import JobState
from tests.conftest import require

PAGE = 4096


def _journal_with_jobs(path: Path, jobs: int = 60) -> None:
    journal = SqliteJournal(path)
    for n in range(jobs):
        job = journal.create_job("drain", "cli", {"pad": "x" * 400}, f"host{n}", False, None)
        journal.finish_job(job, JobState.SUCCEEDED)
    journal.engage_brake("2 of 3 hosts down")
    journal._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    journal.close()


def directory(tmp_path: Path) -> Path:
    path = tmp_path / "journal.db"
    path.mkdir()
    return path


def parent_is_a_file(tmp_path: Path) -> Path:
    (tmp_path / "state").write_text("not a directory\n")
    return tmp_path / "state" / "journal.db"


def garbage(tmp_path: Path) -> Path:
    path = tmp_path / "journal.db"
    path.write_bytes(bytes(range(256)) * 32)
    return path


def header_then_garbage(tmp_path: Path) -> Path:
    path = tmp_path / "journal.db"
    path.write_bytes(b"SQLite format 3\x00" + b"\xa5" * (PAGE * 4 - 16))
    return path


def truncated(tmp_path: Path) -> Path:
    path = tmp_path / "journal.db"
    _journal_with_jobs(path)
    path.write_bytes(path.read_bytes()[: PAGE * 2])
    return path


def corrupt_jobs_table(tmp_path: Path) -> Path:
    """Opens fine; reading the jobs fails (``database disk image is malformed``)."""
    path = tmp_path / "journal.db"
    _journal_with_jobs(path)
    db = sqlite3.connect(path)
    (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'jobs'").fetchone()
    db.close()
    data = bytearray(path.read_bytes())
    data[(root - 1) * PAGE : root * PAGE] = b"\xff" * PAGE
    path.write_bytes(bytes(data))
    return path


BROKEN: dict[str, tuple[Callable[[Path], Path], str]] = {
    "directory": (directory, "is a directory, not a journal file (point `journal:`"),
    "parent is a file": (parent_is_a_file, "is a file, not a directory (move that file away"),
    "garbage": (garbage, "not a SQLite database (restore it from a backup, or move it away"),
    "header then garbage": (header_then_garbage, "not a SQLite database (restore it from a backup"),
    "truncated": (truncated, "corrupt journal, database disk image is malformed (restore it from a backup"),
    "corrupt jobs table": (corrupt_jobs_table, "corrupt journal, database disk image is malformed (restore"),
}


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


@pytest.fixture(autouse=True)
def no_inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVAC_INVENTORY", str(tmp_path / "none.yaml"))
    monkeypatch.delenv("EVAC_CONFIG", raising=False)


# ---------------------------------------------------------------- broken files, through the CLI
COMMANDS = {"history": ["history"], "status": ["status"], "status 1": ["status", "1"], "brake": ["brake", "release"]}


@pytest.mark.parametrize(
    ("case", "command"),
    [
        pytest.param(case, command, id=f"{case}-{name}")
        for case in BROKEN
        for name, command in COMMANDS.items()
        if not (case == "corrupt jobs table" and name == "brake")  # the brake's own table is sound
    ],
)
def test_a_broken_journal_is_one_line_naming_the_file_and_the_way_out(
    case: str, command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, expected = BROKEN[case]
    path = make(tmp_path)
    assert main(["--journal", str(path), *command]) == 1
    line = one_line(capsys)
    assert line.startswith(f"evac: {path}: ") and expected in line, line


@pytest.mark.parametrize("case", list(BROKEN))
def test_opening_a_broken_journal_raises_journal_error_with_its_message(case: str, tmp_path: Path) -> None:
    make, expected = BROKEN[case]
    path = make(tmp_path)
    with pytest.raises(JournalError) as caught:
        SqliteJournal(path).jobs()
    assert str(caught.value).startswith(f"{path}: ") and expected in str(caught.value)


def test_the_app_and_the_service_refuse_to_start_on_a_broken_journal(tmp_path: Path) -> None:
    from evac.config import load_config
    from evac.plugins import plugin_manager
    from evac.service import Service

    path = garbage(tmp_path)
    with pytest.raises(JournalError, match="not a SQLite database"):
        App(journal_path=path).journal  # noqa: B018
    (tmp_path / "hosts.yaml").write_text("hosts:\n  - {name: h1, uri: 'qemu+tcp://127.0.0.1:9/system'}\n")
    config_file = tmp_path / "evac.yaml"
    config_file.write_text(
        f"inventory: hosts.yaml\njournal: {path}\nmonitor: {{enabled: false}}\nlisten: {{port: 0}}\n"
    )
    pm = plugin_manager(load_entrypoints=False)
    with pytest.raises(JournalError, match="not a SQLite database"):
        Service(App.from_config(load_config(config_file, pm), pm))


def test_evac_serve_on_a_broken_journal_exits_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = corrupt_jobs_table(tmp_path)
    (tmp_path / "hosts.yaml").write_text("hosts:\n  - {name: h1, uri: 'qemu+tcp://127.0.0.1:9/system'}\n")
    config_file = tmp_path / "evac.yaml"
    config_file.write_text(
        f"inventory: hosts.yaml\njournal: {path}\nmonitor: {{enabled: false}}\nlisten: {{port: 0}}\n"
    )
    assert main(["serve", "--config", str(config_file)]) == 1
    assert one_line(capsys).startswith(f"evac: {path}: corrupt journal")


# ---------------------------------------------------------------- read-only
@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` (a file or a directory) unwritable even for root: chmod, else ``chattr +i``."""
    mode = path.stat().st_mode
    path.chmod(0o555 if path.is_dir() else 0o444)
    immutable = False
    if os.access(path, os.W_OK):  # root: modes do not apply
        if (
            shutil.which("chattr") is None
            or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode
        ):
            path.chmod(mode)
            require(False, "cannot make a file read-only for root here (no chattr +i on this filesystem)")
        immutable = True
    try:
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(mode)


def test_a_read_only_journal_still_reads_and_a_write_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "journal.db"
    _journal_with_jobs(path, jobs=2)
    with read_only(path):
        assert main(["--journal", str(path), "history", "--json"]) == 0
        capsys.readouterr()
        assert main(["--journal", str(path), "brake", "release"]) == 1
        assert one_line(capsys) == (
            f"evac: {path}: read-only, evac cannot write its journal (make the file, its directory and its -wal"
            " and -shm files writable by the user evac runs as, or point `journal:` in evac.yaml or --journal"
            " elsewhere)"
        )


def test_a_journal_in_a_read_only_directory_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "state" / "journal.db"
    _journal_with_jobs(path, jobs=2)
    with read_only(path.parent):
        assert main(["--journal", str(path), "history"]) == 1
        assert one_line(capsys).startswith(
            f"evac: {path}: cannot open the journal: its directory {path.parent} is read-only (SQLite needs it"
        )


def test_a_new_journal_in_a_read_only_directory_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "state").mkdir()
    path = tmp_path / "state" / "journal.db"
    with read_only(path.parent):
        assert main(["--journal", str(path), "history"]) == 1
        assert f"evac: {path}: cannot open the journal: its directory {path.parent} is read-only" in one_line(capsys)


# ---------------------------------------------------------------- locked
@contextmanager
def held_by_another_process(path: Path, readers_too: bool = False) -> Iterator[None]:
    """Another process in a write transaction on ``path`` until the block ends; with
    ``readers_too`` in exclusive locking mode, so not even a read gets in."""
    script = textwrap.dedent(
        """
        import sqlite3, sys
        db = sqlite3.connect(sys.argv[1], isolation_level=None)
        if sys.argv[2] == "all":
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO audit (ts, actor, action, target, detail) VALUES (0, 'x', 'x', 'x', '{}')")
        print("held", flush=True)
        sys.stdin.read()
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(path), "all" if readers_too else "writers"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)


def test_a_write_locked_past_the_busy_timeout_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    journal = SqliteJournal(path, timeout=0.1)
    with held_by_another_process(path), pytest.raises(JournalError) as caught:
        journal.audit("ops", "brake.release", "fleet")
    assert str(caught.value) == (
        f"{path}: locked by another process for more than 0.1 s (let it finish and try again; `fuser {path}` names it)"
    )
    journal.audit("ops", "brake.release", "fleet")  # once it is gone, the same journal writes again


def test_a_journal_held_exclusively_is_one_line_from_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "journal.db"
    _journal_with_jobs(path, jobs=1)
    monkeypatch.setattr(sqlitejournal, "BUSY_TIMEOUT", 0.1)
    with held_by_another_process(path, readers_too=True):
        assert main(["--journal", str(path), "history"]) == 1
    assert one_line(capsys).startswith(f"evac: {path}: locked by another process for more than 0.1 s")


def test_reads_go_on_while_another_process_writes(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    _journal_with_jobs(path, jobs=3)
    with held_by_another_process(path):
        assert len(SqliteJournal(path, timeout=0.1).jobs()) == 3


# ---------------------------------------------------------------- disk full
def full(journal: SqliteJournal) -> None:
    """The journal's file may not grow any more: SQLite's page limit stands in for a full disk."""
    (pages,) = journal._db.execute("PRAGMA page_count").fetchone()
    journal._db.execute(f"PRAGMA max_page_count = {pages}")


def test_a_full_disk_is_one_line_and_the_journal_stays_usable(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    journal = SqliteJournal(path)
    full(journal)
    with pytest.raises(JournalError) as caught:
        journal.save_definitions("kvm1", {f"vm{n}": "<domain/>" * 400 for n in range(50)})
    assert str(caught.value) == (
        f"{path}: disk full (free space on the filesystem that holds the journal, then try again)"
    )
    assert journal.brake() is None and journal.definitions("kvm1") == {}  # nothing half-written
    journal.engage_brake("small writes still fit")
    SqliteJournal(path, timeout=0.1).release_brake()  # no transaction left open: another process writes


def test_a_job_that_cannot_be_recorded_as_finished_still_releases_its_lock_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    journal = SqliteJournal(path)
    job = journal.create_job("drain", "cli", {}, "kvm1", False, "drain:kvm1")
    full(journal)
    with pytest.raises(JournalError) as caught:
        journal.finish_job(job, JobState.FAILED, "step 'migrate': " + "x" * 50_000)
    assert str(caught.value) == (
        f"{path}: disk full: job {job} ended failed but the journal still shows it running, and its lock"
        " drain:kvm1 was released (free space on the filesystem that holds the journal, then try again;"
        " then `evac resume` finishes the job)"
    )
    other = SqliteJournal(path, timeout=0.1)
    assert other.job(job).state == JobState.RUNNING  # type: ignore[union-attr]
    assert other.create_job("drain", "cli", {}, "kvm1", False, "drain:kvm1") > job


def test_a_failed_transaction_leaves_no_lock_on_the_file(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    journal = SqliteJournal(path)
    full(journal)
    for _ in range(2):  # and the same connection starts its next transaction cleanly
        with pytest.raises(JournalError, match="disk full"):
            journal.save_definitions("kvm1", {"vm1": "<domain/>" * 5000})
    SqliteJournal(path, timeout=0.1).engage_brake("another process still writes")


# ---------------------------------------------------------------- real filesystems, where they can be mounted
def _mount_namespace() -> bool:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k none /mnt && umount /mnt"], capture_output=True
    )
    return probe.returncode == 0


@pytest.fixture
def mounts() -> None:
    """Real read-only and full filesystems: under CI=true their absence fails the test."""
    require(_mount_namespace(), "needs unshare -m and tmpfs mounts (root)")


def _in_private_tmpfs(tmp_path: Path, script: str) -> subprocess.CompletedProcess[str]:
    """``script`` in a private mount namespace with a 512 KiB tmpfs at $M (gone when it ends)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    evac = f"{sys.executable} -m evac --inventory {tmp_path / 'none.yaml'} --journal $M/journal.db"
    seed = f"{sys.executable} -c \"from evac.sqlitejournal import SqliteJournal as J; J('$M/journal.db').engage_brake('x')\""
    body = f"set -e; M={mnt}; mount -t tmpfs -o size=512k none $M; {seed}; " + script.replace("EVAC", evac)
    return subprocess.run(["unshare", "-m", "sh", "-c", body], capture_output=True, text=True, timeout=60)


@pytest.mark.usefixtures("mounts")
def test_a_journal_on_a_read_only_filesystem_is_one_line(tmp_path: Path) -> None:
    done = _in_private_tmpfs(tmp_path, "mount -o remount,ro $M; EVAC brake release")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"evac: {tmp_path / 'mnt' / 'journal.db'}: read-only: its filesystem is mounted read-only (check the disk,"
        " since the kernel remounts a failing one read-only, then remount it read-write, or point `journal:` in"
        " evac.yaml or --journal elsewhere)"
    )


@pytest.mark.usefixtures("mounts")
def test_a_journal_on_a_full_filesystem_is_one_line(tmp_path: Path) -> None:
    done = _in_private_tmpfs(tmp_path, "dd if=/dev/zero of=$M/fill bs=4k 2>/dev/null || true; EVAC brake release")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"evac: {tmp_path / 'mnt' / 'journal.db'}: disk full (free space on the filesystem that holds the journal,"
        " then try again)"
    )
