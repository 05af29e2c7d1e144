"""The durable record of a run: the journal, bundle files, rescue files, the claimed --out."""

from batch.store import rescue
from batch.store.bundles import UnsafePathError, bundle_dir, read_bundle_file, write_bundle
from batch.store.journal import (
    ALLOWED,
    Entry,
    Journal,
    JournalError,
    State,
    StateError,
    outcome_from_json,
    outcome_to_json,
)
from batch.store.outdir import OutDir, OutDirError

__all__ = [
    "ALLOWED",
    "Entry",
    "Journal",
    "JournalError",
    "OutDir",
    "OutDirError",
    "State",
    "StateError",
    "UnsafePathError",
    "bundle_dir",
    "outcome_from_json",
    "outcome_to_json",
    "read_bundle_file",
    "rescue",
    "write_bundle",
]
