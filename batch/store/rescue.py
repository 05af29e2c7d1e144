"""Rescue files: where an issued certificate waits when the journal cannot take it.

A renewal supersedes the old certificate, and EnOS may not give the new one back (List often
returns only its serial), so a certificate that arrived must never be dropped. When the journal
refuses it even after retries (disk full, read-only, permission lost), the renewer writes it to
a rescue file outside `--out` and stops the run (exit 4). The next run of the same `--out` takes
every rescue file into the journal before it plans anything, then deletes it; the device's bundle
is then written from the journal, and the device is not renewed again.

    <rescue dir>/fleet-renew-rescue-<sha256(resolved --out)[:16]>/   (0700)
        <sha256(device key)[:32]>.json                               (0600, fsynced)

The rescue dir is `--rescue-dir`, by default the system's temporary folder ($TMPDIR, else /tmp):
usually another filesystem than `--out`. A rescue file holds the certificate, its CA and the
report row, never a private key (a generated key is in the journal since before the request).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from batch.errors import UsageError
from batch.model import Outcome
from batch.storage import SECRET_MODE, atomic_output, clean_temporaries, make_dirs
from batch.store.journal import Journal, State, outcome_from_json, outcome_to_json

log = logging.getLogger(__name__)

FOLDER_PREFIX = "fleet-renew-rescue-"
PRIVATE_FOLDER = 0o700


@dataclass(frozen=True, slots=True, kw_only=True)
class Kept:
    """One issued certificate waiting for the journal."""

    key: str
    outcome: Outcome
    cert_pem: str
    ca_pem: str


def folder_for(rescue_dir: Path, out_dir: Path) -> Path:
    """The rescue folder of one output folder (so campaigns never take each other's)."""
    tag = hashlib.sha256(str(out_dir.resolve()).encode()).hexdigest()[:16]
    return rescue_dir / f"{FOLDER_PREFIX}{tag}"


class UnsafeRescueFolder(UsageError):
    """The rescue folder is not this user's private folder: nothing is read from or put in it."""


def _check_private(folder: Path) -> None:
    """Refuse a rescue folder another user could have made or can write into.

    Its name is predictable and it usually lies in /tmp: another local user could create it
    first (or as a link) and plant a file the next run would journal as a renewal.
    """
    info = os.lstat(folder)
    if (
        not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.geteuid()
        or info.st_mode & 0o077
    ):
        raise UnsafeRescueFolder(
            f"the rescue folder {folder} is not a private folder of this user (a link, another "
            "owner, or open to others): remove it after checking what it holds, or pass another "
            "--rescue-dir"
        )


def keep(folder: Path, kept: Kept) -> Path:
    """Write one rescue file durably and return its path (blocking; raises OSError)."""
    make_dirs(folder, PRIVATE_FOLDER)
    _check_private(folder)
    path = folder / f"{hashlib.sha256(kept.key.encode()).hexdigest()[:32]}.json"
    document = {
        "key": kept.key,
        "outcome": outcome_to_json(kept.outcome),
        "certPem": kept.cert_pem,
        "caPem": kept.ca_pem,
    }
    with atomic_output(path, mode=SECRET_MODE) as stream:
        stream.write(json.dumps(document).encode())
    return path


def pending(folder: Path) -> list[tuple[Path, Kept]]:
    """Every rescue file in `folder` (none when it does not exist), oldest name first."""
    if not os.path.lexists(folder):
        return []
    _check_private(folder)
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            document = json.loads(path.read_text())
            kept = Kept(
                key=str(document["key"]),
                outcome=outcome_from_json(str(document["outcome"])),
                cert_pem=str(document["certPem"]),
                ca_pem=str(document["caPem"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(
                f"the rescue file {path} is unreadable ({type(exc).__name__}): look at it, move "
                "it out of the way, and rerun"
            ) from exc
        found.append((path, kept))
    return found


async def recover(journal: Journal, folder: Path) -> int:
    """Take every rescue file of `folder` into the journal, then delete it; how many were new.

    A device the journal already holds as bundled kept a stale copy: it is only deleted.
    """
    taken = 0
    if os.path.lexists(folder):
        _check_private(folder)
        clean_temporaries(folder)  # a rescue file whose writing was killed: never complete
    for path, kept in pending(folder):
        entry = journal.get(kept.key)
        if entry is None or entry.state is not State.BUNDLED:
            await journal.record_renewed(
                kept.key, outcome=kept.outcome, cert_pem=kept.cert_pem, ca_pem=kept.ca_pem
            )
            taken += 1
        path.unlink()
    if taken:
        log.warning("took %d certificate(s) kept by an earlier run from %s", taken, folder)
    with contextlib.suppress(OSError):  # not empty (a file appeared meanwhile) or already gone
        os.rmdir(folder)
    return taken
