"""Re-key the entries of journals written before `identity_key`, once, when opened."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from batch.model import identity_key
from batch.store.journal_entries import outcome_from_json
from batch.store.journal_errors import JournalError
from batch.store.journal_queries import meta_value

KEY_FORMAT = "typed"  # meta "keys": entries are keyed by `identity_key`


def migrate_keys(db: sqlite3.Connection, path: Path) -> None:
    """Rewrite the `org/identity` keys of earlier versions as `identity_key`s, once.

    The new key comes from the entry's journaled outcome (it names the device's org and ids),
    else from an old key with one "/" (org/assetId: nothing else reads that way). An unfinished
    entry with a longer old key (org/productKey/deviceKey, or ids holding "/") cannot be told
    apart: the journal is refused rather than a device risked being renewed twice.
    """
    if meta_value(db, "keys") == KEY_FORMAT:
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
