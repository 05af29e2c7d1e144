"""Backoff between attempts: exponential with full jitter, capped, and Retry-After honoured.

What is retried is not decided here: that is `batch.enos.errors.POLICY`. This module only says
how long to wait and whether the budget allows another attempt. The RNG is injected.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


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
