"""One stream of final outcomes, and the small subscribers that only record what flows by.

Every inventory row ends as one Outcome, emitted once on the run's `OutcomeStream`; each
subscriber (`OutcomeSink`) sees it in the order they subscribed. The run loop subscribes, in this
order: the report row (the last of journal -> bundle -> report: the renewer has done the first
two), the progress display, the tally, the retry list, and last the circuit breaker, which may
stop the run: the row that trips it is in the report and counted like any other.
"""

from __future__ import annotations

import asyncio
import enum
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from batch.enos.errors import reruns
from batch.errors import StorageError
from batch.model import Device, ErrorClass, Outcome, Status
from batch.outputs.report import ReportWriter


class Kind(enum.Enum):
    """How a row reached its final state (some subscribers count only some kinds)."""

    DECIDED = "decided"  # no renewal: invalid or duplicate row, dry run, not due, List failed
    RENEWAL = "renewal"  # a worker renewed it, or failed to: what the circuit breaker watches
    RESUMED = "resumed"  # finished in an earlier run (reported as skipped)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an outcome came from."""

    kind: Kind
    device: Device | None = None  # the device, when a rerun may retry it (retry.csv)
    earlier: Status | None = None  # RESUMED: its state after the earlier run


class OutcomeSink(Protocol):
    """A subscriber of the outcome stream."""

    def on_outcome(self, outcome: Outcome, origin: Origin) -> None: ...


class OutcomeStream:
    """Hands each final outcome to every subscriber, in order."""

    def __init__(self, *sinks: OutcomeSink) -> None:
        self._sinks = sinks

    def emit(self, outcome: Outcome, origin: Origin) -> None:
        for sink in self._sinks:
            sink.on_outcome(outcome, origin)


class ReportRows:
    """Appends each outcome to report.csv; a refused write stops the run (the rerun rebuilds
    the report from the journal)."""

    def __init__(self, writer: ReportWriter, refused: Callable[[StorageError], None]) -> None:
        self._writer = writer
        self._refused = refused
        self._flush_due = False

    def on_outcome(self, outcome: Outcome, origin: Origin) -> None:
        # The rows of one event-loop tick go to the kernel in one flush (one write call, not
        # one per row): a kill loses at most that tick's rows, and the rerun reports them again.
        try:
            self._writer.write(outcome, flush=False)
        except StorageError as exc:
            self._refused(exc)
            return
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        try:
            self._writer.flush()
        except StorageError as exc:
            self._refused(exc)


class Tally:
    """Counts for the summary and the timeline: rows by final state and by error class, the
    campaign's totals (a resumed row counts as what it became in its earlier run), and the rows
    outside this shard (which get no report row)."""

    def __init__(self) -> None:
        self.by_status: Counter[Status] = Counter()
        self.by_class: Counter[ErrorClass] = Counter()
        self.campaign: Counter[Status] = Counter()
        self.out_of_shard = 0

    def on_outcome(self, outcome: Outcome, origin: Origin) -> None:
        self.by_status[outcome.status] += 1
        if origin.kind is Kind.RESUMED:
            self.campaign[origin.earlier or Status.SKIPPED] += 1
            return
        self.campaign[outcome.status] += 1
        if outcome.error_class is not None:
            self.by_class[outcome.error_class] += 1

    @property
    def finished(self) -> int:
        """Rows with a final state so far."""
        return sum(self.by_status.values())


class RetryList:
    """The devices that failed for a reason a rerun takes up again (the POLICY table's
    `rerun`): retry.csv."""

    def __init__(self) -> None:
        self.devices: list[Device] = []

    def on_outcome(self, outcome: Outcome, origin: Origin) -> None:
        failed = outcome.status is Status.FAILED
        if origin.device is not None and failed and reruns(outcome.error_class):
            self.devices.append(origin.device)
