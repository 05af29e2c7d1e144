"""The run's stop: the grace period is a deadline that starts when the stop arrives."""

from __future__ import annotations

import asyncio
import signal

import pytest

from batch.run.stop import Stop


async def test_work_in_the_block_gets_the_grace_period_then_is_cancelled() -> None:
    stop = Stop(0.05)
    finished: list[float] = []
    cancelled: list[float] = []

    async def in_flight(seconds: float) -> None:
        try:
            await asyncio.sleep(seconds)
            finished.append(seconds)
        except asyncio.CancelledError:
            cancelled.append(seconds)
            raise

    async with stop.grace(), asyncio.TaskGroup() as tg:
        tg.create_task(in_flight(0.01))  # ends within the grace period
        tg.create_task(in_flight(30))  # would outlive it
        asyncio.get_running_loop().call_soon(stop, signal.SIGTERM)
    assert (finished, cancelled) == ([0.01], [30])  # and the block ended without an error
    assert stop.signal is signal.SIGTERM


async def test_without_a_stop_there_is_no_deadline() -> None:
    stop = Stop(0.0)
    async with stop.grace():
        await asyncio.sleep(0.05)  # longer than the grace period: nothing cancels it
    assert not stop.is_set()


async def test_a_stop_before_the_block_starts_the_deadline_when_the_block_begins() -> None:
    released: list[bool] = []
    stop = Stop(0.0, on_stop=lambda: released.append(True))
    stop()  # e.g. SIGTERM while the first inventory chunk was read
    assert released == []  # nothing in flight yet
    slept: list[bool] = []
    async with asyncio.timeout(5):  # a deadline never set would let the sleep run: TimeoutError
        async with stop.grace():
            await asyncio.sleep(30)
            slept.append(True)
    assert released == [True]
    assert slept == []  # cut short by the grace deadline, not finished


async def test_only_the_first_signal_is_remembered_and_the_grace_starts_once() -> None:
    released: list[bool] = []
    stop = Stop(30, on_stop=lambda: released.append(True))
    async with stop.grace():
        stop(signal.SIGINT)
        stop(signal.SIGTERM)
        stop()  # a refused write after the signal
    assert (stop.signal, released) == (signal.SIGINT, [True])


async def test_a_timeout_error_that_is_not_the_deadlines_propagates() -> None:
    """A bug's TimeoutError is not taken for the end of the grace period."""
    stop = Stop(30)
    with pytest.raises(TimeoutError):
        async with stop.grace():
            stop()
            raise TimeoutError
