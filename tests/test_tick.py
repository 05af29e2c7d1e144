"""TickBatcher: the calls of one event-loop tick go to the thread in one hand-off."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from batch.renew.tick import TickBatcher


class CountingPool(ThreadPoolExecutor):
    """A real one-thread pool that counts the jobs handed to it."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.jobs = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.jobs += 1
        return super().submit(fn, *args, **kwargs)


async def test_calls_of_one_tick_share_one_hand_off_and_keep_their_own_results() -> None:
    threads: list[str] = []

    def square(n: int) -> Callable[[], int]:
        def call() -> int:
            threads.append(threading.current_thread().name)
            if n == 3:
                raise ValueError("three")
            return n * n

        return call

    with CountingPool() as pool:
        batcher = TickBatcher(pool)
        results = await asyncio.gather(
            *(batcher.run(square(n)) for n in range(6)), return_exceptions=True
        )
        assert pool.jobs == 1  # six calls, one hand-off
        assert results[:3] == [0, 1, 4] and results[4:] == [16, 25]
        assert isinstance(results[3], ValueError) and str(results[3]) == "three"
        assert threading.main_thread().name not in threads and len(threads) == 6

        await batcher.run(square(7))  # a later tick: a hand-off of its own
        assert pool.jobs == 2


async def test_a_pool_that_is_shut_down_fails_every_call_of_the_tick() -> None:
    pool = ThreadPoolExecutor(max_workers=1)
    pool.shutdown()
    batcher = TickBatcher(pool)
    with pytest.raises(RuntimeError):
        await batcher.run(lambda: 1)
