"""A fake clock for tests of time-dependent code (limiter, retry), shipped as product code.

`FakeClock.sleep` advances time instead of waiting, so a test of "200 requests per second for
10 seconds" runs in milliseconds and its timings are exact.
"""

from __future__ import annotations

import asyncio


class FakeClock:
    """A monotonic clock that moves only when someone sleeps on it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)  # let other tasks run, as a real sleep would
