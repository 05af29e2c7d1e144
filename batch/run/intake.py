"""The producer side of the run loop: read the inventory, decide each row, feed the workers.

Parsing runs in a thread, in chunks, so the event loop and the rate limiter never stall on
parsing. Runnable devices go to the workers through a bounded queue (held back first while the
canary is collected, or in maintenance mode until the due check); every other row becomes its
report row at once, on the outcome stream. A stop ends the intake at the next row.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from batch.config import RunConfig
from batch.model import Device, InvalidRow, Outcome, Status, shard_text
from batch.plan.decide import (
    Deduper,
    OutOfShard,
    Resume,
    Run,
    decide,
    in_shard,
    resumed_outcome,
)
from batch.renew.device import Renewer
from batch.run.canary import CanaryGate
from batch.run.maintenance import due_runs
from batch.run.stream import Kind, Origin, OutcomeStream, Tally
from batch.store.bundles import UnsafePathError, read_bundle_file
from batch.store.journal import Journal, State

log = logging.getLogger(__name__)

Queue = asyncio.Queue[Run | None]  # None: no more work for one worker
CHUNK = 1000  # inventory rows parsed per hand-off to the thread


class Intake:
    """Decides every inventory row once and dispatches it; remembers which devices it saw."""

    def __init__(
        self,
        config: RunConfig,
        *,
        renewer: Renewer | None,
        journal: Journal | None,
        gate: CanaryGate | None,
        stream: OutcomeStream,
        tally: Tally,
        stop: asyncio.Event,
    ) -> None:
        self._config = config
        self._renewer = renewer
        self._journal = journal
        self._gate = gate
        self._stream = stream
        self._tally = tally
        self._stop = stop
        self._deduper = Deduper()
        self._index = journal.index() if journal is not None else {}

    async def produce(
        self, queue: Queue, first: list[Device | InvalidRow], rows: Iterator[Device | InvalidRow]
    ) -> None:
        """Every row of the inventory, then one end-of-work marker per worker."""
        config, renewer = self._config, self._renewer
        held: list[Run] = []  # maintenance mode: renewed after the due check, soonest first
        async for item in _chunks(first, rows):
            if self._stop.is_set():
                break
            decision = decide(
                item,
                deduper=self._deduper,
                shard=config.scope.shard,
                journal_index=self._index,
                retry_failed=config.scope.retry_failed,
            )
            if isinstance(decision, Run):
                if renewer is None:
                    self._stream.emit(dry_run_outcome(decision.device), Origin(Kind.DECIDED))
                elif config.scope.due_rule is not None and decision.prior is None:
                    held.append(decision)
                else:
                    await self._dispatch(decision, queue)
            elif isinstance(decision, Resume):
                await self._resume(decision.device, queue)
            elif isinstance(decision, OutOfShard):
                self._tally.out_of_shard += 1
            else:
                self._stream.emit(decision, Origin(Kind.DECIDED))
        if held and not self._stop.is_set():
            await self._release_due(held, queue)
        if self._gate is not None and self._gate.pending is not None:
            await self._release_canary(queue)
        for _ in range(config.limits.workers if renewer is not None else 0):
            await queue.put(None)

    async def _release_due(self, held: list[Run], queue: Queue) -> None:
        """Maintenance mode: dispatch the held devices that are due, soonest expiry first."""
        config, renewer = self._config, self._renewer
        assert renewer is not None and config.scope.due_rule is not None
        due = await due_runs(
            held,
            renewer,
            config.scope.due_rule,
            workers=config.limits.workers,
            stop=self._stop,
            settle=self._settle,
        )
        for run in due:
            await self._dispatch(run, queue)

    def _settle(self, outcome: Outcome, device: Device) -> None:
        self._stream.emit(outcome, Origin(Kind.DECIDED, device))

    async def _dispatch(self, run: Run, queue: Queue) -> None:
        """Queue a run, unless the canary is still being collected."""
        if self._gate is None or not self._gate.hold(run):
            await queue.put(run)
        elif self._gate.full:
            await self._release_canary(queue)

    async def _release_canary(self, queue: Queue) -> None:
        assert self._gate is not None
        canary = self._gate.pick()
        log.info("canary: renewing %d devices first", len(canary))
        for run in canary:
            await queue.put(run)
        for run in await self._gate.judge(self._stop):
            await queue.put(run)

    async def _resume(self, device: Device, queue: Queue) -> None:
        """Report a device finished earlier; rewrite its bundle first if the files are gone."""
        assert self._journal is not None
        entry = self._journal.get(device.key)
        bundle = entry.bundle_path if entry is not None else None
        if (
            entry is not None
            and entry.cert_pem
            and bundle
            and not has_bundle(self._config.outputs.out_dir, bundle, entry.cert_pem)
        ):
            await queue.put(Run(device, State.BUNDLED))  # the renewer rewrites it from the journal
            return
        earlier = entry.outcome if entry is not None else None
        origin = Origin(Kind.RESUMED, earlier=earlier.status if earlier else Status.SKIPPED)
        self._stream.emit(resumed_outcome(device, earlier), origin)

    def vanished(self) -> list[str]:
        """Devices the journal knows from earlier runs that this inventory no longer lists,
        named `org/identity` for the reader."""
        shard = self._config.scope.shard
        return [
            shard_text(k) for k in self._index if in_shard(k, shard) and not self._deduper.seen(k)
        ]


def has_bundle(out_dir: Path, bundle_path: str, cert_pem: str) -> bool:
    """Whether the bundle holds the journal's certificate (bundles are not fsynced: a power
    cut may leave a file empty)."""
    try:
        written = read_bundle_file(out_dir, bundle_path, "cert.pem").decode()
    except (OSError, UnsafePathError, UnicodeDecodeError):
        return False
    return written.strip() == cert_pem.strip()


async def first_chunk(rows: Iterator[Device | InvalidRow]) -> list[Device | InvalidRow]:
    return await asyncio.to_thread(_take, rows, CHUNK)


async def _chunks(
    first: list[Device | InvalidRow], rows: Iterator[Device | InvalidRow]
) -> AsyncIterator[Device | InvalidRow]:
    chunk = first
    while chunk:
        for item in chunk:
            yield item
        chunk = await asyncio.to_thread(_take, rows, CHUNK)


def _take(rows: Iterator[Device | InvalidRow], n: int) -> list[Device | InvalidRow]:
    chunk: list[Device | InvalidRow] = []
    for item in rows:
        chunk.append(item)
        if len(chunk) >= n:
            break
    return chunk


def dry_run_outcome(device: Device) -> Outcome:
    return Outcome.skipped(device, note="dry run: would renew")
