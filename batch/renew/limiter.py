"""The request rate limit shared by all workers: exact, burst-free, and adaptive to HTTP 429.

Two rules hold every start:
- starts are spaced on a grid of 1/rate seconds; a late wake-up (a busy event loop) still
  takes its grid slot, so the next starts make the lost time up at once and a run at the
  configured rate finishes in about `devices / rate` seconds. The grid never lags the clock
  by more than `catch_up` seconds: after a longer stall no more than `catch_up * rate` starts
  follow each other closely;
- a log of the last `rate` start times guarantees that no sliding window of 1 s + JITTER
  ever holds more than `rate` starts, even after the event loop stalled, so that the gateway,
  which sees each request a varying moment later, still counts no more than `rate` a second.

On HTTP 429 the rate is cut (at most once per `cooldown` seconds, since the 429s of requests
already in flight all describe the same overload) and a Retry-After pauses every start; after a
quiet `cooldown` the rate creeps back up towards the configured one (AIMD, as TCP does).

The clock and the sleep are injected so tests run instantly and exactly.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

# Seconds a late grid may make up: at 250/s a 20 ms stall of a busy loop is 5 starts, made up
# at once; a longer stall (a blocked loop, a pause) does not become a burst.
CATCH_UP = 0.05
# The one-second window is held over 1 s + JITTER: requests reach the gateway with a varying
# delay (event loops, GC, the network), so starts exactly `rate` a second apart would sometimes
# arrive as `rate + 1` in a second. Costs at most JITTER of the rate (1 %).
JITTER = 0.01
WINDOW = 1.0 + JITTER


@dataclass(frozen=True, slots=True, kw_only=True)
class Adaptation:
    """How the limiter reacts to throttling."""

    decrease: float = 0.85  # multiply the rate by this on a 429
    increase: float = 0.02  # add this share of the configured rate per quiet cooldown
    cooldown: float = 1.0  # seconds between two cuts, and between two increases
    floor: float = 1.0  # never below this many requests per second

    def __post_init__(self) -> None:
        if not 0 < self.decrease < 1:
            raise ValueError("decrease must be between 0 and 1")
        if self.increase <= 0 or self.cooldown <= 0 or self.floor <= 0:
            raise ValueError("increase, cooldown and floor must be positive")


class RateLimiter:
    """At most `rate` request starts in any one-second window, evenly spaced."""

    def __init__(
        self,
        rate: float,
        *,
        adaptation: Adaptation | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        catch_up: float = CATCH_UP,
    ) -> None:
        if rate <= 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be a positive number, not {rate!r}")
        if catch_up < 0:
            raise ValueError("catch_up must not be negative")
        self.configured = float(rate)
        self.catch_up = catch_up
        self.adaptation = adaptation or Adaptation()
        self._rate = float(rate)
        self._clock = clock or asyncio.get_running_loop().time
        self._sleep = sleep
        self._lock = asyncio.Lock()  # FIFO: waiters start in arrival order
        self._next = -math.inf  # the next grid slot
        self._starts: deque[float] = deque()
        self._paused_until = -math.inf
        self._last_cut = -math.inf
        self._last_change = self._clock()
        self.throttled = 0  # 429s reported
        self.acquired = 0  # starts granted
        self.first_start: float | None = None  # clock readings of the first and last start
        self.last_start: float | None = None

    @property
    def span(self) -> float | None:
        """Seconds from the first start to the last, or None before two starts."""
        if self.first_start is None or self.last_start is None or self.acquired < 2:
            return None
        return self.last_start - self.first_start

    @property
    def rate(self) -> float:
        """The rate in force now (configured, or less after 429s)."""
        return self._rate

    async def acquire(self) -> None:
        """Wait for this request's start slot."""
        async with self._lock:
            while (wait := self._wait(self._clock())) > 0:
                await self._sleep(wait)
            now = self._clock()
            # The slot this start takes: its grid slot, even if passed (a late wake-up), but
            # not before `catch_up` ago, nor before the window let it start (else the starts
            # the window held back would all go at once, a second after a burst).
            if self._next == -math.inf:
                slot = now  # the first start
            else:
                slot = max(self._next, now - self.catch_up, self._window_opened())
            self._starts.append(now)
            self.acquired += 1
            self.first_start = now if self.first_start is None else self.first_start
            self.last_start = now
            self._next = slot + 1.0 / self._rate

    def _wait(self, now: float) -> float:
        self._recover(now)
        while len(self._starts) > self._window_cap():
            self._starts.popleft()
        return max(self._next - now, self._window_opened() - now, self._paused_until - now)

    def _window_cap(self) -> int:
        return max(1, math.floor(self._rate))

    def _window_opened(self) -> float:
        """When the sliding window has room again if it is full (its oldest start + WINDOW)."""
        full = len(self._starts) >= self._window_cap()
        return self._starts[0] + WINDOW if full else -math.inf

    def _recover(self, now: float) -> None:
        step = self.adaptation.cooldown
        if self._rate >= self.configured or now - self._last_change < step:
            return
        self._rate = min(self.configured, self._rate + self.adaptation.increase * self.configured)
        self._last_change = now

    def on_throttled(self, retry_after: float | None = None) -> None:
        """Report an HTTP 429: cut the rate, and pause all starts for Retry-After if given."""
        now = self._clock()
        self.throttled += 1
        if retry_after is not None and retry_after > 0:
            self._paused_until = max(self._paused_until, now + retry_after)
            self._next = max(self._next, self._paused_until)  # no catch-up after the pause
        if now - self._last_cut < self.adaptation.cooldown:
            return
        self._rate = max(self.adaptation.floor, self._rate * self.adaptation.decrease)
        self._last_cut = now
        self._last_change = now
