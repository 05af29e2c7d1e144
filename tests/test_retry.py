"""Backoff: exponential ceiling, full jitter, Retry-After as a floor, attempt and time budgets."""

from __future__ import annotations

import random

import pytest

from batch.renew.retry import RetryPolicy, backoff_delay, may_retry


def test_delay_stays_under_the_exponential_ceiling() -> None:
    policy = RetryPolicy(base_delay=0.5, multiplier=2, max_delay=5)
    rng = random.Random(7)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 5.0), (9, 5.0)]:
        delays = [backoff_delay(policy, attempt, rng) for _ in range(200)]
        assert max(delays) <= ceiling
        assert max(delays) > ceiling * 0.8  # full jitter spreads over the whole range
        assert min(delays) < ceiling * 0.2


def test_same_seed_same_delays() -> None:
    policy = RetryPolicy()
    a = [backoff_delay(policy, n, random.Random(1)) for n in range(1, 6)]
    b = [backoff_delay(policy, n, random.Random(1)) for n in range(1, 6)]
    assert a == b


def test_retry_after_is_a_floor_capped_by_the_budget() -> None:
    policy = RetryPolicy(base_delay=0.1, budget=60)
    assert backoff_delay(policy, 1, random.Random(0), retry_after=7.0) == 7.0
    assert backoff_delay(policy, 1, random.Random(0), retry_after=600.0) == 60.0


def test_budget_limits_attempts_and_waiting() -> None:
    policy = RetryPolicy(max_attempts=3, budget=10)
    assert may_retry(policy, 1, waited=0, next_delay=1)
    assert may_retry(policy, 2, waited=0, next_delay=1)
    assert not may_retry(policy, 3, waited=0, next_delay=1)
    assert not may_retry(policy, 1, waited=9.5, next_delay=1)


@pytest.mark.parametrize(
    "kwargs", [{"max_attempts": 0}, {"base_delay": -1}, {"multiplier": 0.5}, {"budget": -1}]
)
def test_policy_is_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
