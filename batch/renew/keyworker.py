"""A key worker process: generates private keys one ahead, hands each over on request.

Started by `batch.renew.keypool` (`main(MODE)` in a new Python process). It speaks through
its standard streams: it generates a key, waits for one request byte on stdin, writes that key
(unencrypted PKCS#8 PEM) to stdout, and generates the next. So it holds at most one key nobody
asked for, in its own memory only; nothing is written to disk, and when stdin closes (the pool
closes, or the job died however it died: the kernel closes the pipe) it exits, dropping it.

SIGINT and SIGTERM are ignored: a Ctrl-C or a `kill` of the process group reaches the workers
too, and the job must stay the one that decides how the run stops.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from batch.model import KeyMode
from batch.renew.keys import new_key_pem


def serve(mode: KeyMode, requests: int, replies: int) -> None:
    """Hand one new key to `replies` per byte read from `requests`, until `requests` ends."""
    while True:
        pem = new_key_pem(mode)  # ahead of the request: the answer is ready when it comes
        if not os.read(requests, 1):
            return
        view = memoryview(pem)
        while view:
            view = view[os.write(replies, view) :]


def main(mode: str) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # BrokenPipeError: the job is gone; the key it did not take goes with this process.
    with contextlib.suppress(BrokenPipeError):
        serve(KeyMode(mode), sys.stdin.fileno(), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
