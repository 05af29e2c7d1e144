"""What the journal records per device, and the write operations that move it between states.

    (none) --intent--> INTENT --renewed--> RENEWED --bundled--> BUNDLED
                          |  \\--failed---> FAILED --intent--> INTENT (retry)
                          \\-- the answer was lost: reconcile with List Certificate

Each `*_operation` returns an `Operation` for the writer thread (batch.store.journal_commit);
it checks the transition first (`ALLOWED`): a renewed device never goes back to INTENT or
FAILED (`StateError`), since that would renew it twice.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from batch.model import Outcome
from batch.store.journal_commit import Operation


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


COLUMNS = (
    "key, row, state, attempts, cert_sn, key_pem, csr_pem, key_type, intent_at,"
    " cert_pem, ca_pem, new_cert_sn, outcome, bundle_path"
)


def entry_of(values: tuple[Any, ...]) -> Entry:
    """The Entry of one `SELECT {COLUMNS}` row."""
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


def outcome_to_json(outcome: Outcome) -> str:
    """The `outcome` column: `Outcome.to_json` as text, times exact (offset kept)."""
    return json.dumps(outcome.to_json(), sort_keys=True)


def outcome_from_json(text: str) -> Outcome:
    """The Outcome that `outcome_to_json` wrote; fields it lacks take their defaults."""
    return Outcome.from_json(json.loads(text))


# -- write operations (run by the writer thread, inside its transaction) ------------------------


def meta_operation(name: str, value: str) -> Operation:
    def operation(db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT INTO meta (name, value) VALUES (?, ?)"
            " ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    return operation


def intent_operation(
    key: str,
    *,
    row: int,
    cert_sn: int,
    key_pem: bytes | None,
    csr_pem: str | None,
    key_type: str | None,
    at: datetime,
) -> Operation:
    """Count an attempt; the first intent's time, key, CSR and certSn are kept."""

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

    return operation


def outcome_operation(
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


def bundled_operation(key: str, bundle_path: str) -> Operation:
    """Record the bundle's path; a failed entry keeps its FAILED state."""

    def operation(db: sqlite3.Connection) -> None:
        _require(db, key, "bundled")
        db.execute(
            "UPDATE entries SET bundle_path = ?,"
            " state = CASE state WHEN ? THEN state ELSE ? END WHERE key = ?",
            (bundle_path, State.FAILED, State.BUNDLED, key),
        )

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
