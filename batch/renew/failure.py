"""A device's attempts ended without a certificate: its outcome, journaled as the table says.

`batch.enos.errors.POLICY` decides (`reruns`): a failure a later run should take again leaves
the journal entry open (an ambiguous device stays an intent, so the next run reconciles it
first); any other is journaled as final.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from batch.enos.errors import EnosError, failed_class, reruns
from batch.model import Outcome
from batch.renew.attempt import Attempt, elapsed_ms
from batch.renew.validity import too_long_advice
from batch.store.journal import Journal


@dataclass(slots=True)
class Failures:
    """Builds and journals the outcome of a device that ends without a certificate."""

    journal: Journal
    clock: Callable[[], float]

    async def final(self, a: Attempt, outcome: Outcome) -> Outcome:
        """A device's outcome without a certificate: journaled as final unless worth a rerun."""
        outcome = replace(
            outcome, attempts=a.previous + a.sent, duration_ms=elapsed_ms(self.clock, a.started)
        )
        if not reruns(outcome.error_class):
            await self.journal.record_failed(a.device.key, outcome=outcome)
        return outcome

    async def failed(self, a: Attempt, exc: EnosError) -> Outcome:
        """The outcome of a device whose last attempt failed with `exc`."""
        advice = too_long_advice(str(exc), a.requested_days)
        outcome = Outcome.failed(
            a.device,
            error_class=failed_class(exc, ambiguous=a.ambiguous),
            error_code=exc.code if exc.code is not None else exc.http_status,
            error_message=advice or a.advice or str(exc),
            attempts=a.previous + a.sent,
            request_id=exc.request_id,
            duration_ms=elapsed_ms(self.clock, a.started),
            note=a.note,
        )
        # An ambiguous device stays an intent in the journal: the next run reconciles it first.
        return await self.final(a, outcome)
