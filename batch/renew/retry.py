"""Backoff between attempts: exponential with full jitter, capped, and Retry-After honoured.

What is retried is not decided here: that is `batch.enos.errors.POLICY`. This module says how
long to wait and whether the budget allows another attempt, and `Retrier` is the one loop that
obeys both. The RNG and the sleep are injected.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from batch.enos.errors import (
    EnosError,
    ThrottledError,
    abort_reason,
    classify,
    is_retryable,
    slows_down,
)
from batch.errors import AbortedError
from batch.renew.limiter import RateLimiter

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Attempt and time budget of one device."""

    max_attempts: int = 5
    base_delay: float = 0.5  # seconds before the second attempt (before jitter)
    max_delay: float = 30.0  # cap of one wait
    multiplier: float = 2.0
    budget: float = 300.0  # seconds one device may spend waiting between attempts

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.budget < 0:
            raise ValueError("delays and budget must not be negative")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")


def backoff_delay(
    policy: RetryPolicy,
    attempt: int,
    rng: random.Random,
    *,
    retry_after: float | None = None,
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based).

    Full jitter (uniform between 0 and the exponential ceiling) spreads a fleet of retries so they
    do not return in lock step; a server's Retry-After is a floor, never shortened.
    """
    ceiling = min(policy.max_delay, policy.base_delay * policy.multiplier ** (attempt - 1))
    delay = rng.uniform(0, ceiling)
    if retry_after is not None and retry_after > delay:
        delay = min(retry_after, policy.budget)
    return delay


def may_retry(policy: RetryPolicy, attempt: int, waited: float, next_delay: float) -> bool:
    """Whether attempt `attempt + 1` fits in the attempt and time budget."""
    return attempt < policy.max_attempts and waited + next_delay <= policy.budget


@dataclass(frozen=True, slots=True)
class Attempted(Generic[T]):
    """The end of a retried call: its value, or the last error; and how many attempts it took."""

    value: T | None
    error: EnosError | None
    attempts: int


@dataclass(slots=True)
class Retrier:
    """Runs one call until it succeeds or the error table and the budget say stop.

    Every attempt waits for the shared rate limiter's slot first (through `attempt` itself, so a
    caller can do durable work before the slot is taken); a class the table says slows down
    (HTTP 429) slows the limiter. A class the table says stops the run (refused authentication:
    a batch problem, not a device's) raises AbortedError.
    """

    limiter: RateLimiter
    policy: RetryPolicy
    rng: random.Random = field(default_factory=random.Random)
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep

    async def run(self, attempt: Callable[[], Awaitable[T]]) -> Attempted[T]:
        number, waited = 0, 0.0
        while True:
            number += 1
            try:
                return Attempted(await attempt(), None, number)
            except EnosError as exc:
                cls = classify(exc)
                if (reason := abort_reason(cls)) is not None:
                    raise AbortedError(f"{reason}: {exc}") from exc
                retry_after = exc.retry_after if isinstance(exc, ThrottledError) else None
                if slows_down(cls):
                    self.limiter.on_throttled(retry_after)
                delay = backoff_delay(self.policy, number, self.rng, retry_after=retry_after)
                if not is_retryable(cls) or not may_retry(self.policy, number, waited, delay):
                    return Attempted(None, exc, number)
                log.debug("attempt %d failed (%s), retry in %.2fs", number, cls, delay)
                await self.sleep(delay)
                waited += delay
