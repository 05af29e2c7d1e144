"""Blocking work of many coroutines, handed to a thread once per event-loop tick, not per call.

Each `run_in_executor` costs a future, a wake-up of the pool's thread and a wake-up of the
event loop through its self-pipe, and the two threads then trade the GIL: at hundreds of
renewals a second those hand-offs cost more CPU than the bundle files they carry (issue 13,
measured with py-spy and per-thread CPU). `TickBatcher` collects the calls made during one
tick of the loop and runs them in order in one executor job; one `call_soon_threadsafe` hands
all the results back. Each call still gets its own result or its own exception.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar, cast

R = TypeVar("R")

_Result = tuple[object, BaseException | None]


class TickBatcher:
    """`await run(call)`: `call()` runs in `executor` with the other calls of the same tick."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._pending: list[tuple[Callable[[], object], asyncio.Future[object]]] = []

    async def run(self, call: Callable[[], R]) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._hand_off, loop)  # after the other ready callbacks of this tick
        self._pending.append((call, future))
        return cast(R, await future)  # each future holds its own call's result

    def _hand_off(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._pending = self._pending, []
        calls = [call for call, _ in batch]
        futures = [future for _, future in batch]

        def done(results: list[_Result]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_resolve, futures, results)

        try:
            self._executor.submit(_run_all, calls, done)
        except RuntimeError as exc:  # the pool is shut down: every call fails with that
            _resolve(futures, [(None, exc)] * len(futures))


def _run_all(calls: list[Callable[[], object]], done: Callable[[list[_Result]], None]) -> None:
    results: list[_Result] = []
    for call in calls:
        try:
            results.append((call(), None))
        except BaseException as exc:  # handed to that call's future, which re-raises it
            results.append((None, exc))
    done(results)


def _resolve(futures: list[asyncio.Future[object]], results: list[_Result]) -> None:
    for future, (value, error) in zip(futures, results, strict=True):
        if future.cancelled():
            continue  # the caller stopped waiting; the call ran regardless
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
