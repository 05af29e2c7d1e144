"""Generated keys made ahead of need in worker processes, one per core, a bounded few at a time.

RSA-2048 generation is the whole cost of a renewal in that key mode (~50-60 ms of CPU, against
~5 ms for everything else). In threads of the job's process, each key also needs the GIL, held
by the event loop most of the time, to start, to sign its CSR and to be handed back; in worker
processes (`batch.renew.keyworker`) the key is made outside this process, and a worker makes its
next key while the previous one is being used, so it is ready when the next device asks.

Bounded: each worker holds at most one key nobody asked for, in its own memory, and at most one
more waits in its pipe when a taker was cancelled; nothing is written to disk. A key reaches the
journal (0600) only through the renewer, which records it with the intent before the request
leaves, as it does for a key generated in a thread. A key never taken dies with its worker.

Stopping: `close()` closes the workers' stdin, and a worker exits at once (or after the key it
is generating); when the job dies, even by SIGKILL, the kernel closes the pipes and the workers
exit the same way: no orphans. A worker that ends early is not replaced: its share of the keys
is generated in a thread of this process (`fallback`), as without the pool, and a warning says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from pathlib import Path

from cryptography import x509

from batch.model import KeyMode
from batch.renew import keys
from batch.renew.keys import KeyMaterial

log = logging.getLogger(__name__)

_REQUEST = b"k"  # one byte asks a worker for the key it has ready
_END = b"-----END PRIVATE KEY-----\n"  # the end of one PKCS#8 PEM answer
CLOSE_TIMEOUT_S = 2.0  # a worker's last key takes at most a few tenths of a second
# A worker runs this very `batch` (-P: not one in the current folder), whatever sys.path it has.
_ROOT = str(Path(__file__).resolve().parents[2])
_WORKER = (
    "import sys; sys.path.insert(0, sys.argv[1]); from batch.renew.keyworker import main;"
    " sys.exit(main(sys.argv[2]))"
)


def pool_size() -> int:
    """The cores this process may run on (its CPU affinity), at least one."""
    count = getattr(os, "process_cpu_count", None)  # Python 3.13+
    if count is not None:
        return int(count() or 1)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


class _Worker:
    """One worker process and whether a key asked of it is still unread."""

    __slots__ = ("owed", "process")

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.owed = False  # its taker was cancelled: the next taker reads that key


class KeyPool:
    """New keys of one mode, from worker processes; `take(subject)` adds the device's CSR."""

    def __init__(self, mode: KeyMode, *, fallback: Executor) -> None:
        self._mode = mode
        self._fallback = fallback  # generates keys in this process when no worker is left
        self._workers: list[_Worker] = []  # every worker started, alive or not
        self._idle: asyncio.Queue[_Worker | None] = asyncio.Queue()  # None: none left
        self._alive = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def started(
        cls, mode: KeyMode, *, fallback: Executor, workers: int | None = None
    ) -> AsyncIterator[KeyPool]:
        """A pool of `workers` processes (default: one per core), closed on the way out."""
        pool = cls(mode, fallback=fallback)
        try:
            await pool._start(workers or pool_size())
            yield pool
        finally:
            await pool.close()

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids (for checks that they end)."""
        return [worker.process.pid for worker in self._workers]

    async def take(self, subject: x509.Name) -> KeyMaterial:
        """A new key of the pool's mode and a CSR for `subject` signed by it."""
        pem = await self._next_key()
        if pem is None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._fallback, keys.generate, self._mode, subject)
        # Signing the CSR with the key at hand takes ~0.3 ms: less than a hand-off to a thread.
        return keys.with_new_key(pem, subject)

    async def close(self) -> None:
        """End every worker: close its stdin, wait for it, kill it if it does not end."""
        try:
            for worker in self._workers:
                if worker.process.stdin is not None:
                    worker.process.stdin.close()
            for worker in self._workers:
                try:
                    await asyncio.wait_for(worker.process.wait(), CLOSE_TIMEOUT_S)
                except TimeoutError:
                    worker.process.kill()
                    await worker.process.wait()
        except BaseException:  # cancelled while waiting: do not leave a worker behind
            for worker in self._workers:
                if worker.process.returncode is None:
                    worker.process.kill()
            raise

    async def _start(self, workers: int) -> None:
        for _ in range(workers):
            try:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-P", "-c", _WORKER, _ROOT, self._mode.value,
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                )  # fmt: skip
            except OSError as exc:  # no process to be had (limits): keys from the fallback
                log.warning("cannot start a key worker process: %s", exc.strerror or exc)
                break
            worker = _Worker(process)
            self._workers.append(worker)
            self._idle.put_nowait(worker)
            self._alive += 1
        if self._alive == 0:
            self._idle.put_nowait(None)

    async def _next_key(self) -> bytes | None:
        """The PEM of a worker's next key, or None when no worker is left."""
        while True:
            worker = await self._idle.get()
            if worker is None:
                self._idle.put_nowait(None)  # wake the next taker too
                return None
            try:
                pem = await self._ask(worker)
            except (asyncio.IncompleteReadError, ConnectionError):
                self._lost(worker)
                continue
            except BaseException:
                self._idle.put_nowait(worker)  # cancelled: it stays usable (`owed`)
                raise
            self._idle.put_nowait(worker)
            return pem

    @staticmethod
    async def _ask(worker: _Worker) -> bytes:
        stdin, stdout = worker.process.stdin, worker.process.stdout
        assert stdin is not None and stdout is not None
        if not worker.owed:
            stdin.write(_REQUEST)
            worker.owed = True
            await stdin.drain()
        pem = await stdout.readuntil(_END)
        worker.owed = False
        return pem

    def _lost(self, worker: _Worker) -> None:
        self._alive -= 1
        log.warning(
            "key worker process %d ended early; %s",
            worker.process.pid,
            "keys are generated in this process from now on"
            if self._alive == 0
            else f"{self._alive} key worker(s) left",
        )
        if self._alive == 0:
            self._idle.put_nowait(None)
