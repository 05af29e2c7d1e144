"""One run of the job: set up (`batch.run.setup`), run the loop (`batch.run.loop`), sum up
(`batch.run.finish`).

Also the process-level concerns: the output folder is claimed for the whole run, SIGTERM/SIGINT
become a graceful stop (Airflow stops a task with SIGTERM), aborts become exit 3, and
summary.json is written however the run ended. A write the storage refused (`StorageError`)
ends the run with exit 4 once in-flight devices kept what they received.

`run` takes its monotonic clock, sleep and RNG (the real ones by default), so an end-to-end
test can run on a `batch.clock.FakeClock` and assert timings exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from batch.config import RunConfig
from batch.errors import StorageError
from batch.model import Device, InvalidRow
from batch.outputs import report
from batch.run import finish, setup
from batch.run.finish import EXIT_SIGNALS
from batch.run.loop import RunLoop
from batch.run.result import RunResult
from batch.run.setup import Timing
from batch.store.outdir import OutDir

DRY_RUN_DIR = "dry-run"


async def run(
    config: RunConfig,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    rng: random.Random | None = None,
) -> report.Summary:
    """Run the whole job; returns the summary (also written to summary.json)."""
    # The objects of the imports (pyarrow, cryptography, aiohttp: many) live as long as the
    # process: keep them out of the garbage collector's full scans during the run.
    gc.freeze()
    started = datetime.now(UTC)
    timing = Timing(clock=clock, sleep=sleep, rng=rng or random.Random())
    rows, fingerprint, total_rows = setup.open_inventory(config)
    with contextlib.ExitStack() as claims:
        # Held until the last output is written: no other command writes into this --out.
        claims.enter_context(OutDir.claim(config.outputs.out_dir))
        if config.dry_run:  # its own folder: a dry run never replaces a campaign's outputs
            outputs = dataclasses.replace(config.outputs, out_dir=output_folder(config))
            config = dataclasses.replace(config, outputs=outputs)
            claims.enter_context(OutDir.claim(outputs.out_dir))
        return await _run_claimed(config, rows, fingerprint, total_rows, started, timing)


def output_folder(config: RunConfig) -> Path:
    """Where the run's report and summary go: --out, or --out/dry-run/ for a dry run."""
    return config.outputs.out_dir / DRY_RUN_DIR if config.dry_run else config.outputs.out_dir


async def _run_claimed(
    config: RunConfig,
    rows: Iterator[Device | InvalidRow],
    fingerprint: str,
    total_rows: int,
    started: datetime,
    timing: Timing,
) -> report.Summary:
    """The run, once its output folder is claimed (`OutDir.claim` created it)."""
    result: RunResult | None = None
    closing: StorageError | None = None
    try:
        async with contextlib.AsyncExitStack() as stack:
            loop = await setup.set_up(config, stack, fingerprint, total_rows, timing)
            with _signals(loop), _fewer_young_collections():
                result = await loop.run(rows)
    except StorageError as exc:
        if result is None:
            raise  # at set-up: nothing was sent
        closing = exc  # report.csv's last rows could not be flushed
    assert result is not None  # every other way out of the loop raised
    writes = finish.Writes(result.storage_error or closing)
    summary = finish.summarise(config, result, started, writes)
    await finish.publish(config, summary, result, writes)
    if writes.failure is not None:
        raise writes.failure
    return summary


@contextlib.contextmanager
def _fewer_young_collections() -> Iterator[None]:
    """While devices are renewed: a young collection every 10,000 allocations, not 700.

    A renewal allocates hundreds of short-lived objects (aiohttp, answers, outcomes): at 700 a
    young collection ran every few devices, 4 % of a 3,000-device run's CPU (gc.callbacks), and
    at 10,000 most of those objects are freed by refcount before any scan. Restored before the
    end-of-run reports (their garbage is collected as usual) and for a caller's process.
    """
    threshold = gc.get_threshold()
    gc.set_threshold(10_000, 10, 10)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)


@contextlib.contextmanager
def _signals(loop: RunLoop) -> Iterator[None]:
    """SIGTERM/SIGINT stop the run loop instead of killing the process mid-write."""
    events = asyncio.get_running_loop()
    for sig in EXIT_SIGNALS:
        events.add_signal_handler(sig, loop.stop, sig)
    try:
        yield
    finally:
        for sig in EXIT_SIGNALS:
            events.remove_signal_handler(sig)
