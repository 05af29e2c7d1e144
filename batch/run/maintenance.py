"""Maintenance mode (--due-within): which of the held devices are due, soonest expiry first.

The inventory's expiry decides where it has one; the others are looked up with List
Certificate by `workers` concurrent lookups. A device that is not due (or whose lookup failed)
is settled at once: it gets its report row now.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from batch.config import DueRule
from batch.model import Device, Outcome
from batch.plan.decide import Run
from batch.renew.current import maintenance_verdict
from batch.renew.device import Renewer
from batch.renew.due import Due, lookup, verdict_from_inventory
from batch.renew.retry import Retrier

log = logging.getLogger(__name__)

Settle = Callable[[Outcome, Device], None]


async def due_runs(
    held: list[Run],
    renewer: Renewer,
    rule: DueRule,
    *,
    workers: int,
    stop: asyncio.Event,
    settle: Settle,
) -> list[Run]:
    """The held devices that are due, soonest expiry first; the others go to `settle`."""
    now = datetime.now(UTC)
    due: list[Due] = []
    lookups: list[Device] = []
    for run in held:
        verdict = verdict_from_inventory(run.device, rule, now)
        if verdict is None:
            lookups.append(run.device)
        elif isinstance(verdict, Due):
            due.append(verdict)
        else:
            settle(verdict, run.device)
    log.info("maintenance: %d certificates to look up with List Certificate", len(lookups))
    pending = iter(lookups)
    async with asyncio.TaskGroup() as tg:
        for _ in range(workers):
            tg.create_task(_look_up(pending, renewer, rule, now, stop, due, settle))
    far = datetime.max.replace(tzinfo=UTC)  # unknown expiry: after every known one
    due.sort(key=lambda d: d.expires or far)
    return [Run(d.device, follow=d.follow) for d in due]


async def _look_up(
    pending: Iterator[Device],
    renewer: Renewer,
    rule: DueRule,
    now: datetime,
    stop: asyncio.Event,
    due: list[Due],
    settle: Settle,
) -> None:
    r = renewer
    retrier = Retrier(r.limiter, r.policy, r.rng, r.sleep)
    for device in pending:
        if stop.is_set():
            return
        found = await lookup(retrier, r.client, device)
        verdict = (
            found if isinstance(found, Outcome) else maintenance_verdict(device, found, rule, now)
        )
        if isinstance(verdict, Due):
            due.append(verdict)
        else:
            settle(verdict, device)
