"""Crash-safe record of every device's progress: SQLite in WAL mode, group-committed.

The renew call is not idempotent, so the journal is written *before* each step takes effect:

    (none) --record_intent--> INTENT --record_renewed--> RENEWED --record_bundled--> BUNDLED
                                 |  \\--record_failed---> FAILED --record_intent--> INTENT (retry)
                                 \\-- the answer was lost: reconcile with List Certificate

- `record_intent` stores the generated private key and CSR *before* the request leaves, and
  returns only once they are durable on disk. **The journal file is where a generated private
  key lives until its bundle is written** (and it stays there, so a lost bundle can be rewritten):
  the file is created 0600, and SQLite gives its -wal/-shm files the same mode. Treat the journal
  like `key.pem`. Nothing here logs key material; `Entry`'s repr hides it.
- `record_renewed` stores the issued certificate and CA before the bundle files are written;
  `record_bundled` marks the bundle written. Every CA is also kept once in the `cas` table
  (`ca_pems`): List Certificate does not return it, and a rerun needs it to recover a lost
  answer's certificate from List's PEM.
- A renewed device never goes back to INTENT or FAILED (`StateError`): that would renew it twice.

Group commit: every write goes through one writer thread that owns the connection. Callers await
an asyncio future; the thread takes everything queued, runs it in one transaction (a savepoint per
operation, so one bad operation fails alone), commits (one fsync with synchronous=FULL), then
resolves all those futures. At hundreds of requests a second the journal fsyncs a few dozen times
a second. `durable=False` uses synchronous=NORMAL: still safe against a killed process, not
against power loss (for benchmarks).

Only one process may use a journal at a time: `open` takes an exclusive lock on `<path>.lock`
and raises `JournalError` when another run holds it.

Failures are translated here, the one module that speaks to SQLite: a journal that is damaged
(`PRAGMA quick_check` at open, or SQLite's "not a database" / "malformed" later) is a
`JournalError` (exit 2) before anything else in the output folder is touched; a write the storage
refused (disk full, read-only, I/O error) is a `StorageError` (exit 4) for the caller to handle.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import fcntl
import functools
import json
import os
import queue
import sqlite3
import threading
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from batch import storage
from batch.errors import BatchError, StorageError
from batch.model import Outcome, identity_key

SCHEMA_VERSION = "1"
KEY_FORMAT = "typed"  # meta "keys": entries are keyed by `identity_key` (see _migrate_keys)


class JournalError(BatchError):
    """The journal cannot be used: locked by another run, or written by another version."""

    exit_code = 2


# SQLite primary result codes by what they mean for the run. Policy, not mechanism.
_DAMAGED_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
_STORAGE_CODES = frozenset(
    {
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PERM,
    }
)


class StateError(RuntimeError):
    """A transition the journal refuses because it could renew a device twice (a bug)."""


class State(enum.StrEnum):
    INTENT = "intent"  # the request may have left; the key and CSR are on disk
    RENEWED = "renewed"  # EnOS issued a certificate; it is in the journal
    BUNDLED = "bundled"  # ...and its bundle files are written
    FAILED = "failed"  # a final failure (retried only with --retry-failed)


# Which states each record_* accepts the entry in (None: no entry yet). Policy, not mechanism.
ALLOWED: Mapping[str, frozenset[State | None]] = {
    "intent": frozenset({None, State.INTENT, State.FAILED}),
    "renewed": frozenset({None, State.INTENT, State.RENEWED, State.FAILED}),
    "failed": frozenset({None, State.INTENT, State.FAILED}),
    "bundled": frozenset({State.RENEWED, State.BUNDLED, State.FAILED}),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One device's progress as recorded; `cert_sn` is the certSn of its first intent."""

    key: str
    row: int
    state: State
    attempts: int
    cert_sn: int
    key_pem: bytes | None = dataclasses.field(default=None, repr=False)
    csr_pem: str | None = dataclasses.field(default=None, repr=False)
    key_type: str | None = None
    intent_at: datetime | None = None  # first intent of this device
    cert_pem: str | None = dataclasses.field(default=None, repr=False)
    ca_pem: str | None = dataclasses.field(default=None, repr=False)
    new_cert_sn: str | None = None
    outcome: Outcome | None = None  # the final Outcome (renewed or failed)
    bundle_path: str | None = None


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
_COLUMNS = (
    "key, row, state, attempts, cert_sn, key_pem, csr_pem, key_type, intent_at,"
    " cert_pem, ca_pem, new_cert_sn, outcome, bundle_path"
)

