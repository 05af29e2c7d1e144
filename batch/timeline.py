"""How the run went over time: cumulative counters sampled once a second, for report.html.

Sampling counters (rather than logging every event) keeps the cost flat: a 100,000-device
campaign at 250 requests/s is ~400 samples.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Sample:
    """Totals so far, `at` seconds after the run started."""

    at: float
    finished: int  # inventory rows with a final state
    renewed: int
    failed: int
    requests: int  # API requests started (renewals, lookups, reconciliations)
    throttled: int  # HTTP 429 answers


@dataclass(slots=True)
class Timeline:
    """Samples of the run's counters; `read` returns the current totals as a Sample."""

    read: Callable[[float], Sample]
    clock: Callable[[], float]
    interval: float = 1.0
    samples: list[Sample] = field(default_factory=list)
    _start: float | None = None

    def take(self) -> None:
        if self._start is None:
            self._start = self.clock()
        self.samples.append(self.read(self.clock() - self._start))

    async def sample_periodically(self) -> None:
        """Take a sample every `interval` seconds until cancelled."""
        while True:
            self.take()
            await asyncio.sleep(self.interval)
