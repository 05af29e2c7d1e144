"""Claim an output folder (`--out`) for one command: a folder, locked, with no links in it.

Every command that writes into an `--out` (`run`, `run --dry-run`, `merge`) claims it first and
holds the claim until it ends:

- `--out` must be a folder; it is created if missing. An existing file there is a usage error.
- An exclusive `flock` on the folder's own descriptor. The lock is on the directory itself, not
  on a lock file inside it: deleting or replacing any file in the folder cannot release it, and
  the kernel drops it when the holder dies, even by SIGKILL. A second command on a claimed
  folder is refused (exit 2) before it writes anything.
- Nothing directly inside the folder may be a symbolic link: the job never writes through one
  (report.csv opened through a link would overwrite the link's target). Links further down,
  under bundles/, are refused device by device when a bundle is written (`batch.store.bundles`).

`--out` itself may be a link: the operator named it, so it is where they want the outputs.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Self

from batch import storage
from batch.errors import UsageError


class OutDirError(UsageError):
    """The output folder cannot be used: not a folder, claimed by a live command, or links."""


class OutDir:
    """A claimed output folder; `with OutDir.claim(path):` holds the claim for the block."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd  # an O_DIRECTORY descriptor, flocked; files below are opened relative to it

    @classmethod
    def claim(cls, path: Path) -> OutDir:
        """Create (if needed), lock and check `path`; raise OutDirError if it cannot be used."""
        path = Path(path)
        _make(path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (NotADirectoryError, FileNotFoundError):  # a file, or a dangling link
            raise OutDirError(f"--out {path} is not a folder") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutDirError(
                f"--out {path} is in use by another fleet-renew command (run, dry run or merge) "
                "that is still running; wait for it to end, or choose another --out"
            ) from None
        except OSError as exc:  # a filesystem that cannot lock a folder (some network ones)
            os.close(fd)
            raise OutDirError(
                f"--out {path} cannot be locked ({exc.strerror or exc}): put it on a local "
                "filesystem (the journal's SQLite WAL needs one too)"
            ) from None
        claimed = cls(path, fd)
        try:
            claimed._refuse_links()
        except BaseException:
            claimed.close()
            raise
        return claimed

    def close(self) -> None:
        """Release the claim (closing the descriptor drops the lock)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _refuse_links(self) -> None:
        with os.scandir(self.fd) as entries:
            links = sorted(entry.name for entry in entries if entry.is_symlink())
        if links:
            raise OutDirError(
                f"--out {self.path} holds symbolic links ({', '.join(links[:5])}): the job never "
                "writes through a link; remove them or choose another --out"
            )


def _make(path: Path) -> None:
    """Create `path` (explicit modes); a refused write is a storage error (exit 4)."""
    try:
        with storage.translated(f"cannot create --out {path}"):
            storage.make_dirs(path)
    except NotADirectoryError:
        raise OutDirError(f"--out {path}: a part of the path is a file, not a folder") from None
