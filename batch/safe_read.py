"""Read a file that someone else controls: regular files only, never blocking, size-capped.

A path from an inventory (`csrPath`) or a file found under `--out` may be anything: a FIFO
(a plain `open` waits for a writer forever, and SIGTERM cannot stop a thread stuck there), a
device such as /dev/zero (endless), a folder, or a huge file. So the file is opened with
O_NONBLOCK (a FIFO opens at once), checked with `fstat` on the open descriptor (no race between
a check and the open), and read up to a cap.

    OSError
    ├── NotRegularFileError  a FIFO, device, socket or folder
    └── FileTooLargeError    larger than the caller's cap
"""

from __future__ import annotations

import errno
import os
import stat

_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a folder"),
)


class NotRegularFileError(OSError):
    """The path names something other than a regular file."""


class FileTooLargeError(OSError):
    """The file is larger than the cap."""


def read_regular_file(
    path: str | os.PathLike[str],
    *,
    limit: int,
    dir_fd: int | None = None,
    follow_links: bool = True,
) -> bytes:
    """The whole content of the regular file `path` (at most `limit` bytes), else OSError.

    `dir_fd` resolves a relative `path` against an open folder; `follow_links=False` refuses a
    link as the last component (ELOOP).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_links else os.O_NOFOLLOW)
    fd = os.open(path, flags, dir_fd=dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFileError(errno.EINVAL, f"not a regular file ({_kind(info.st_mode)})")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise FileTooLargeError(errno.EFBIG, f"larger than {limit} bytes")
    return b"".join(chunks)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a file")
