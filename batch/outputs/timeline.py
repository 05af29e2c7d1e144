"""How the run went over time: cumulative counters sampled once a second, for report.html.

Sampling counters (rather than logging every event) keeps the cost flat: a 100,000-device
campaign at 250 requests/s is ~400 samples.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
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


@dataclass(frozen=True, slots=True)
class Interval:
    """The rates between two consecutive timeline samples."""

    start: float  # seconds since the run started
    end: float
    finished_per_s: float
    throttled_per_s: float


def timeline_rates(timeline: Sequence[Sample]) -> list[Interval]:
    """Finished rows/s and 429s/s between consecutive samples (the samples hold totals)."""
    intervals = []
    for before, after in itertools.pairwise(timeline):
        span = after.at - before.at
        if span > 0:  # a zero-length interval (the closing sample) has no rate
            finished = (after.finished - before.finished) / span
            throttled = (after.throttled - before.throttled) / span
            intervals.append(Interval(before.at, after.at, finished, throttled))
    return intervals
