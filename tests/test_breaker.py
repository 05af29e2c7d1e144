"""The circuit breaker, a subscriber of the outcome stream: which outcomes trip it, and when."""

from __future__ import annotations

import pytest

from batch.errors import AbortedError
from batch.model import Device, ErrorClass, Outcome, Status
from batch.run.breaker import Breaker, BreakerRule
from batch.run.stream import Kind, Origin

DEVICE = Device(row=2, org_id="o", product_key="pk", device_key="dk", cert_sn=1)
RENEWAL = Origin(Kind.RENEWAL, DEVICE)


def failed(cls: ErrorClass) -> Outcome:
    return Outcome(row=2, status=Status.FAILED, error_class=cls)


def test_it_trips_on_one_failure_more_than_the_streak_allows() -> None:
    breaker = Breaker(BreakerRule(after_failures=2))
    for _ in range(2):
        breaker.on_outcome(failed(ErrorClass.PERMISSION_DENIED), RENEWAL)
    expected = r"3 consecutive failures of class permission_denied: .*--abort-after-failures 2"
    with pytest.raises(AbortedError, match=expected):
        breaker.on_outcome(failed(ErrorClass.PERMISSION_DENIED), RENEWAL)


def test_a_renewal_or_another_class_starts_the_streak_over() -> None:
    breaker = Breaker(BreakerRule(after_failures=1))
    sequence = [
        failed(ErrorClass.SERVER_ERROR),
        Outcome(row=2, status=Status.RENEWED),
        failed(ErrorClass.SERVER_ERROR),
        failed(ErrorClass.TIMEOUT),
    ]
    for outcome in sequence:
        breaker.on_outcome(outcome, RENEWAL)
    assert (breaker.streak, breaker.finished, breaker.failed) == (1, 4, 3)


def test_only_renewals_count_not_rows_settled_without_one() -> None:
    """A List failure in maintenance mode, an invalid row or a resumed one never trips it."""
    breaker = Breaker(BreakerRule(after_failures=0))
    breaker.on_outcome(failed(ErrorClass.SERVER_ERROR), Origin(Kind.DECIDED, DEVICE))
    breaker.on_outcome(failed(ErrorClass.INVALID_INPUT), Origin(Kind.DECIDED))
    breaker.on_outcome(Outcome(row=2, status=Status.SKIPPED), Origin(Kind.RESUMED))
    assert breaker.finished == 0
    with pytest.raises(AbortedError):
        breaker.on_outcome(failed(ErrorClass.SERVER_ERROR), RENEWAL)


def test_the_failure_rate_applies_once_the_sample_is_large_enough() -> None:
    breaker = Breaker(BreakerRule(after_failures=100, failure_rate=0.5, min_sample=4))
    for cls in (ErrorClass.SERVER_ERROR, ErrorClass.TIMEOUT, ErrorClass.SERVER_ERROR):
        breaker.on_outcome(failed(cls), RENEWAL)  # 3 of 3 failed, but only 3 finished
    with pytest.raises(AbortedError, match="4 of 4 devices failed, more than --abort-failure-rate"):
        breaker.on_outcome(failed(ErrorClass.TIMEOUT), RENEWAL)
