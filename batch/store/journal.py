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
an asyncio future; the thread takes everything queued, runs it in one transaction (if one
operation fails, the batch runs again with a savepoint per operation, so it fails alone:
journal_commit), commits (one fsync with synchronous=FULL), then resolves all those futures. At
hundreds of requests a second the journal fsyncs a few dozen times a second. `durable=False`
uses synchronous=NORMAL: still safe against a killed process, not against power loss (for
benchmarks).

Only one process may use a journal at a time: `open` takes an exclusive lock on `<path>.lock`
and raises `JournalError` when another run holds it.

Failures are translated in one place (batch.store.journal_errors), for every module that speaks
to SQLite: a journal that is damaged (`PRAGMA quick_check` at open, or SQLite's "not a database"
/ "malformed" later) is a `JournalError` (exit 2) before anything else in the output folder is
touched; a write the storage refused (disk full, read-only, I/O error) is a `StorageError`
(exit 4) for the caller to handle.

The parts: journal_open (lock, files, checks at open), journal_rekey (keys of earlier versions),
journal_commit (the writer thread), journal_entries (states, entries, write operations),
journal_queries (reads), journal_errors (SQLite's errors as ours). `Journal` puts them together.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

from batch import storage
from batch.model import Outcome
from batch.store import journal_queries as queries
from batch.store.journal_commit import GroupCommit, Operation
from batch.store.journal_entries import (
    ALLOWED,
    Entry,
    State,
    StateError,
    bundled_operation,
    intent_operation,
    meta_operation,
    outcome_from_json,
    outcome_operation,
    outcome_to_json,
)
from batch.store.journal_errors import JournalError, sqlite_errors
from batch.store.journal_open import SCHEMA_VERSION, Files, open_files
from batch.store.journal_rekey import KEY_FORMAT

__all__ = [
    "ALLOWED",
    "KEY_FORMAT",
    "SCHEMA_VERSION",
    "Entry",
    "Journal",
    "JournalError",
    "State",
    "StateError",
    "outcome_from_json",
    "outcome_to_json",
]


class Journal:
    """The journal of one output folder; open with `await Journal.open(path)`."""

    def __init__(self, path: Path, files: Files, *, durable: bool = True) -> None:
        self.path = path
        self.durable = durable
        self._files = files
        self._reader = files.reader
        self._writes = GroupCommit(files.writer, path)
        self._closed = False

    @property
    def commits(self) -> int:
        """Transactions committed by the writer thread (for group-commit tests)."""
        return self._writes.commits

    @classmethod
    async def open(cls, path: Path, *, durable: bool = True) -> Journal:
        """Open (creating 0600 if needed) and lock the journal; start its writer thread.

        An existing journal is checked first (`PRAGMA quick_check`): a damaged one raises
        `JournalError` without being changed.
        """
        path = Path(path)
        with storage.translated(f"cannot open the journal {path}"):
            files = await asyncio.to_thread(open_files, path, durable)
        return cls(path, files, durable=durable)

    async def close(self) -> None:
        """Finish every queued write, stop the writer thread, release the lock."""
        if self._closed:
            return
        self._closed = True
        await self._writes.stop()
        self._files.close()

    async def __aenter__(self) -> Journal:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- reads (synchronous, on the caller's thread, through the read connection) ----------

    def load(self) -> dict[str, Entry]:
        """Every entry, by device key (for inspection and tests: a run reads `index` and `get`)."""
        with sqlite_errors(self.path):
            return queries.all_entries(self._reader)

    def index(self) -> dict[str, State]:
        """Every device's state, by key: what planning needs, without the PEMs (~6 KiB each)."""
        with sqlite_errors(self.path):
            return queries.states(self._reader)

    def get(self, key: str) -> Entry | None:
        """One device's entry, or None."""
        with sqlite_errors(self.path):
            return queries.one_entry(self._reader, key)

    def ca_pems(self) -> list[str]:
        """Every issuing CA certificate (PEM) recorded with an outcome, in any run."""
        with sqlite_errors(self.path):
            return queries.ca_pems(self._reader)

    def get_meta(self, name: str) -> str | None:
        with sqlite_errors(self.path):
            return queries.meta_value(self._reader, name)

    # -- writes (each returns once committed) --------------------------------------------

    async def set_meta(self, name: str, value: str) -> None:
        await self._submit(meta_operation(name, value))

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
        await self._submit(
            intent_operation(
                key,
                row=row,
                cert_sn=cert_sn,
                key_pem=key_pem,
                csr_pem=csr_pem,
                key_type=key_type,
                at=at,
            )
        )

    async def record_renewed(
        self, key: str, *, outcome: Outcome, cert_pem: str, ca_pem: str
    ) -> None:
        """Record the issued certificate (before any bundle file is written)."""
        await self._submit(outcome_operation(key, State.RENEWED, outcome, cert_pem, ca_pem))

    async def record_failed(
        self,
        key: str,
        *,
        outcome: Outcome,
        cert_pem: str | None = None,
        ca_pem: str | None = None,
    ) -> None:
        """Record a final failure; a certificate that failed verification can be kept with it."""
        await self._submit(outcome_operation(key, State.FAILED, outcome, cert_pem, ca_pem))

    async def record_bundled(self, key: str, *, bundle_path: str) -> None:
        """Record that the bundle is written (a failed entry keeps its FAILED state)."""
        await self._submit(bundled_operation(key, bundle_path))

    async def _submit(self, operation: Operation) -> None:
        if self._closed:
            raise RuntimeError("the journal is closed")
        await self._writes.submit(operation)
