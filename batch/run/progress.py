"""What the operator sees while the job runs: a tqdm bar on a terminal, plain log lines elsewhere.

Cron and Airflow capture stderr to a file, where a progress bar is noise: there the job logs one
line every `interval` seconds with done/total, rate and failures.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Literal

from tqdm import tqdm

from batch.model import Outcome, Status
from batch.run.stream import Origin

log = logging.getLogger("batch.run.progress")


class Progress:
    """Counts finished rows and shows them as a bar or as periodic log lines."""

    def __init__(
        self,
        *,
        mode: Literal["auto", "bar", "log", "off"] = "auto",
        total: int | None = None,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.mode = mode
        self.total = total
        self.interval = interval
        self._clock = clock
        self._started = clock()
        self.counts: Counter[Status] = Counter()
        self._bar = tqdm(total=total, unit="dev", dynamic_ncols=True) if mode == "bar" else None
        self._last_postfix = 0.0

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def update(self, outcome: Outcome) -> None:
        self.counts[outcome.status] += 1
        if self._bar is None:
            return
        self._bar.update(1)
        now = self._clock()
        if now - self._last_postfix >= 0.5:  # refreshing the postfix on every row costs CPU
            self._bar.set_postfix(failed=self.counts[Status.FAILED], refresh=False)
            self._last_postfix = now

    def on_outcome(self, outcome: Outcome, origin: Origin) -> None:
        self.update(outcome)

    def line(self) -> str:
        elapsed = max(self._clock() - self._started, 1e-9)
        done = self.done
        rate = done / elapsed
        of_total = f"/{self.total}" if self.total is not None else ""
        parts = [f"progress: {done}{of_total} rows"]
        parts += [f"{status.value}={self.counts[status]}" for status in Status]
        parts.append(f"{rate:.1f} rows/s")
        if self.total and rate > 0 and done < self.total:
            parts.append(f"eta {(self.total - done) / rate:.0f}s")
        return " ".join(parts)

    async def log_periodically(self) -> None:
        """Log a progress line every `interval` seconds until cancelled (log mode only)."""
        if self.mode != "log":
            return
        while True:
            await asyncio.sleep(self.interval)
            log.info(self.line())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
