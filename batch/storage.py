"""The job's footing on disk: storage errors, file and folder modes, leftovers of killed runs.

- **Storage errors.** A full disk, a read-only or vanished mount, a permission taken away: the
  OSErrors whose errno is in `STORAGE_ERRNOS` become one `StorageError` (exit 4) here, with a
  message naming what was being written. Any other OSError is a bug and propagates.
- **Modes.** Every file and folder the job creates gets an explicit mode: folders 0755, files
  0644, secrets (journal, key.pem, bundle.p12, rescue files) 0600. The modes are passed to the
  system call that creates them, so a stricter umask narrows them further and a looser one
  (even 000) never widens them.
- **Leftovers.** Every atomic write goes through a temporary file beside its target; a run
  killed mid-write leaves it behind. `clean_temporaries` removes them at the next start, while
  that run holds the output folder's lock (so never a live run's file).
- **A campaign without its journal.** `campaign_outputs` names what in `--out` shows that a
  campaign ran there, for the refusal to start over when its journal is gone.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from batch.errors import StorageError

FOLDER_MODE = 0o755
FILE_MODE = 0o644
SECRET_MODE = 0o600

# Errnos that say "the storage refused", not "the job has a bug". Policy, not mechanism.
STORAGE_ERRNOS = frozenset(
    {
        errno.ENOSPC,  # disk full
        errno.EDQUOT,  # quota exhausted
        errno.EFBIG,  # file size limit
        errno.EROFS,  # read-only file system (also after a remount on I/O errors)
        errno.EACCES,  # permission taken away
        errno.EPERM,
        errno.EIO,  # the device failed
        errno.ENOENT,  # the output folder vanished under the run
        errno.ESTALE,  # NFS
    }
)

# What atomic writes leave when killed: `atomic_output`'s ".<name>.<12 hex>.tmp".
_TEMPORARY = re.compile(r"\A\..+\.[0-9a-f]{12}\.tmp\Z")


def is_storage_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


def storage_error(exc: OSError, what: str) -> StorageError:
    """The batch-level error for a refused write: what, why (strerror) and where."""
    reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
    where = f" ({exc.filename})" if exc.filename else ""
    return StorageError(f"{what}: {reason}{where}")


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn a storage OSError raised in the block into a StorageError about `what`."""
    try:
        yield
    except OSError as exc:
        if not is_storage_error(exc):
            raise
        raise storage_error(exc, what) from exc


def make_dirs(folder: Path, mode: int = FOLDER_MODE) -> None:
    """Create `folder` and its missing parents, each with `mode` (unlike Path.mkdir's parents)."""
    missing: list[Path] = []
    for path in (folder, *folder.parents):
        if path.is_dir():
            break
        missing.append(path)
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, mode)


def create_file(path: Path, mode: int = FILE_MODE) -> int:
    """Open `path` for writing, emptied, as a descriptor; never wider than `mode`.

    Never through a link planted at `path` (O_NOFOLLOW: ELOOP). A file left by an older
    version may have a wider mode: it is narrowed, never widened.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, mode)
    try:
        found = os.fstat(fd).st_mode & 0o777
        if found & ~mode:
            os.fchmod(fd, found & mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def clean_temporaries(out_dir: Path) -> list[str]:
    """Remove the temporary files of atomic writes a killed run left in `out_dir`; their names.

    Bundle folders need no sweep: a bundle interrupted mid-write has no matching cert.pem, so
    the next run rewrites it, and each write replaces its own leftover first.
    """
    removed = []
    with os.scandir(out_dir) as entries:
        for entry in entries:
            if _TEMPORARY.match(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                removed.append(entry.name)
    return sorted(removed)


def campaign_outputs(out_dir: Path) -> list[str]:
    """What in `out_dir` shows that a campaign ran there (a dry run's outputs do not count)."""
    found = []
    dry_run = _summary_says_dry_run(out_dir / "summary.json")
    if (out_dir / "summary.json").exists() and not dry_run:
        found.append("summary.json")
    for name in ("report.csv", "report.parquet"):
        path = out_dir / name
        if path.exists() and not dry_run and path.stat().st_size > 0:
            found.append(name)
    bundles = out_dir / "bundles"
    if bundles.is_dir() and any(bundles.iterdir()):
        found.append("bundles/")
    return found


def _summary_says_dry_run(path: Path) -> bool:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    extra = document.get("extra") if isinstance(document, dict) else None
    return isinstance(extra, dict) and extra.get("dryRun") is True


@contextmanager
def atomic_output(
    path: str | os.PathLike[str], *, mode: int = FILE_MODE, durable: bool = True
) -> Iterator[IO[bytes]]:
    """Yield a binary stream that becomes `path` only if the block completes.

    The temporary file lives next to `path` (same filesystem, so the rename is atomic) and is
    created with `mode` (O_EXCL), so a secret is never readable by others, not even briefly.
    `durable` fsyncs the file and its folder, so the new content also survives a power cut.
    """
    path = Path(path)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as stream:
            yield stream
            stream.flush()
            if durable:
                os.fsync(stream.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    if durable:
        fsync_dir(path.parent)


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make renames inside `folder` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
