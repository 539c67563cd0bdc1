"""The embedded journal: one SQLite file in WAL mode, safe across processes.

The CLI that cancels a job and the process that runs it share the file; every write
is its own short transaction, and the lock check and job creation share one.

Every fault of the file (a directory, not a database, corrupt, read-only, locked past
the busy timeout, disk full) is a :class:`~evac.errors.JournalError` whose message is
one line naming the file and the way out (docs/journal.md). A transaction that fails
is rolled back at once, so a failed write never leaves the file locked.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import ConfigError, JournalError, LockedError
from .events import Event
from .journal import (
    AuditRecord,
    BrakeState,
    Disarmed,
    HostState,
    ItemRecord,
    JobRecord,
    StepRecord,
    current_owner,
    owner_alive,
)
from .states import TERMINAL, HostMode, ItemState, JobState, StepState

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, runbook TEXT NOT NULL, source TEXT NOT NULL,
    params TEXT NOT NULL, target TEXT NOT NULL, state TEXT NOT NULL, dry_run INTEGER NOT NULL,
    lock TEXT, owner TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,
    error TEXT NOT NULL DEFAULT '', cancel_requested INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS steps (
    job_id INTEGER NOT NULL, step TEXT NOT NULL, state TEXT NOT NULL, outputs TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT '', updated REAL NOT NULL, PRIMARY KEY (job_id, step));
CREATE TABLE IF NOT EXISTS items (
    job_id INTEGER NOT NULL, step TEXT NOT NULL, key TEXT NOT NULL, state TEXT NOT NULL,
    outputs TEXT NOT NULL, error TEXT NOT NULL DEFAULT '', attempts INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL, PRIMARY KEY (job_id, step, key));
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, job_id INTEGER NOT NULL, ts REAL NOT NULL, kind TEXT NOT NULL,
    step TEXT NOT NULL, item TEXT NOT NULL, message TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id, id);
CREATE TABLE IF NOT EXISTS locks (name TEXT PRIMARY KEY, job_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS approvals (
    job_id INTEGER NOT NULL, step TEXT NOT NULL, actor TEXT NOT NULL, ts REAL NOT NULL,
    PRIMARY KEY (job_id, step));
CREATE TABLE IF NOT EXISTS host_states (
    host TEXT PRIMARY KEY, state TEXT NOT NULL, reason TEXT NOT NULL, actor TEXT NOT NULL, since REAL NOT NULL);
CREATE TABLE IF NOT EXISTS storm_brake (
    id INTEGER PRIMARY KEY CHECK (id = 1), reason TEXT NOT NULL, since REAL NOT NULL);
CREATE TABLE IF NOT EXISTS ha_disarmed (
    id INTEGER PRIMARY KEY CHECK (id = 1), reason TEXT NOT NULL, actor TEXT NOT NULL, since REAL NOT NULL);
CREATE TABLE IF NOT EXISTS slots (
    slot TEXT NOT NULL, holder TEXT NOT NULL, owner TEXT NOT NULL, since REAL NOT NULL, PRIMARY KEY (slot, holder));
CREATE TABLE IF NOT EXISTS definitions (
    host TEXT NOT NULL, guest TEXT NOT NULL, xml TEXT NOT NULL, ts REAL NOT NULL, PRIMARY KEY (host, guest));
CREATE TABLE IF NOT EXISTS snapshots (host TEXT PRIMARY KEY, ts REAL NOT NULL, guests INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS learned (key TEXT PRIMARY KEY, value TEXT NOT NULL, ts REAL NOT NULL, job_id INTEGER);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    target TEXT NOT NULL, detail TEXT NOT NULL);
"""
SCHEMA_NAMES = frozenset(re.findall(r"CREATE (?:TABLE|INDEX) IF NOT EXISTS (\w+)", SCHEMA))

BUSY_TIMEOUT = 30.0  # seconds a write waits for another process's transaction
PRUNE_BATCH = 5000  # rows per transaction, so pruning never holds the file for long

RESTORE = "restore it from a backup, or move it away to start a new journal"
ELSEWHERE = "or point `journal:` in evac.yaml or --journal elsewhere"


