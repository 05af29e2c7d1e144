"""The shared rate limiter: exact rate, no window above it, slowdown on 429 and recovery."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import random

import pytest

from batch.clock import FakeClock
from batch.renew.limiter import JITTER, Adaptation, RateLimiter


async def _starts(limiter: RateLimiter, clock: FakeClock, n: int, workers: int = 8) -> list[float]:
    times: list[float] = []
    queue = iter(range(n))

    async def worker() -> None:
        for _ in queue:
            await limiter.acquire()
            times.append(clock())

    async with asyncio.TaskGroup() as tg:
        for _ in range(workers):
            tg.create_task(worker())
    return sorted(times)


def _max_in_window(times: list[float], width: float = 1.0) -> int:
    # the most starts in any half-open window [t, t + width) that begins at a start
    return max(bisect.bisect_left(times, t + width) - i for i, t in enumerate(times))


async def test_holds_the_configured_rate_exactly() -> None:
    clock = FakeClock()
    limiter = RateLimiter(200, clock=clock, sleep=clock.sleep)
    assert limiter.span is None
    times = await _starts(limiter, clock, 2000)
    duration = times[-1] - times[0]
    assert 2000 / duration == pytest.approx(200, rel=0.01)
    assert _max_in_window(times) <= 200
    assert limiter.span == pytest.approx(duration)


async def test_no_burst_after_a_stall() -> None:
    clock = FakeClock()
    limiter = RateLimiter(50, clock=clock, sleep=clock.sleep, catch_up=0.1)
    first = await _starts(limiter, clock, 50)
    clock.now += 3.7  # the event loop was blocked: only `catch_up` of it is made up
    second = await _starts(limiter, clock, 100)
    times = first + second
    assert _max_in_window(times) <= 50
    gaps = [b - a for a, b in itertools.pairwise(times)]
    close = [gap for gap in gaps if gap < 1 / 50 - 1e-6]
    assert len(close) <= 0.1 * 50 + 1  # 0.1 s of starts at 50/s, then the grid again


async def test_late_wake_ups_do_not_erode_the_rate() -> None:
    # A busy event loop wakes sleepers late; the starts after a late one make up for it.
    clock = FakeClock()
    rng = random.Random(7)

    async def late_sleep(seconds: float) -> None:
        await clock.sleep(seconds + rng.uniform(0, 0.008))

    limiter = RateLimiter(250, clock=clock, sleep=late_sleep)
    times = await _starts(limiter, clock, 2500, workers=64)
    # The window is held over 1 s + JITTER, which alone costs up to JITTER of the rate.
    assert 0.98 * 250 <= 2500 / (times[-1] - times[0]) <= 250
    assert _max_in_window(times) <= 250
    assert _max_in_window(times, 1 + JITTER) <= 250


async def test_the_window_allows_for_jitter_on_the_way() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100, clock=clock, sleep=clock.sleep)
    times = await _starts(limiter, clock, 1000)
    assert _max_in_window(times, 1 + JITTER) <= 100


async def test_no_catch_up_after_a_retry_after_pause() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100, clock=clock, sleep=clock.sleep)
    await _starts(limiter, clock, 10)
    limiter.on_throttled(retry_after=2.0)
    resumed = await _starts(limiter, clock, 10)
    gaps = [b - a for a, b in itertools.pairwise(resumed)]
    assert min(gaps) >= 1 / limiter.rate - 1e-9


async def test_cuts_on_429_at_most_once_per_cooldown_and_recovers() -> None:
    clock = FakeClock()
    adaptation = Adaptation(decrease=0.5, increase=0.1, cooldown=1.0)
    limiter = RateLimiter(100, adaptation=adaptation, clock=clock, sleep=clock.sleep)
    limiter.on_throttled()
    limiter.on_throttled()  # in-flight 429s of the same overload do not cut twice
    assert limiter.rate == 50
    assert limiter.throttled == 2
    clock.now += 1.0
    limiter.on_throttled()
    assert limiter.rate == 25
    await _starts(limiter, clock, 1000)  # quiet period: the rate creeps back
    assert limiter.rate == 100


async def test_retry_after_pauses_every_start() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100, clock=clock, sleep=clock.sleep)
    await limiter.acquire()
    paused_at = clock()
    limiter.on_throttled(retry_after=2.5)
    await limiter.acquire()
    assert clock() >= paused_at + 2.5


async def test_rate_under_throttling_never_exceeds_window() -> None:
    clock = FakeClock()
    limiter = RateLimiter(250, clock=clock, sleep=clock.sleep)
    times: list[float] = []
    for i in range(3000):
        await limiter.acquire()
        times.append(clock())
        if i % 100 == 0:
            limiter.on_throttled()
    assert _max_in_window(times) <= 250


@pytest.mark.parametrize("rate", [0, -1, float("inf"), float("nan")])
async def test_rejects_a_rate_that_is_not_positive(rate: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(rate)


def test_adaptation_is_validated() -> None:
    with pytest.raises(ValueError):
        Adaptation(decrease=1.5)
