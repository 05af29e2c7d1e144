"""The run loop: inventory -> plan -> renew (bounded workers) -> one stream of outcomes.

`batch.run.job.run` sets up what this needs (client, journal, report) and sums up afterwards
from the `RunResult` that `RunLoop.run` returns. The intake (`batch.run.intake`) decides each
row and feeds runnable devices to a fixed pool of workers through a bounded queue; every final
outcome goes out on one `OutcomeStream` to its subscribers (report row, progress, tally, retry
list, circuit breaker).

`stop` (SIGTERM/SIGINT, or a write the storage refused) ends the intake; in-flight devices get
`grace_seconds` to finish: a deadline on the workers, set when the stop arrives. At the deadline
they are cancelled (their journal intent makes the next run reconcile them; a certificate that
already arrived goes to a rescue file, see `batch.store.rescue`). After a refused write,
`batch.run.job` ends the run with exit 4.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import time
import typing
from collections.abc import Callable, Iterator

from batch.config import RunConfig
from batch.errors import AbortedError, InventoryError, StorageError
from batch.model import Device, InvalidRow, Status
from batch.outputs.report import ReportWriter
from batch.outputs.timeline import Sample, Timeline
from batch.renew.device import Renewer
from batch.renew.limiter import RateLimiter
from batch.run.breaker import Breaker, BreakerRule
from batch.run.canary import CanaryGate, CanaryRule
from batch.run.intake import Intake, Queue, first_chunk
from batch.run.progress import Progress
from batch.run.result import Requests, RunResult, Totals
from batch.run.stop import Stop
from batch.run.stream import Kind, Origin, OutcomeStream, ReportRows, RetryList, Tally
from batch.store.journal import Journal, JournalError

log = logging.getLogger(__name__)

E = typing.TypeVar("E", bound=BaseException)


class RunLoop:
    """One run over the inventory with a ready client, journal and report."""

    def __init__(
        self,
        config: RunConfig,
        *,
        renewer: Renewer | None,
        journal: Journal | None,
        writer: ReportWriter,
        progress: Progress,
        canary: CanaryRule | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._renewer = renewer
        self._progress = progress
        self._tally = Tally()
        self._retry = RetryList()
        self._gate = CanaryGate(canary) if canary is not None and renewer is not None else None
        release = self._gate.release if self._gate is not None else None
        self._stop = Stop(config.limits.grace_seconds, on_stop=release)
        self._storage_error: StorageError | None = None  # the first write the storage refused
        self._aborted: str | None = None
        rows = ReportRows(writer, self._storage_failed)
        breaker = Breaker(BreakerRule.of(config.limits))  # last: the row tripping it is reported
        self._stream = OutcomeStream(rows, progress, self._tally, self._retry, breaker)
        self._intake = Intake(
            config,
            renewer=renewer,
            journal=journal,
            gate=self._gate,
            stream=self._stream,
            tally=self._tally,
            stop=self._stop.event,
        )
        self._limiter = renewer.limiter if renewer is not None else None
        read = functools.partial(_sample, self._tally, self._limiter)
        self._timeline = Timeline(read=read, clock=clock)

    def stop(self, sig: signal.Signals | None = None) -> None:
        """Take no new devices; those in flight get the grace period (`batch.run.stop`)."""
        self._stop(sig)

    async def run(self, rows: Iterator[Device | InvalidRow]) -> RunResult:
        """Run over every row (or until stopped or aborted); batch-level errors that leave
        nothing to sum up (a damaged journal, an inventory unreadable before any request) raise."""
        try:
            await self._run(rows)
        except* AbortedError as group:
            self._aborted = str(_first(group))
            log.error("aborted: %s", self._aborted)
        except* InventoryError as group:
            # The whole file was read before anything was sent (`batch.run.setup`): only a file
            # changed during the run gets here. Once requests have gone out, exit 2 ("nothing
            # was sent") would be false: the run aborts (exit 3).
            if Requests.of(self._limiter).sent == 0:
                raise InventoryError(str(_first(group))) from None
            reason = _first(group)
            self._aborted = f"the inventory became unreadable during the run: {reason}"
            log.error("aborted: %s", self._aborted)
        except* StorageError as group:  # a journal read failed mid-run (I/O error)
            self._storage_error = self._storage_error or _first(group)
        except* JournalError as group:  # a damaged page found mid-run: exit 2 as well
            raise _first(group) from None
        return self._result()

    async def _run(self, rows: Iterator[Device | InvalidRow]) -> None:
        first = await first_chunk(rows)
        queue: Queue = asyncio.Queue(maxsize=self._config.limits.workers * 2)
        async with asyncio.TaskGroup() as outer:
            ticker = outer.create_task(self._progress.log_periodically())
            sampler = outer.create_task(self._timeline.sample_periodically())
            try:
                await self._work_until_done(queue, first, rows)
            finally:
                ticker.cancel()
                sampler.cancel()
                self._timeline.take()  # the totals at the end

    async def _work_until_done(
        self, queue: Queue, first: list[Device | InvalidRow], rows: Iterator[Device | InvalidRow]
    ) -> None:
        """Intake and workers, until the inventory is done or the grace period ran out."""
        workers = self._config.limits.workers if self._renewer is not None else 0
        async with self._stop.grace(), asyncio.TaskGroup() as tg:
            tg.create_task(self._intake.produce(queue, first, rows))
            for _ in range(workers):
                tg.create_task(self._work(queue))

    async def _work(self, queue: Queue) -> None:
        assert self._renewer is not None
        while (job := await queue.get()) is not None:
            if self._stop.is_set():
                continue  # not started: the next run picks it up
            try:
                outcome = await self._renewer.renew(job.device, job.prior, job.follow)
            except StorageError as exc:
                self._storage_failed(exc)  # the next run resumes this device from the journal
                continue
            if self._gate is not None:
                outcome = self._gate.record(outcome, job.device)
            self._stream.emit(outcome, Origin(Kind.RENEWAL, job.device))

    def _storage_failed(self, exc: StorageError) -> None:
        """Stop taking devices: the storage refused a write (the first such error is kept)."""
        if self._storage_error is None:
            self._storage_error = exc
            log.error("storage refused a write, stopping: %s", exc.message)
        self._stop()

    def _result(self) -> RunResult:
        return RunResult(
            totals=Totals.of(self._tally),
            retry=tuple(self._retry.devices),
            samples=tuple(self._timeline.samples),
            requests=Requests.of(self._limiter),
            ca_changes=self._renewer.ca_changes if self._renewer is not None else 0,
            vanished=tuple(self._intake.vanished()),
            stop_signal=self._stop.signal,
            aborted=self._aborted,
            storage_error=self._storage_error,
        )


def _sample(tally: Tally, limiter: RateLimiter | None, at: float) -> Sample:
    """The run's totals `at` seconds in, for the timeline."""
    requests = Requests.of(limiter)
    return Sample(
        at=at,
        finished=tally.finished,
        renewed=tally.by_status[Status.RENEWED],
        failed=tally.by_status[Status.FAILED],
        requests=requests.sent,
        throttled=requests.throttled,
    )


def _first(group: BaseExceptionGroup[E]) -> E:
    """The first error of a (nested) group (task groups nest them)."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return typing.cast(E, first)
