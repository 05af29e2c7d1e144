"""Reads of the journal: synchronous, on the caller's thread, through the read connection."""

from __future__ import annotations

import dataclasses
import sqlite3

from batch.store.journal_entries import COLUMNS, Entry, State, entry_of


def all_entries(db: sqlite3.Connection) -> dict[str, Entry]:
    """Every entry, by device key, in inventory order."""
    cas: dict[str, str] = {}  # one CA serves thousands of devices: share one string
    entries = {}
    for values in db.execute(f"SELECT {COLUMNS} FROM entries ORDER BY row"):
        entry = entry_of(values)
        if entry.ca_pem is not None:
            shared = cas.setdefault(entry.ca_pem, entry.ca_pem)
            entry = dataclasses.replace(entry, ca_pem=shared)
        entries[entry.key] = entry
    return entries


def states(db: sqlite3.Connection) -> dict[str, State]:
    """Every device's state, by key, without the PEMs (~6 KiB each)."""
    return {key: State(state) for key, state in db.execute("SELECT key, state FROM entries")}


def one_entry(db: sqlite3.Connection, key: str) -> Entry | None:
    values = db.execute(f"SELECT {COLUMNS} FROM entries WHERE key = ?", (key,)).fetchone()
    return None if values is None else entry_of(values)


def ca_pems(db: sqlite3.Connection) -> list[str]:
    return [str(pem) for (pem,) in db.execute("SELECT pem FROM cas")]


def meta_value(db: sqlite3.Connection, name: str) -> str | None:
    found = db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return None if found is None else str(found[0])
