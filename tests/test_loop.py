"""The run loop's stop: the grace period is a deadline on everything still running."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from batch.testing import fleet, run_job, simulator, write_inventory


async def test_a_stop_while_the_queue_is_full_ends_at_the_grace_deadline(tmp_path: Path) -> None:
    """SIGTERM while the only worker waits on a slow answer and the queue is full: the intake,
    blocked on that queue, ends with the worker at the grace deadline (it used to wait forever
    for a worker that was gone). The rerun takes the in-flight renewal from List, renews the
    rest, and no device is renewed twice."""
    rows = fleet(3)
    inventory = write_inventory(tmp_path / "inventory.csv", rows)
    out = tmp_path / "out"
    async with simulator(rows, tmp_path, latency_ms=1000, list_includes_pem=True) as sim:
        # One worker and a queue of two: devices 2 and 3 wait in it, the end marker cannot.
        task = asyncio.create_task(run_job(sim, inventory, out, concurrency=1, grace_seconds=0.1))
        while not sim.stats.requests["renew"]:
            await asyncio.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)
        stopped = await asyncio.wait_for(task, timeout=20)
        rerun = await run_job(sim, inventory, out)
        state = sim.state_dict()["devices"]
    assert (stopped.summary.exit_code, stopped.summary.extra["stoppedBy"]) == (143, "SIGTERM")
    assert stopped.rows == []  # the in-flight device was cancelled: its intent is in the journal
    assert rerun.summary.exit_code == 0
    assert {r["deviceKey"]: r["status"] for r in rerun.rows} == {
        "dev-0000": "renewed",
        "dev-0001": "renewed",
        "dev-0002": "renewed",
    }
    assert rerun.by_device()["dev-0000"]["resolution"] == "reconciled"
    assert [device["renewals"] for device in state.values()] == [1, 1, 1]
