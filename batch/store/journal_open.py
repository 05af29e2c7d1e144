"""Open a journal's files: the lock, the 0600 database, the checks before anything is written.

Only one process may use a journal at a time: `open_files` takes an exclusive lock on
`<path>.lock` and raises `JournalError` when another run holds it. An existing journal is
checked (`PRAGMA quick_check`, the schema version) and re-keyed if an earlier version wrote it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from batch.store.journal_errors import JournalError, damaged, sqlite_errors
from batch.store.journal_rekey import migrate_keys

SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    row INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    cert_sn TEXT NOT NULL,        -- text: an X.509 serial can exceed SQLite's 64-bit integer
    key_pem BLOB, csr_pem TEXT, key_type TEXT, intent_at TEXT,
    cert_pem TEXT, ca_pem TEXT, new_cert_sn TEXT,
    outcome TEXT,                 -- JSON, see outcome_to_json
    bundle_path TEXT
);
-- Every issuing CA seen: List Certificate does not return the CA, so a rerun that reconciles
-- a lost answer recovers the certificate from List's PEM only if it knows the issuer.
CREATE TABLE IF NOT EXISTS cas (pem TEXT PRIMARY KEY) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class Files:
    """An open journal: the writer's and the readers' connections and the held lock."""

    writer: sqlite3.Connection
    reader: sqlite3.Connection
    lock: int  # file descriptor of `<path>.lock`

    def close(self) -> None:
        self.reader.close()
        self.writer.close()
        os.close(self.lock)


def open_files(path: Path, durable: bool) -> Files:
    """Lock, create (0600) or check, and connect; `durable` chooses synchronous=FULL."""
    lock = _take_lock(path)
    with sqlite_errors(path), contextlib.ExitStack() as on_error:
        on_error.callback(os.close, lock)
        existing = path.exists() and path.stat().st_size > 0
        _create_private(path)
        writer = _connect(path)
        on_error.callback(writer.close)
        if existing:
            _check_integrity(writer, path)
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        writer.executescript(_SCHEMA)
        _check_schema(writer)
        migrate_keys(writer, path)
        reader = _connect(path)
        on_error.pop_all()
    return Files(writer, reader, lock)


def _take_lock(path: Path) -> int:
    lock = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        raise JournalError(f"journal {path} is in use by another run") from None
    return lock


def _create_private(path: Path) -> None:
    """Create the database file 0600 (before SQLite does, with the umask's mode)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file too: it holds private keys
    finally:
        os.close(fd)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the new file's name survives a crash too
    finally:
        os.close(directory)


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves (one transaction per batch).
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA busy_timeout=5000")
    return db


def _check_integrity(db: sqlite3.Connection, path: Path) -> None:
    """Refuse a damaged journal before anything is written.

    Measured: 0.2 s for a 100,000-device journal (413 MB) in the page cache; from a cold disk
    add the time to read the file once.
    """
    problems = [str(row[0]) for row in db.execute("PRAGMA quick_check(5)")]
    if problems != ["ok"]:
        raise damaged(path, "; ".join(problems))


def _check_schema(db: sqlite3.Connection) -> None:
    db.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
    found = db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()[0]
    if found != SCHEMA_VERSION:
        raise JournalError(f"journal schema {found} is not {SCHEMA_VERSION}: another version?")