Operation = Callable[[sqlite3.Connection], Any]


@dataclass(frozen=True, slots=True)
class _Job:
    operation: Operation
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


_Resolution = tuple[asyncio.Future[Any], Any, BaseException | None]  # future, value, error


class Journal:
    """The journal of one output folder; open with `await Journal.open(path)`."""

    def __init__(
        self, path: Path, writer: sqlite3.Connection, reader: sqlite3.Connection, lock: int
    ) -> None:
        self.path = path
        self.commits = 0  # transactions committed by the writer thread (for group-commit tests)
        self.durable = True
        self._writer = writer
        self._reader = reader
        self._lock = lock
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        self._thread.start()

    @classmethod
    async def open(cls, path: Path, *, durable: bool = True) -> Journal:
        """Open (creating 0600 if needed) and lock the journal; start its writer thread.

        An existing journal is checked first (`PRAGMA quick_check`): a damaged one raises
        `JournalError` without being changed.
        """
        with storage.translated(f"cannot open the journal {path}"):
            return await asyncio.to_thread(cls._open, Path(path), durable)

    @classmethod
    def _open(cls, path: Path, durable: bool) -> Journal:
        lock = _take_lock(path)
        with _sqlite_errors(path), contextlib.ExitStack() as on_error:
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
            _migrate_keys(writer, path)
            reader = _connect(path)
            on_error.pop_all()
        journal = cls(path, writer, reader, lock)
        journal.durable = durable
        return journal

    async def close(self) -> None:
        """Finish every queued write, stop the writer thread, release the lock."""
        if self._closed:
            return
        self._closed = True
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)
        self._reader.close()
        self._writer.close()
        os.close(self._lock)

    async def __aenter__(self) -> Journal:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- reads (synchronous, on the caller's thread, through the read connection) ----------

    def load(self) -> dict[str, Entry]:
        """Every entry, by device key (called at start-up)."""
        cas: dict[str, str] = {}  # one CA serves thousands of devices: share one string
        entries = {}
        for values in self._reader.execute(f"SELECT {_COLUMNS} FROM entries ORDER BY row"):
            entry = _entry(values)
            if entry.ca_pem is not None:
                shared = cas.setdefault(entry.ca_pem, entry.ca_pem)
                entry = dataclasses.replace(entry, ca_pem=shared)
            entries[entry.key] = entry
        return entries

    def index(self) -> dict[str, State]:
        """Every device's state, by key: what planning needs, without the PEMs (~6 KiB each)."""
        with _sqlite_errors(self.path):
            return {
                key: State(state)
                for key, state in self._reader.execute("SELECT key, state FROM entries")
            }

    def get(self, key: str) -> Entry | None:
        """One device's entry, or None."""
        with _sqlite_errors(self.path):
            values = self._reader.execute(
                f"SELECT {_COLUMNS} FROM entries WHERE key = ?", (key,)
            ).fetchone()
        return None if values is None else _entry(values)

    def ca_pems(self) -> list[str]:
        """Every issuing CA certificate (PEM) recorded with an outcome, in any run."""
        return [str(pem) for (pem,) in self._reader.execute("SELECT pem FROM cas")]

    def get_meta(self, name: str) -> str | None:
        values = self._reader.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if values is None else str(values[0])

    # -- writes (each returns once committed) --------------------------------------------

    async def set_meta(self, name: str, value: str) -> None:
        def operation(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO meta (name, value) VALUES (?, ?)"
                " ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (name, value),
            )

        await self._submit(operation)

    async def record_intent(
        self,
        key: str,
        *,
        row: int,
        cert_sn: int,
        key_pem: bytes | None,
        csr_pem: str | None,
        key_type: str | None,
        at: datetime,
    ) -> None:
        """Record that a renew request is about to leave; returns once durable on disk.

        Counts an attempt. The first intent's time, key, CSR and certSn are kept: a retry
        re-sends the same CSR, so the key we hold stays the one EnOS may have certified.
        """

        def operation(db: sqlite3.Connection) -> None:
            _require(db, key, "intent")
            db.execute(
                "INSERT INTO entries (key, row, state, attempts, cert_sn, key_pem, csr_pem,"
                " key_type, intent_at) VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?)"
                " ON CONFLICT(key) DO UPDATE SET row = excluded.row, state = excluded.state,"
                " attempts = attempts + 1, outcome = NULL,"
                " key_pem = coalesce(entries.key_pem, excluded.key_pem),"
                " csr_pem = coalesce(entries.csr_pem, excluded.csr_pem),"
                " key_type = coalesce(entries.key_type, excluded.key_type),"
                " intent_at = coalesce(entries.intent_at, excluded.intent_at)",
                (key, row, State.INTENT, str(cert_sn), key_pem, csr_pem, key_type, at.isoformat()),
            )

        await self._submit(operation)

    async def record_renewed(
        self, key: str, *, outcome: Outcome, cert_pem: str, ca_pem: str
    ) -> None:
        """Record the issued certificate (before any bundle file is written)."""
        await self._submit(_outcome_operation(key, State.RENEWED, outcome, cert_pem, ca_pem))

    async def record_failed(
        self,
        key: str,
        *,
        outcome: Outcome,
        cert_pem: str | None = None,
        ca_pem: str | None = None,
    ) -> None:
        """Record a final failure; a certificate that failed verification can be kept with it."""
        await self._submit(_outcome_operation(key, State.FAILED, outcome, cert_pem, ca_pem))

    async def record_bundled(self, key: str, *, bundle_path: str) -> None:
        """Record that the bundle is written (a failed entry keeps its FAILED state)."""

        def operation(db: sqlite3.Connection) -> None:
            _require(db, key, "bundled")
            db.execute(
                "UPDATE entries SET bundle_path = ?,"
                " state = CASE state WHEN ? THEN state ELSE ? END WHERE key = ?",
                (bundle_path, State.FAILED, State.BUNDLED, key),
            )

        await self._submit(operation)

    # -- the writer thread ---------------------------------------------------------------

    async def _submit(self, operation: Operation) -> Any:
        if self._closed:
            raise RuntimeError("the journal is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._jobs.put(_Job(operation, future, loop))
        return await future

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch: list[_Job] = []
            job = self._jobs.get()
            while job is not None:
                batch.append(job)
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
            stopping = job is None
            if batch:
                self._commit(batch)

    def _commit(self, batch: list[_Job]) -> None:
        """Run a batch in one transaction; resolve every future only after the commit.

        Operations rarely fail, so the batch first runs without a savepoint per operation (two
        statements less each, ~12 % of the journal's CPU); if one raises, that transaction is
        rolled back and the batch runs again with a savepoint each, so it fails alone.
        """
        results = self._transaction(batch, guarded=False)
        if results is None:
            results = self._transaction(batch, guarded=True)
        assert results is not None
        self._resolve(batch, results)

    def _transaction(
        self, batch: list[_Job], *, guarded: bool
    ) -> list[tuple[Any, BaseException | None]] | None:
        """The batch's results, committed; None when an unguarded operation raised (rolled
        back: nothing of the batch was written)."""
        results: list[tuple[Any, BaseException | None]] = []
        db = self._writer
        try:
            db.execute("BEGIN IMMEDIATE")
            for job in batch:
                if guarded:
                    results.append(_run_in_savepoint(db, job.operation, self.path))
                    continue
                try:
                    results.append((job.operation(db), None))
                except Exception:
                    with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back
                        db.execute("ROLLBACK")
                    return None
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            return [(None, _translated(exc, self.path))] * len(batch)
        self.commits += 1
        return results

    def _resolve(self, batch: list[_Job], results: list[tuple[Any, BaseException | None]]) -> None:
        # One wake-up per event loop for the whole batch, not one per operation: each
        # call_soon_threadsafe writes to the loop's self-pipe and contends for the GIL.
        by_loop: dict[asyncio.AbstractEventLoop, list[_Resolution]] = {}
        for job, (value, error) in zip(batch, results, strict=True):
            by_loop.setdefault(job.loop, []).append((job.future, value, error))
        for loop, resolutions in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that caller's event loop is gone
                loop.call_soon_threadsafe(_resolve_all, resolutions)


def _run_in_savepoint(
    db: sqlite3.Connection, operation: Operation, path: Path
) -> tuple[Any, Exception | None]:
    """Run one operation so that its failure undoes only its own writes."""
    db.execute("SAVEPOINT op")
    try:
        value = operation(db)
    except Exception as exc:  # handed to the caller's future, which re-raises it
        # If SQLite already rolled the whole transaction back (disk full, I/O error), the
        # savepoint is gone ("no such savepoint", a plain SQLITE_ERROR): the whole batch fails
        # with the operation's own error, which says what happened (e.g. a full disk).
        try:
            db.execute("ROLLBACK TO op")
            db.execute("RELEASE op")
        except sqlite3.Error:
            raise exc from None
        return None, _translated(exc, path) if isinstance(exc, sqlite3.Error) else exc
    db.execute("RELEASE op")
    return value, None


def _resolve_all(resolutions: list[_Resolution]) -> None:
    for future, value, error in resolutions:
        if future.cancelled():
            continue  # the caller stopped waiting; the write happened (or failed) regardless
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


def _outcome_operation(
    key: str, state: State, outcome: Outcome, cert_pem: str | None, ca_pem: str | None
) -> Operation:
    """Record an outcome; creates the entry (from the outcome) when no intent came first."""
    action = "renewed" if state is State.RENEWED else "failed"
    cert_sn = _cert_sn_of(outcome)
    document = outcome_to_json(outcome)

    def operation(db: sqlite3.Connection) -> None:
        _require(db, key, action)
        db.execute(
            "INSERT INTO entries (key, row, state, cert_sn, cert_pem, ca_pem, new_cert_sn,"
            " outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(key) DO UPDATE SET state = excluded.state,"
            " cert_pem = coalesce(excluded.cert_pem, entries.cert_pem),"
            " ca_pem = coalesce(excluded.ca_pem, entries.ca_pem),"
            " new_cert_sn = coalesce(excluded.new_cert_sn, entries.new_cert_sn),"
            " outcome = excluded.outcome",
            (key, outcome.row, state, cert_sn, cert_pem, ca_pem, outcome.new_cert_sn, document),
        )
        if ca_pem is not None:
            db.execute("INSERT OR IGNORE INTO cas (pem) VALUES (?)", (ca_pem,))

    return operation


def _cert_sn_of(outcome: Outcome) -> str:
    try:
        return str(int(str(outcome.old_cert_sn)))
    except ValueError:
        raise ValueError(f"outcome of row {outcome.row} has no integer old_cert_sn") from None


def _require(db: sqlite3.Connection, key: str, action: str) -> None:
    found = db.execute("SELECT state FROM entries WHERE key = ?", (key,)).fetchone()
    state = None if found is None else State(found[0])
    if state not in ALLOWED[action]:
        what = "no entry" if state is None else f"state {state.value}"
        raise StateError(f"journal refuses {action} for {key!r} in {what}")


def _entry(values: tuple[Any, ...]) -> Entry:
    (key, row, state, attempts, cert_sn, key_pem, csr_pem, key_type, intent_at,
     cert_pem, ca_pem, new_cert_sn, outcome, bundle_path) = values  # fmt: skip
    return Entry(
        key=key,
        row=row,
        state=State(state),
        attempts=attempts,
        cert_sn=int(cert_sn),
        key_pem=None if key_pem is None else bytes(key_pem),
        csr_pem=csr_pem,
        key_type=key_type,
        intent_at=None if intent_at is None else datetime.fromisoformat(intent_at),
        cert_pem=cert_pem,
        ca_pem=ca_pem,
        new_cert_sn=new_cert_sn,
        outcome=_with_bundle_path(outcome, bundle_path),
        bundle_path=bundle_path,
    )


def _with_bundle_path(document: str | None, bundle_path: str | None) -> Outcome | None:
    """The journaled outcome, with the bundle path recorded after it.

    The outcome is journaled *before* its bundle is written, so its JSON has no bundle path;
    `record_bundled` stores the path in its own column. A resumed device's report row is this
    outcome, and without the path it would not say where the device's bundle is.
    """
    if document is None:
        return None
    outcome = outcome_from_json(document)
    if bundle_path is None or outcome.bundle_path == bundle_path:
        return outcome
    return dataclasses.replace(outcome, bundle_path=bundle_path)


# -- Outcome <-> JSON, exact for every field type Outcome uses --------------------------------


def outcome_to_json(outcome: Outcome) -> str:
    """JSON of an Outcome: enums as their values, datetimes as ISO 8601 (offset kept)."""
    document = {name: _plain(getattr(outcome, name)) for name in _OUTCOME_FIELDS}
    return json.dumps(document, sort_keys=True)


_OUTCOME_FIELDS = tuple(f.name for f in dataclasses.fields(Outcome))


def outcome_from_json(text: str) -> Outcome:
    """The Outcome that `outcome_to_json` wrote; fields it lacks take their defaults."""
    document = json.loads(text)
    hints = _outcome_hints()
    values: dict[str, Any] = {
        f.name: _typed(document[f.name], hints[f.name])
        for f in dataclasses.fields(Outcome)
        if f.name in document
    }
    return Outcome(**values)


@functools.cache
def _outcome_hints() -> dict[str, Any]:
    return typing.get_type_hints(Outcome)


def _plain(value: object) -> object:
    if value is None or type(value) in (str, int):  # most fields: nothing to convert
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _typed(value: object, hint: object) -> object:
    """Turn a JSON value back into the field's type (Enum, datetime, or as is)."""
    if value is None:
        return None
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for option in options:
        if isinstance(option, type) and issubclass(option, enum.Enum):
            return option(value)
        if option is datetime and isinstance(value, str):
            return datetime.fromisoformat(value)
    return value


# -- files ----------------------------------------------------------------------------------


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


def _migrate_keys(db: sqlite3.Connection, path: Path) -> None:
    """Rewrite the `org/identity` keys of earlier versions as `identity_key`s, once.

    The new key comes from the entry's journaled outcome (it names the device's org and ids),
    else from an old key with one "/" (org/assetId: nothing else reads that way). An unfinished
    entry with a longer old key (org/productKey/deviceKey, or ids holding "/") cannot be told
    apart: the journal is refused rather than a device risked being renewed twice.
    """
    if _meta(db, "keys") == KEY_FORMAT:
        return
    renames: list[tuple[str, str]] = []
    # Without the "keys" mark every entry has an old key: a journal of this version is marked
    # when first opened, before any entry is written.
    for key, document in db.execute("SELECT key, outcome FROM entries").fetchall():
        new = _typed_key(str(key), document)
        if new is None:
            raise JournalError(
                f"journal {path} is from an earlier version and device {key!r} is unfinished "
                "there, under a key that names it ambiguously: finish that run with the "
                "earlier version, or start in a new --out folder"
            )
        renames.append((new, str(key)))
    db.execute("BEGIN IMMEDIATE")
    db.executemany("UPDATE entries SET key = ? WHERE key = ?", renames)
    db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('keys', ?)", (KEY_FORMAT,))
    db.execute("COMMIT")


def _typed_key(old: str, document: str | None) -> str | None:
    if document is not None:
        outcome = outcome_from_json(document)
        org_id, asset, pk, dk = (
            outcome.org_id,
            outcome.asset_id,
            outcome.product_key,
            outcome.device_key,
        )
        if org_id and (asset or dk):
            return identity_key(org_id, asset, pk, dk)
    org, _, identity = old.partition("/")
    if identity and "/" not in identity:
        return identity_key(org, identity, None, None)
    return None


def _meta(db: sqlite3.Connection, name: str) -> str | None:
    found = db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return None if found is None else str(found[0])


def _check_integrity(db: sqlite3.Connection, path: Path) -> None:
    """Refuse a damaged journal before anything is written.

    Measured: 0.2 s for a 100,000-device journal (413 MB) in the page cache; from a cold disk
    add the time to read the file once.
    """
    problems = [str(row[0]) for row in db.execute("PRAGMA quick_check(5)")]
    if problems != ["ok"]:
        raise _damaged(path, "; ".join(problems))


def _damaged(path: Path, detail: str) -> JournalError:
    return JournalError(
        f"the journal {path} is damaged ({detail}); nothing was sent and no output was changed. "
        "Restore journal.sqlite from a backup and rerun, or start a new campaign in a new --out "
        "(a run here without its journal would renew every device again)"
    )


def _translated(exc: sqlite3.Error, path: Path) -> Exception:
    """SQLite's error as the run must see it: damaged journal, refused storage, or as is."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in _DAMAGED_CODES:
        return _damaged(path, str(exc))
    if primary in _STORAGE_CODES:
        return StorageError(f"cannot write the journal {path}: {exc}")
    return exc


@contextlib.contextmanager
def _sqlite_errors(path: Path) -> typing.Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        translated = _translated(exc, path)
        if translated is exc:
            raise
        raise translated from exc


def _check_schema(db: sqlite3.Connection) -> None:
    db.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
    found = db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()[0]
    if found != SCHEMA_VERSION:
        raise JournalError(f"journal schema {found} is not {SCHEMA_VERSION}: another version?")
