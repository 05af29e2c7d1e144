"""Injected misbehaviour: latency, 99500 (before or after the effect), dropped connections, lost
answers, the 429 limit.

Every random draw comes from one `random.Random(seed)`, so a run with the same seed and the
same order of requests misbehaves the same way.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from batch.simulator.config import SimulatorConfig

WINDOW = 1.0  # seconds: the rate limit and `maxInOneSecond` use a sliding window this long


class Fate(enum.Enum):
    """What happens to one business call after the gateway let it through."""

    NORMAL = "normal"
    FAIL = "fail"  # answer 99500, no effect
    DROP = "drop"  # close the connection before processing, no effect
    LOST = "lost"  # process it, then close the connection without an answer
    FAIL_AFTER = "fail_after"  # process it, then answer 99500 (EnOS failed after renewing)


@dataclass(frozen=True, slots=True)
class Draw:
    """One call's injected delay (seconds) and fate."""

    delay: float
    fate: Fate


class FaultPlan:
    """Draws each business call's latency and fate from the configured rates."""

    def __init__(self, config: SimulatorConfig, rng: random.Random) -> None:
        self._config = config
        self._rng = rng

    def draw(self) -> Draw:
        """The next call's delay and fate (two draws from the RNG, always both)."""
        cfg = self._config
        spread = self._rng.uniform(-cfg.jitter_ms, cfg.jitter_ms)
        delay = max(0.0, cfg.latency_ms + spread) / 1000
        roll = self._rng.random()
        for fate, rate in (
            (Fate.DROP, cfg.drop_rate),
            (Fate.FAIL, cfg.fail_rate),
            (Fate.LOST, cfg.lost_rate),
            (Fate.FAIL_AFTER, cfg.fail_after_rate),  # last: the earlier rates keep their draws
        ):
            if roll < rate:
                return Draw(delay, fate)
            roll -= rate
        return Draw(delay, Fate.NORMAL)


class SlidingWindow:
    """Counts events in the last `WINDOW` seconds; optionally refuses beyond a limit.

    As a limiter (`limit` set), `admit` never accepts more than `limit` events in any window
    of `WINDOW` seconds: no burst allowance, no catch-up.
    """

    def __init__(self, limit: int | None, clock: Callable[[], float]) -> None:
        self._limit = limit
        self._clock = clock
        self._times: deque[float] = deque()
        self.peak = 0  # the most events seen in one window

    def admit(self) -> bool:
        """Record an event now unless the limit is reached; True if it was recorded."""
        now = self._clock()
        while self._times and now - self._times[0] >= WINDOW:
            self._times.popleft()
        if self._limit is not None and len(self._times) >= self._limit:
            return False
        self._times.append(now)
        self.peak = max(self.peak, len(self._times))
        return True
