"""Wire the stages together: inventory -> plan -> renew (bounded workers) -> report.

`batch.run.job.run` sets up what this needs (client, journal, report) and sums up afterwards.
A producer streams the inventory (parsing runs in a thread, in chunks, so the event loop and
the rate limiter never stall on pandas), decides each row, and feeds runnable devices to a
fixed pool of workers through a bounded queue; everything else becomes a report row at once.
SIGTERM and SIGINT stop the intake; in-flight devices get `grace_seconds` to finish, then are
cancelled (their journal intent makes the next run reconcile them). A write the storage refused
(`StorageError`) stops the intake the same way: devices in flight finish (each keeps what it
received, see `batch.store.rescue`), and `batch.run.job` ends the run with exit 4.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from batch.config import DueRule, RunConfig
from batch.enos.errors import counts_against_run, reruns
from batch.errors import AbortedError, StorageError
from batch.model import Device, ErrorClass, InvalidRow, Outcome, Status, shard_text
from batch.outputs import report
from batch.outputs.timeline import Sample, Timeline
from batch.plan.decide import (
    Deduper,
    OutOfShard,
    Resume,
    Run,
    decide,
    in_shard,
    resumed_outcome,
)
from batch.renew.current import maintenance_verdict
from batch.renew.device import Renewer
from batch.renew.due import Due, lookup, verdict_from_inventory
from batch.renew.retry import Retrier
from batch.run.canary import CanaryGate, CanaryRule
from batch.run.progress import Progress
from batch.store.bundles import UnsafePathError, read_bundle_file
from batch.store.journal import Journal, State

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Tally:
    """Running counts for the summary and the circuit breaker."""

    by_status: Counter[Status] = field(default_factory=Counter)
    by_class: Counter[ErrorClass] = field(default_factory=Counter)
    campaign: Counter[Status] = field(default_factory=Counter)  # resumed rows by earlier status
    out_of_shard: int = 0
    streak_class: ErrorClass | None = None
    streak: int = 0
    finished: int = 0  # renewed or failed in this run, for --abort-failure-rate
    failed: int = 0
    retry: list[Device] = field(default_factory=list)


class Batch:
    """One run over the inventory with a ready client, journal and report."""

    def __init__(
        self,
        config: RunConfig,
        *,
        renewer: Renewer | None,
        journal: Journal | None,
        writer: report.ReportWriter,
        progress: Progress,
        canary: CanaryRule | None = None,
    ) -> None:
        self.config = config
        self.renewer = renewer
        self.journal = journal
        self.writer = writer
        self.progress = progress
        self.tally = Tally()
        self.gate = CanaryGate(canary) if canary is not None and renewer is not None else None
        self.deduper = Deduper()
        self.stop = asyncio.Event()
        self.stop_signal: signal.Signals | None = None
        self.aborted: str | None = None
        self.storage_error: StorageError | None = None  # the first write the storage refused
        self._index = journal.index() if journal is not None else {}
        self.timeline = Timeline(read=self._totals, clock=time.monotonic)

    def _totals(self, at: float) -> Sample:
        limiter = self.renewer.limiter if self.renewer is not None else None
        return Sample(
            at=at,
            finished=self.progress.done,
            renewed=self.tally.by_status[Status.RENEWED],
            failed=self.tally.by_status[Status.FAILED],
            requests=limiter.acquired if limiter else 0,
            throttled=limiter.throttled if limiter else 0,
        )

    async def run(self, rows: Iterator[Device | InvalidRow]) -> None:
        first = await asyncio.to_thread(_take, rows, 1000)
        queue: asyncio.Queue[Run | None] = asyncio.Queue(maxsize=self.config.limits.workers * 2)
        async with asyncio.TaskGroup() as outer:
            ticker = outer.create_task(self.progress.log_periodically())
            sampler = outer.create_task(self.timeline.sample_periodically())
            watchdog: asyncio.Task[None] | None = None
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._produce(queue, first, rows))
                    workers = [tg.create_task(self._work(queue)) for _ in range(self._workers())]
                    watchdog = outer.create_task(self._grace(workers))
            finally:
                ticker.cancel()
                sampler.cancel()
                self.timeline.take()  # the totals at the end
                if watchdog is not None:
                    watchdog.cancel()

    def _workers(self) -> int:
        return self.config.limits.workers if self.renewer is not None else 0

    async def _produce(
        self,
        queue: asyncio.Queue[Run | None],
        first: list[Device | InvalidRow],
        rows: Iterator[Device | InvalidRow],
    ) -> None:
        held: list[Run] = []  # maintenance mode: renewed after the due check, soonest first
        async for item in _chunks(first, rows):
            if self.stop.is_set():
                break
            decision = decide(
                item,
                deduper=self.deduper,
                shard=self.config.scope.shard,
                journal_index=self._index,
                retry_failed=self.config.scope.retry_failed,
            )
            if isinstance(decision, Run):
                if self.renewer is None:
                    self._emit(dry_run_outcome(decision.device))
                elif self.config.scope.due_rule is not None and decision.prior is None:
                    held.append(decision)
                else:
                    await self._dispatch(decision, queue)
            elif isinstance(decision, Resume):
                await self._resume(decision.device, queue)
            elif isinstance(decision, OutOfShard):
                self.tally.out_of_shard += 1
            else:
                self._emit(decision)
        if held and not self.stop.is_set():
            for run in await self._due(held):
                await self._dispatch(run, queue)
        if self.gate is not None and self.gate.pending is not None:
            await self._release_canary(queue)
        for _ in range(self._workers()):
            await queue.put(None)

    async def _dispatch(self, run: Run, queue: asyncio.Queue[Run | None]) -> None:
        """Queue a run, unless the canary is still being collected."""
        if self.gate is None or not self.gate.hold(run):
            await queue.put(run)
        elif self.gate.full:
            await self._release_canary(queue)

    async def _release_canary(self, queue: asyncio.Queue[Run | None]) -> None:
        assert self.gate is not None
        canary = self.gate.pick()
        log.info("canary: renewing %d devices first", len(canary))
        for run in canary:
            await queue.put(run)
        for run in await self.gate.judge(self.stop):
            await queue.put(run)

    async def _due(self, held: list[Run]) -> list[Run]:
        """The held devices that are due, soonest expiry first; the others are reported now."""
        assert self.renewer is not None and self.config.scope.due_rule is not None
        rule, now = self.config.scope.due_rule, datetime.now(UTC)
        due: list[Due] = []
        lookups: list[Device] = []
        for run in held:
            verdict = verdict_from_inventory(run.device, rule, now)
            if verdict is None:
                lookups.append(run.device)
            else:
                self._settle(verdict, run.device, due)
        log.info("maintenance: %d certificates to look up with List Certificate", len(lookups))
        pending = iter(lookups)
        async with asyncio.TaskGroup() as tg:
            for _ in range(self.config.limits.workers):
                tg.create_task(self._look_up(pending, rule, now, due))
        far = datetime.max.replace(tzinfo=UTC)  # unknown expiry: after every known one
        due.sort(key=lambda d: d.expires or far)
        return [Run(d.device, follow=d.follow) for d in due]

    async def _look_up(
        self, pending: Iterator[Device], rule: DueRule, now: datetime, due: list[Due]
    ) -> None:
        assert self.renewer is not None
        r = self.renewer
        retrier = Retrier(r.limiter, r.policy, r.rng, r.sleep)
        for device in pending:
            if self.stop.is_set():
                return
            found = await lookup(retrier, r.client, device)
            verdict = (
                found
                if isinstance(found, Outcome)
                else maintenance_verdict(device, found, rule, now)
            )
            self._settle(verdict, device, due)

    def _settle(self, verdict: Due | Outcome, device: Device, due: list[Due]) -> None:
        if isinstance(verdict, Due):
            due.append(verdict)
        else:
            self._emit(verdict, device)

    async def _work(self, queue: asyncio.Queue[Run | None]) -> None:
        assert self.renewer is not None
        while (job := await queue.get()) is not None:
            if self.stop.is_set():
                continue  # not started: the next run picks it up
            try:
                outcome = await self.renewer.renew(job.device, job.prior, job.follow)
            except StorageError as exc:
                self._storage_failed(exc)  # the next run resumes this device from the journal
                continue
            if self.gate is not None:
                outcome = self.gate.record(outcome, job.device)
            self._emit(outcome, job.device)
            self._check_breaker(outcome)

    async def _grace(self, workers: list[asyncio.Task[None]]) -> None:
        await self.stop.wait()
        if self.gate is not None:
            self.gate.release()
        log.warning(
            "stopping: no new devices; in-flight ones have %.0fs to finish",
            self.config.limits.grace_seconds,
        )
        await asyncio.sleep(self.config.limits.grace_seconds)
        for task in workers:
            task.cancel()

    def _storage_failed(self, exc: StorageError) -> None:
        """Stop taking devices: the storage refused a write (the first such error is kept)."""
        if self.storage_error is None:
            self.storage_error = exc
            log.error("storage refused a write, stopping: %s", exc.message)
        self.stop.set()

    def _write_row(self, outcome: Outcome) -> None:
        """Append a report row; a refused write stops the run (the rerun rebuilds the report)."""
        try:
            self.writer.write(outcome)
        except StorageError as exc:
            self._storage_failed(exc)

    def _emit(self, outcome: Outcome, device: Device | None = None) -> None:
        self._write_row(outcome)
        self.progress.update(outcome)
        self.tally.by_status[outcome.status] += 1
        self.tally.campaign[outcome.status] += 1
        if outcome.error_class is not None:
            self.tally.by_class[outcome.error_class] += 1
        if (
            device is not None
            and outcome.status is Status.FAILED
            and reruns(outcome.error_class)
        ):
            self.tally.retry.append(device)

    async def _resume(self, device: Device, queue: asyncio.Queue[Run | None]) -> None:
        """Report a device finished earlier; rewrite its bundle first if the files are gone."""
        assert self.journal is not None
        entry = self.journal.get(device.key)
        bundle = entry.bundle_path if entry is not None else None
        if (
            entry is not None
            and entry.cert_pem
            and bundle
            and not self._has_bundle(bundle, entry.cert_pem)
        ):
            await queue.put(Run(device, State.BUNDLED))  # the renewer rewrites it from the journal
            return
        earlier = entry.outcome if entry is not None else None
        outcome = resumed_outcome(device, earlier)
        self._write_row(outcome)
        self.progress.update(outcome)
        self.tally.by_status[Status.SKIPPED] += 1
        self.tally.campaign[earlier.status if earlier else Status.SKIPPED] += 1

    def _has_bundle(self, bundle_path: str, cert_pem: str) -> bool:
        """Whether the bundle holds the journal's certificate (bundles are not fsynced: a power
        cut may leave a file empty)."""
        try:
            out_dir = self.config.outputs.out_dir
            written = read_bundle_file(out_dir, bundle_path, "cert.pem").decode()
        except (OSError, UnsafePathError, UnicodeDecodeError):
            return False
        return written.strip() == cert_pem.strip()

    def _check_breaker(self, outcome: Outcome) -> None:
        """Stop the run (exit 3) instead of burning through the fleet with the same failure."""
        if outcome.status not in (Status.FAILED, Status.RENEWED):
            return
        if outcome.status is Status.FAILED and not counts_against_run(outcome.error_class):
            return
        tally, config = self.tally, self.config.limits
        tally.finished += 1
        if outcome.status is Status.RENEWED:
            tally.streak, tally.streak_class = 0, None
            return
        tally.failed += 1
        cls = outcome.error_class
        tally.streak = tally.streak + 1 if cls == tally.streak_class else 1
        tally.streak_class = cls
        if tally.streak > config.abort_after_failures:
            raise AbortedError(
                f"{tally.streak} consecutive failures of class {cls}: stopped to protect the "
                f"fleet (--abort-after-failures {config.abort_after_failures})"
            )
        rate = config.abort_failure_rate
        sampled = tally.finished >= config.abort_min_sample
        if rate is not None and sampled and tally.failed / tally.finished > rate:
            raise AbortedError(
                f"{tally.failed} of {tally.finished} devices failed, more than "
                f"--abort-failure-rate {rate:.0%} (after --abort-min-sample "
                f"{config.abort_min_sample})"
            )

    def vanished(self) -> list[str]:
        """Devices the journal knows from earlier runs that this inventory no longer lists,
        named `org/identity` for the reader."""
        shard = self.config.scope.shard
        return [
            shard_text(k) for k in self._index if in_shard(k, shard) and not self.deduper.seen(k)
        ]


async def _chunks(
    first: list[Device | InvalidRow], rows: Iterator[Device | InvalidRow]
) -> AsyncIterator[Device | InvalidRow]:
    chunk = first
    while chunk:
        for item in chunk:
            yield item
        chunk = await asyncio.to_thread(_take, rows, 1000)


def _take(rows: Iterator[Device | InvalidRow], n: int) -> list[Device | InvalidRow]:
    chunk: list[Device | InvalidRow] = []
    for item in rows:
        chunk.append(item)
        if len(chunk) >= n:
            break
    return chunk


def dry_run_outcome(device: Device) -> Outcome:
    return Outcome.skipped(device, note="dry run: would renew")
