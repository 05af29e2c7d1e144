"""SQLite's failures as the run must see them: the one place that translates them.

A journal that is damaged (`PRAGMA quick_check` at open, or SQLite's "not a database" /
"malformed" later) is a `JournalError` (exit 2) before anything else in the output folder is
touched; a write the storage refused (disk full, read-only, I/O error) is a `StorageError`
(exit 4) for the caller to handle; any other SQLite error stays as it is (a bug).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from batch.errors import BatchError, StorageError


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


def damaged(path: Path, detail: str) -> JournalError:
    return JournalError(
        f"the journal {path} is damaged ({detail}); nothing was sent and no output was changed. "
        "Restore journal.sqlite from a backup and rerun, or start a new campaign in a new --out "
        "(a run here without its journal would renew every device again)"
    )


def translated(exc: sqlite3.Error, path: Path) -> Exception:
    """SQLite's error as the run must see it: damaged journal, refused storage, or as is."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in _DAMAGED_CODES:
        return damaged(path, str(exc))
    if primary in _STORAGE_CODES:
        return StorageError(f"cannot write the journal {path}: {exc}")
    return exc


@contextlib.contextmanager
def sqlite_errors(path: Path) -> Iterator[None]:
    """Raise SQLite errors met inside the block as `translated` says."""
    try:
        yield
    except sqlite3.Error as exc:
        error = translated(exc, path)
        if error is exc:
            raise
        raise error from exc