def describe_fault(path: Path, exc: sqlite3.Error, timeout: float = BUSY_TIMEOUT) -> str:
    """One line for a SQLite error on the journal at ``path``: what is wrong and the way out."""
    problem, way_out = _fault(path, exc, timeout)
    return f"{path}: {problem} ({way_out})"


def _fault(path: Path, exc: sqlite3.Error, timeout: float) -> tuple[str, str]:
    code = getattr(exc, "sqlite_errorcode", -1) & 0xFF  # the primary code of an extended one
    if code == sqlite3.SQLITE_NOTADB:
        return "not a SQLite database", RESTORE
    if code == sqlite3.SQLITE_CORRUPT:
        return f"corrupt journal, {exc}", f"{RESTORE}; `sqlite3 {path} .recover` may save what is left of it"
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN) and _mounted_read_only(path):
        return "read-only: its filesystem is mounted read-only", (
            f"check the disk, since the kernel remounts a failing one read-only, then remount it read-write,"
            f" {ELSEWHERE}"
        )
    if code in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN) and _no_space(path):
        return "disk full", "free space on the filesystem that holds the journal, then try again"
    if code == sqlite3.SQLITE_READONLY:
        return "read-only, evac cannot write its journal", (
            f"make the file, its directory and its -wal and -shm files writable by the user evac runs as, {ELSEWHERE}"
        )
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return f"locked by another process for more than {timeout:g} s", (
            f"let it finish and try again; `fuser {path}` names it"
        )
    if code == sqlite3.SQLITE_FULL:
        return "disk full", "free space on the filesystem that holds the journal, then try again"
    if code == sqlite3.SQLITE_CANTOPEN and path.parent.is_dir() and not os.access(path.parent, os.W_OK):
        return f"cannot open the journal: its directory {path.parent} is read-only", (
            f"SQLite needs it writable for the journal's -wal and -shm files: make it writable by the user evac"
            f" runs as, {ELSEWHERE}"
        )
    if code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH):
        return f"cannot open the journal, {exc}", (
            f"check that its directory exists and that the user evac runs as may read and write both, {ELSEWHERE}"
        )
    if code == sqlite3.SQLITE_IOERR:
        return f"I/O error, {exc}", f"check the disk and the kernel log, then try again; if it persists, {RESTORE}"
    return f"journal error, {exc}", f"check the file; if it persists, {RESTORE}"


def _mounted_read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path.parent).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _no_space(path: Path) -> bool:
    """The journal's filesystem has no block or no inode left (SQLite may call that an I/O error)."""
    try:
        fs = os.statvfs(path.parent)
    except OSError:
        return False
    return fs.f_bavail == 0 or (fs.f_files > 0 and fs.f_favail == 0)


def _check_place(path: Path) -> None:
    """The journal's path names a file in a directory that exists or can be made."""
    if path.is_dir():
        raise JournalError(
            f"{path}: is a directory, not a journal file (point `journal:` in evac.yaml or --journal at a file,"
            f" e.g. {path / 'journal.db'})"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), path.parent)
        raise JournalError(
            f"{path}: cannot create its directory: {blocker} is a file, not a directory"
            f" (move that file away, {ELSEWHERE})"
        ) from None
    except OSError as exc:
        raise JournalError(
            f"{path}: cannot create its directory {path.parent}: {exc.strerror} (create it, writable by the user"
            f" evac runs as, {ELSEWHERE})"
        ) from None


