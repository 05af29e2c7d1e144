"""The circuit breaker: stop the run (exit 3) instead of burning through the fleet with the same
failure. It watches the renewals on the outcome stream: a streak of failures of one class, or
(with --abort-failure-rate) too large a share of failures once enough devices finished.
"""

from __future__ import annotations

from dataclasses import dataclass

from batch.config import Limits
from batch.errors import AbortedError
from batch.model import ErrorClass, Outcome, Status
from batch.run.stream import Kind, Origin


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerRule:
    """When the breaker trips (the run's --abort-* options)."""

    after_failures: int  # consecutive failures of one class that are still tolerated
    failure_rate: float | None = None  # share of finished devices that may fail
    min_sample: int = 100  # finished devices before failure_rate applies

    @classmethod
    def of(cls, limits: Limits) -> BreakerRule:
        return cls(
            after_failures=limits.abort_after_failures,
            failure_rate=limits.abort_failure_rate,
            min_sample=limits.abort_min_sample,
        )


class Breaker:
    """Counts renewals as they finish; raises AbortedError when the rule says stop."""

    def __init__(self, rule: BreakerRule) -> None:
        self.rule = rule
        self.finished = 0  # renewed or failed in this run
        self.failed = 0
        self.streak = 0
        self.streak_class: ErrorClass | None = None

    def on_outcome(self, outcome: Outcome, origin: Origin) -> None:
        if origin.kind is not Kind.RENEWAL or outcome.status not in (Status.FAILED, Status.RENEWED):
            return
        self.finished += 1
        if outcome.status is Status.RENEWED:
            self.streak, self.streak_class = 0, None
            return
        self.failed += 1
        cls = outcome.error_class
        self.streak = self.streak + 1 if cls == self.streak_class else 1
        self.streak_class = cls
        rule = self.rule
        if self.streak > rule.after_failures:
            raise AbortedError(
                f"{self.streak} consecutive failures of class {cls}: stopped to protect the "
                f"fleet (--abort-after-failures {rule.after_failures})"
            )
        rate = rule.failure_rate
        sampled = self.finished >= rule.min_sample
        if rate is not None and sampled and self.failed / self.finished > rate:
            raise AbortedError(
                f"{self.failed} of {self.finished} devices failed, more than "
                f"--abort-failure-rate {rate:.0%} (after --abort-min-sample "
                f"{rule.min_sample})"
            )
