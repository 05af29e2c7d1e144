"""`batch.run.job.run` takes its clock, sleep and RNG: end-to-end timings become exact."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from batch.clock import FakeClock
from batch.renew.retry import RetryPolicy
from batch.testing import fleet, job


async def test_on_a_fake_clock_the_retry_backoff_is_the_devices_whole_time_exactly(
    tmp_path: Path,
) -> None:
    """A device whose first renewal answers 99500 is reconciled, then renewed after one backoff.

    On the FakeClock that backoff is the only time that passes (the simulator's answers take
    none), so the device's durationMs and the run's request span are exactly that wait; on real
    time both would carry the loopback's latency. The same seed draws the same wait.
    """
    waits = []
    for name in ("first", "again"):
        folder = tmp_path / name
        folder.mkdir()
        clock = FakeClock()
        start = clock.now
        result = await job(
            folder, fleet(1, sandbox="flaky"), clock=clock, sleep=clock.sleep, rng=random.Random(7)
        )
        [row] = result.rows
        assert (row["status"], row["attempts"]) == ("renewed", "2"), row
        [wait] = clock.sleeps  # one backoff; the rate limiter never had to wait
        assert 0 < wait <= RetryPolicy().base_delay  # the first ceiling of the full jitter
        assert int(row["durationMs"]) == round(wait * 1000)
        # From the first request's start to the last one's: the wait, and nothing else.
        assert result.summary.request_span_s == clock.now - start == pytest.approx(wait, rel=1e-12)
        waits.append(wait)
    assert waits[0] == waits[1]