class SqliteJournal:
    def __init__(self, path: Path | str, timeout: float | None = None, owner: str | None = None) -> None:
        """Open (or create) the journal; ``timeout``: seconds to wait for another process's
        transaction before a :class:`JournalError` says the file is locked (``BUSY_TIMEOUT``).
        ``owner`` stands for another process in tests (``evac.journal.current_owner`` form)."""
        self.path = Path(path)
        self.timeout = timeout = BUSY_TIMEOUT if timeout is None else timeout
        if str(path) != ":memory:":
            _check_place(self.path)
        self._mutex = threading.RLock()
        self._owner = owner or current_owner()
        try:
            self._db = sqlite3.connect(self.path, timeout=timeout, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise JournalError(describe_fault(self.path, exc, timeout)) from exc
        self._db.row_factory = sqlite3.Row
        try:
            with self._faults():
                if self._db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                names = {r["name"] for r in self._db.execute("SELECT name FROM sqlite_master")}
                if not names >= SCHEMA_NAMES:  # a complete journal on a read-only disk still reads
                    self._db.executescript(SCHEMA)
                columns = {r["name"] for r in self._db.execute("PRAGMA table_info(learned)")}
                if "job_id" not in columns:  # journals from before job-scoped facts
                    self._db.execute("ALTER TABLE learned ADD COLUMN job_id INTEGER")
        except JournalError:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _faults(self) -> Iterator[None]:
        """SQLite's errors as one-line :class:`JournalError`; an open transaction is rolled back."""
        with self._mutex:
            try:
                yield
            except sqlite3.Error as exc:
                self._rollback()
                raise JournalError(describe_fault(self.path, exc, self.timeout)) from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed, or rolled back on any error (never left open)."""
        with self._faults():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite rolled it back itself (a full disk, an I/O error)

    def _write(self, sql: str, args: tuple[Any, ...]) -> sqlite3.Cursor:
        with self._faults():
            return self._db.execute(sql, args)

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._faults():
            return self._db.execute(sql, args).fetchall()

    # ---------------------------------------------------------------- jobs
    def create_job(
        self, runbook: str, source: str, params: dict[str, Any], target: str, dry_run: bool, lock: str | None
    ) -> int:
        now = time.time()
        with self._transaction() as db:
            if lock:
                held = db.execute(
                    "SELECT l.job_id FROM locks l JOIN jobs j ON j.id = l.job_id WHERE l.name = ?",
                    (lock,),
                ).fetchone()
                if held is not None:
                    raise LockedError(f"already running: job {held['job_id']} holds {lock}", int(held["job_id"]))
            cur = db.execute(
                "INSERT INTO jobs (runbook, source, params, target, state, dry_run, lock, owner, created, updated)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    runbook,
                    source,
                    json.dumps(params),
                    target,
                    JobState.RUNNING,
                    int(dry_run),
                    lock,
                    self._owner,
                    now,
                    now,
                ),
            )
            job_id = int(cur.lastrowid or 0)
            if lock:
                db.execute("INSERT INTO locks (name, job_id) VALUES (?, ?)", (lock, job_id))
        return job_id

    def job(self, job_id: int) -> JobRecord | None:
        rows = self._read("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def jobs(self, limit: int = 50) -> list[JobRecord]:
        return [_job(r) for r in self._read("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,))]

    def unfinished_jobs(self) -> list[JobRecord]:
        return [_job(r) for r in self._read("SELECT * FROM jobs WHERE state = ? ORDER BY id", (JobState.RUNNING,))]

    def claim(self, job_id: int) -> bool:
        with self._transaction() as db:
            row = db.execute("SELECT owner, state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            ok = row is not None and row["state"] == JobState.RUNNING
            ok = ok and (row["owner"] == self._owner or not owner_alive(row["owner"]))
            if ok:
                db.execute("UPDATE jobs SET owner = ?, updated = ? WHERE id = ?", (self._owner, time.time(), job_id))
        return bool(ok)

    def release(self, job_id: int) -> None:
        self._write(
            "UPDATE jobs SET owner = '', updated = ? WHERE id = ? AND owner = ?", (time.time(), job_id, self._owner)
        )

    def fence_token(self, job_id: int | None) -> int:
        return 0

    def finish_job(self, job_id: int, state: JobState, error: str = "") -> None:
        """On a fault, what can still be done is: the job's lock is released on its own,
        and the error says whether it was and that the journal still shows the job running."""
        try:
            with self._transaction() as db:
                db.execute(
                    "UPDATE jobs SET state = ?, error = ?, updated = ? WHERE id = ?",
                    (state, error, time.time(), job_id),
                )
                db.execute("DELETE FROM locks WHERE job_id = ?", (job_id,))
                db.execute("DELETE FROM learned WHERE job_id = ?", (job_id,))
        except JournalError as exc:
            if not isinstance(exc.__cause__, sqlite3.Error):
                raise
            problem, way_out = _fault(self.path, exc.__cause__, self.timeout)
            try:
                with self._transaction() as db:
                    locks = [r["name"] for r in db.execute("SELECT name FROM locks WHERE job_id = ?", (job_id,))]
                    db.execute("DELETE FROM locks WHERE job_id = ?", (job_id,))
                held = f"its lock {', '.join(locks)} was released" if locks else "it held no lock"
            except JournalError:
                held = "its lock, if it had one, is still held"
            raise JournalError(
                f"{self.path}: {problem}: job {job_id} ended {state} but the journal still shows it running, and"
                f" {held} ({way_out}; then `evac resume` finishes the job)"
            ) from exc

    def request_cancel(self, job_id: int) -> None:
        self._write("UPDATE jobs SET cancel_requested = 1, updated = ? WHERE id = ?", (time.time(), job_id))

    # ---------------------------------------------------------------- steps and items
    def step(self, job_id: int, step: str) -> StepRecord | None:
        rows = self._read("SELECT * FROM steps WHERE job_id = ? AND step = ?", (job_id, step))
        if not rows:
            return None
        r = rows[0]
        return StepRecord(r["step"], StepState(r["state"]), json.loads(r["outputs"]), r["error"])

    def save_step(self, job_id: int, step: str, state: StepState, outputs: dict[str, Any], error: str = "") -> None:
        self._write(
            "INSERT OR REPLACE INTO steps (job_id, step, state, outputs, error, updated) VALUES (?, ?, ?, ?, ?, ?)",
            (job_id, step, state, json.dumps(outputs, default=str), error, time.time()),
        )

    def items(self, job_id: int, step: str) -> dict[str, ItemRecord]:
        rows = self._read("SELECT * FROM items WHERE job_id = ? AND step = ?", (job_id, step))
        return {
            r["key"]: ItemRecord(r["key"], ItemState(r["state"]), json.loads(r["outputs"]), r["error"], r["attempts"])
            for r in rows
        }

    def save_item(
        self,
        job_id: int,
        step: str,
        key: str,
        state: ItemState,
        outputs: dict[str, Any],
        error: str = "",
        attempts: int = 0,
    ) -> None:
        self._write(
            "INSERT OR REPLACE INTO items (job_id, step, key, state, outputs, error, attempts, updated)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (job_id, step, key, state, json.dumps(outputs, default=str), error, attempts, time.time()),
        )

    # ---------------------------------------------------------------- events, approvals, audit
    def add_event(self, event: Event) -> None:
        self._write(
            "INSERT INTO events (job_id, ts, kind, step, item, message, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                event.job_id,
                event.ts,
                event.kind,
                event.step,
                event.item,
                event.message,
                json.dumps(event.data, default=str),
            ),
        )

    def events(self, job_id: int, after: int = 0) -> list[tuple[int, Event]]:
        rows = self._read("SELECT * FROM events WHERE job_id = ? AND id > ? ORDER BY id", (job_id, after))
        return [
            (r["id"], Event(r["kind"], r["job_id"], r["step"], r["item"], r["message"], json.loads(r["data"]), r["ts"]))
            for r in rows
        ]

    def approve(self, job_id: int, step: str, actor: str) -> None:
        self._write(
            "INSERT OR IGNORE INTO approvals (job_id, step, actor, ts) VALUES (?, ?, ?, ?)",
            (job_id, step, actor, time.time()),
        )

    def approved_by(self, job_id: int, step: str) -> str | None:
        rows = self._read("SELECT actor FROM approvals WHERE job_id = ? AND step = ?", (job_id, step))
        return str(rows[0]["actor"]) if rows else None

    def audit(self, actor: str, action: str, target: str, detail: dict[str, Any] | None = None) -> None:
        self._write(
            "INSERT INTO audit (ts, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
            (time.time(), actor, action, target, json.dumps(detail or {}, default=str)),
        )

    def audit_log(self, limit: int = 100) -> list[AuditRecord]:
        rows = self._read("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        return [AuditRecord(r["ts"], r["actor"], r["action"], r["target"], json.loads(r["detail"])) for r in rows]

    # ---------------------------------------------------------------- host states
    def set_host_state(self, host: str, state: HostMode, reason: str, actor: str) -> None:
        if state == HostMode.ENABLED:
            self._write("DELETE FROM host_states WHERE host = ?", (host,))
            return
        self._write(
            "INSERT OR REPLACE INTO host_states (host, state, reason, actor, since) VALUES (?, ?, ?, ?, ?)",
            (host, state, reason, actor, time.time()),
        )

    def host_states(self) -> dict[str, HostState]:
        rows = self._read("SELECT * FROM host_states")
        return {
            r["host"]: HostState(r["host"], HostMode(r["state"]), r["reason"], r["actor"], r["since"]) for r in rows
        }

    # ---------------------------------------------------------------- storm brake
    def engage_brake(self, reason: str) -> None:
        self._write("INSERT OR IGNORE INTO storm_brake (id, reason, since) VALUES (1, ?, ?)", (reason, time.time()))

    def release_brake(self) -> bool:
        return self._write("DELETE FROM storm_brake", ()).rowcount > 0

    def brake(self) -> BrakeState | None:
        rows = self._read("SELECT reason, since FROM storm_brake")
        return BrakeState(rows[0]["reason"], rows[0]["since"]) if rows else None

    # ---------------------------------------------------------------- HA disarmed
    def disarm(self, reason: str, actor: str) -> bool:
        sql = "INSERT OR IGNORE INTO ha_disarmed (id, reason, actor, since) VALUES (1, ?, ?, ?)"
        return self._write(sql, (reason, actor, time.time())).rowcount > 0

    def arm(self) -> Disarmed | None:
        held = self.disarmed()
        return held if held is not None and self._write("DELETE FROM ha_disarmed", ()).rowcount > 0 else None

    def disarmed(self) -> Disarmed | None:
        rows = self._read("SELECT reason, actor, since FROM ha_disarmed")
        return Disarmed(rows[0]["reason"], rows[0]["actor"], rows[0]["since"]) if rows else None

    # ---------------------------------------------------------------- slots
    def take_slot(self, slot: str, limit: int, holder: str) -> bool:
        with self._transaction() as db:
            rows = db.execute("SELECT holder, owner FROM slots WHERE slot = ?", (slot,)).fetchall()
            dead = [r["holder"] for r in rows if r["owner"] != self._owner and not owner_alive(r["owner"])]
            db.executemany("DELETE FROM slots WHERE slot = ? AND holder = ?", [(slot, h) for h in dead])
            held = {r["holder"] for r in rows} - set(dead)
            taken = holder in held or len(held) < max(1, limit)
            if taken:
                db.execute(
                    "INSERT OR IGNORE INTO slots (slot, holder, owner, since) VALUES (?, ?, ?, ?)",
                    (slot, holder, self._owner, time.time()),
                )
        return taken

    def release_slot(self, slot: str, holder: str) -> None:
        self._write("DELETE FROM slots WHERE slot = ? AND holder = ?", (slot, holder))

    # ---------------------------------------------------------------- guest definitions
    def save_definitions(self, host: str, definitions: dict[str, str]) -> None:
        now = time.time()
        with self._transaction() as db:
            db.execute("DELETE FROM definitions WHERE host = ?", (host,))
            db.executemany(
                "INSERT INTO definitions (host, guest, xml, ts) VALUES (?, ?, ?, ?)",
                [(host, name, xml, now) for name, xml in definitions.items()],
            )
            db.execute(
                "INSERT OR REPLACE INTO snapshots (host, ts, guests) VALUES (?, ?, ?)", (host, now, len(definitions))
            )

    def definitions(self, host: str) -> dict[str, str]:
        return {r["guest"]: r["xml"] for r in self._read("SELECT guest, xml FROM definitions WHERE host = ?", (host,))}

    def snapshot_taken(self, host: str) -> float | None:
        rows = self._read("SELECT ts FROM snapshots WHERE host = ?", (host,))
        if rows:
            return float(rows[0]["ts"])
        older = self._read("SELECT MAX(ts) AS ts FROM definitions WHERE host = ?", (host,))  # journals before 0.2
        return float(older[0]["ts"]) if older and older[0]["ts"] is not None else None

    def remember(self, key: str, value: str, job: int | None = None) -> None:
        self._write(
            "INSERT OR REPLACE INTO learned (key, value, ts, job_id) VALUES (?, ?, ?, ?)",
            (key, value, time.time(), job),
        )

    def first_seen(self, key: str, ttl: float) -> bool:
        now = time.time()
        with self._transaction() as db:
            db.execute("DELETE FROM seen WHERE expires < ?", (now,))
            fresh = db.execute("INSERT OR IGNORE INTO seen (key, expires) VALUES (?, ?)", (key, now + ttl)).rowcount
        return bool(fresh)

    def forget_seen(self, key: str) -> None:
        self._write("DELETE FROM seen WHERE key = ?", (key,))

    def forget(self, key: str) -> None:
        self._write("DELETE FROM learned WHERE key = ?", (key,))

    def recall(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM learned WHERE key = ?", (key,))
        return str(rows[0]["value"]) if rows else None

    # ---------------------------------------------------------------- retention
    def prune(self, events_before: float, audit_before: float) -> tuple[int, int]:
        finished = ", ".join(f"'{s}'" for s in sorted(TERMINAL))
        events = self._delete_batches(
            "DELETE FROM events WHERE id IN (SELECT e.id FROM events e LEFT JOIN jobs j ON j.id = e.job_id"
            f" WHERE (j.id IS NULL AND e.ts < ?) OR (j.state IN ({finished}) AND j.updated < ?) LIMIT ?)",
            (events_before, events_before),
        )
        audit = self._delete_batches(
            "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE ts < ? LIMIT ?)", (audit_before,)
        )
        return events, audit

    def _delete_batches(self, sql: str, args: tuple[Any, ...]) -> int:
        removed = 0
        while True:
            with self._transaction() as db:
                count = db.execute(sql, (*args, PRUNE_BATCH)).rowcount
            removed += count
            if count < PRUNE_BATCH:
                return removed

    # ---------------------------------------------------------------- copy (evac journal copy)
    def dump(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every record, as ``evac.journalcopy`` moves them between journals."""
        for r in self._read("SELECT * FROM jobs ORDER BY id"):
            job = dict(r)
            job.update(params=json.loads(r["params"]), dry_run=bool(r["dry_run"]))
            job["cancel_requested"] = bool(r["cancel_requested"])
            yield "job", job
        for r in self._read("SELECT * FROM steps ORDER BY job_id, step"):
            yield "step", {**dict(r), "outputs": json.loads(r["outputs"])}
        for r in self._read("SELECT * FROM items ORDER BY job_id, step, key"):
            yield "item", {**dict(r), "outputs": json.loads(r["outputs"])}
        for r in self._read("SELECT * FROM events ORDER BY id"):
            yield "event", {**dict(r), "data": json.loads(r["data"])}
        for r in self._read("SELECT * FROM approvals ORDER BY job_id, step"):
            yield "approval", dict(r)
        for r in self._read("SELECT * FROM audit ORDER BY id"):
            yield "audit", {**dict(r), "detail": json.loads(r["detail"])}
        for r in self._read("SELECT * FROM host_states ORDER BY host"):
            yield "host", dict(r)
        for r in self._read("SELECT reason, since FROM storm_brake"):
            yield "brake", dict(r)
        for r in self._read("SELECT reason, actor, since FROM ha_disarmed"):
            yield "disarmed", dict(r)
        hosts = {r["host"]: r["ts"] for r in self._read("SELECT host, MAX(ts) AS ts FROM definitions GROUP BY host")}
        hosts |= {r["host"]: r["ts"] for r in self._read("SELECT host, ts FROM snapshots")}  # before 0.2: none
        for host, ts in sorted(hosts.items()):
            guests = self._read("SELECT guest, xml FROM definitions WHERE host = ?", (host,))
            yield "definitions", {"host": host, "ts": ts, "definitions": {g["guest"]: g["xml"] for g in guests}}
        for r in self._read("SELECT * FROM learned ORDER BY key"):
            yield "learned", dict(r)

    def load(self, records: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Into an empty journal: job ids kept, events and audit rows in their order.
        A copied unfinished job belongs to nobody until a controller claims it."""
        if self._read("SELECT id FROM jobs LIMIT 1"):
            raise ConfigError(f"{self.path}: already has jobs; copy only into an empty journal")
        with self._transaction() as db:
            for kind, r in records:
                self._load(db, kind, r)

    def _load(self, db: sqlite3.Connection, kind: str, r: dict[str, Any]) -> None:
        if kind == "job":
            running = r["state"] == JobState.RUNNING
            db.execute(
                "INSERT INTO jobs (id, runbook, source, params, target, state, dry_run, lock, owner, created, updated,"
                " error, cancel_requested) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    r["id"],
                    r["runbook"],
                    r["source"],
                    json.dumps(r["params"]),
                    r["target"],
                    r["state"],
                    int(r["dry_run"]),
                    r.get("lock"),
                    "" if running else r.get("owner", ""),
                    r["created"],
                    r["updated"],
                    r.get("error", ""),
                    int(r.get("cancel_requested", False)),
                ),
            )
            if running and r.get("lock"):
                db.execute("INSERT INTO locks (name, job_id) VALUES (?, ?)", (r["lock"], r["id"]))
        elif kind == "step":
            db.execute(
                "INSERT INTO steps (job_id, step, state, outputs, error, updated) VALUES (?, ?, ?, ?, ?, ?)",
                (r["job_id"], r["step"], r["state"], json.dumps(r["outputs"]), r["error"], r["updated"]),
            )
        elif kind == "item":
            db.execute(
                "INSERT INTO items (job_id, step, key, state, outputs, error, attempts, updated)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    r["job_id"],
                    r["step"],
                    r["key"],
                    r["state"],
                    json.dumps(r["outputs"]),
                    r["error"],
                    r["attempts"],
                    r["updated"],
                ),
            )
        elif kind == "event":
            db.execute(
                "INSERT INTO events (job_id, ts, kind, step, item, message, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (r["job_id"], r["ts"], r["kind"], r["step"], r["item"], r["message"], json.dumps(r["data"])),
            )
        elif kind == "approval":
            db.execute(
                "INSERT INTO approvals (job_id, step, actor, ts) VALUES (?, ?, ?, ?)",
                (r["job_id"], r["step"], r["actor"], r["ts"]),
            )
        elif kind == "audit":
            db.execute(
                "INSERT INTO audit (ts, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                (r["ts"], r["actor"], r["action"], r["target"], json.dumps(r["detail"])),
            )
        elif kind == "host":
            db.execute(
                "INSERT OR REPLACE INTO host_states (host, state, reason, actor, since) VALUES (?, ?, ?, ?, ?)",
                (r["host"], r["state"], r["reason"], r["actor"], r["since"]),
            )
        elif kind == "brake":
            db.execute(
                "INSERT OR REPLACE INTO storm_brake (id, reason, since) VALUES (1, ?, ?)", (r["reason"], r["since"])
            )
        elif kind == "disarmed":
            db.execute(
                "INSERT OR REPLACE INTO ha_disarmed (id, reason, actor, since) VALUES (1, ?, ?, ?)",
                (r["reason"], r["actor"], r["since"]),
            )
        elif kind == "definitions":
            db.execute("DELETE FROM definitions WHERE host = ?", (r["host"],))
            db.executemany(
                "INSERT INTO definitions (host, guest, xml, ts) VALUES (?, ?, ?, ?)",
                [(r["host"], name, xml, r["ts"]) for name, xml in r["definitions"].items()],
            )
            db.execute(
                "INSERT OR REPLACE INTO snapshots (host, ts, guests) VALUES (?, ?, ?)",
                (r["host"], r["ts"], len(r["definitions"])),
            )
        elif kind == "learned":
            db.execute(
                "INSERT OR REPLACE INTO learned (key, value, ts, job_id) VALUES (?, ?, ?, ?)",
                (r["key"], r["value"], r["ts"], r.get("job_id")),
            )
        else:
            raise ConfigError(f"{self.path}: unknown record kind {kind!r} in the copy")


def _job(r: sqlite3.Row) -> JobRecord:
    return JobRecord(
        id=r["id"],
        runbook=r["runbook"],
        source=r["source"],
        params=json.loads(r["params"]),
        target=r["target"],
        state=JobState(r["state"]),
        dry_run=bool(r["dry_run"]),
        lock=r["lock"],
        owner=r["owner"],
        created=r["created"],
        updated=r["updated"],
        error=r["error"],
        cancel_requested=bool(r["cancel_requested"]),
    )
