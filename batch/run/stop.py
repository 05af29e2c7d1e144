"""Stopping a run: no new devices, and a deadline for the ones in flight.

SIGTERM/SIGINT (Airflow stops a task with SIGTERM) or a write the storage refused stop the
intake at once; whatever runs inside `grace()` then has `grace_seconds` to finish, after which
it is cancelled. The deadline is an `asyncio.timeout` that waits forever until the stop arrives
and is rescheduled then (on the event loop's clock, which the cancellation runs on).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable

log = logging.getLogger(__name__)


class Stop:
    """The run's stop: an event the intake and the workers check, and the grace deadline."""

    def __init__(self, grace_seconds: float, *, on_stop: Callable[[], None] | None = None) -> None:
        self.event = asyncio.Event()
        self.signal: signal.Signals | None = None  # the first signal received
        self._grace_seconds = grace_seconds
        self._on_stop = on_stop  # called once the grace period starts (the canary stops waiting)
        self._deadline: asyncio.Timeout | None = None

    def __call__(self, sig: signal.Signals | None = None) -> None:
        """Stop taking devices (once); a signal is remembered, its exit code ends the run."""
        if sig is not None and self.signal is None:
            self.signal = sig
            log.warning("received %s", sig.name)
        if not self.event.is_set():
            self.event.set()
            self._start_grace()

    def is_set(self) -> bool:
        return self.event.is_set()

    @contextlib.asynccontextmanager
    async def grace(self) -> AsyncIterator[None]:
        """The block in which a stop gives in-flight work `grace_seconds`, then cancels it (the
        block then ends normally: a stopped run still sums up what it did)."""
        try:
            async with asyncio.timeout(None) as self._deadline:
                if self.event.is_set():  # stopped before the block began
                    self._start_grace()
                yield
        except TimeoutError:
            if self._deadline is None or not self._deadline.expired():
                raise  # not the deadline's
            # The deadline cancelled what was still running: the next run resumes it.
        finally:
            self._deadline = None

    def _start_grace(self) -> None:
        if self._deadline is None:  # outside the block: nothing in flight (yet, or any more)
            return
        if self._on_stop is not None:
            self._on_stop()
        grace = self._grace_seconds
        log.warning("stopping: no new devices; in-flight ones have %.0fs to finish", grace)
        self._deadline.reschedule(asyncio.get_running_loop().time() + grace)
