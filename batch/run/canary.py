"""The canary: renew a first small batch spread across orgs and products, and go on only if it
went well. A campaign over a whole fleet is a risky change; this is how device rollouts limit
the damage of a bad one (a wrong validity, a CSR template EnOS rejects, a permission missing).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import defaultdict, deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from batch.config import parse_canary
from batch.errors import AbortedError
from batch.model import Device, Outcome, Status
from batch.plan.decide import Run

log = logging.getLogger(__name__)

T = TypeVar("T")

WINDOW_FACTOR = 10  # the canary is picked among the first size*10 devices (at least 1,000)


@dataclass(frozen=True, slots=True, kw_only=True)
class CanaryRule:
    """How big the canary is and how many of its devices may fail."""

    size: int
    max_failure_rate: float = 0.0

    @property
    def window(self) -> int:
        """How many runnable devices to look at to pick a spread-out canary."""
        return max(self.size * WINDOW_FACTOR, 1000)


def canary_size(text: str, total_rows: int) -> int:
    """'50' devices, or '2%' of the inventory's rows (at least one device)."""
    value = parse_canary(text)
    return max(1, math.ceil(value * total_rows)) if isinstance(value, float) else value


def spread(
    items: Sequence[T], size: int, group_of: Callable[[T], Hashable]
) -> tuple[list[T], list[T]]:
    """Pick `size` items round-robin over their groups; return (picked, rest), both in order."""
    groups: dict[Hashable, deque[int]] = defaultdict(deque)
    for index, item in enumerate(items):
        groups[group_of(item)].append(index)
    picked: set[int] = set()
    queues = deque(groups.values())
    while queues and len(picked) < size:
        queue = queues.popleft()
        picked.add(queue.popleft())
        if queue:
            queues.append(queue)
    chosen = [x for i, x in enumerate(items) if i in picked]
    return chosen, [x for i, x in enumerate(items) if i not in picked]


def org_and_product(device: Device) -> tuple[str, str]:
    return (device.org_id, device.product_key or "")


def verdict(rule: CanaryRule, failed: int, finished: int) -> str | None:
    """Why the campaign must stop after its canary, or None to go on."""
    if finished == 0:
        return None
    if failed / finished > rule.max_failure_rate:
        return (
            f"canary failed: {failed} of {finished} canary devices failed "
            f"(--canary-max-failures {rule.max_failure_rate:.0%}); nothing else was renewed"
        )
    return None


class CanaryGate:
    """Holds the first runnable devices, releases a spread-out canary, judges it, then the rest.

    The producer `hold`s runs until the window is full (or the inventory ends), then `pick`s the
    canary and feeds it to the workers; workers `record` each finished canary device; `judge`
    waits for all of them (or a stop) and raises AbortedError when too many failed.
    """

    def __init__(self, rule: CanaryRule) -> None:
        self.rule = rule
        self.pending: list[Run] | None = []
        self.keys: set[str] = set()
        self.failed = 0
        self.finished = 0
        self._rest: list[Run] = []
        self._done = asyncio.Event()

    def hold(self, run: Run) -> bool:
        """Keep `run` back while the canary is being collected; False once it has been picked."""
        if self.pending is None:
            return False
        self.pending.append(run)
        return True

    @property
    def full(self) -> bool:
        return self.pending is not None and len(self.pending) >= self.rule.window

    def pick(self) -> list[Run]:
        canary, self._rest = spread(self.pending or [], self.rule.size, _group_of_run)
        self.pending = None
        self.keys = {run.device.key for run in canary}
        if not canary:
            self._done.set()
        return canary

    def record(self, outcome: Outcome, device: Device) -> Outcome:
        """Count a finished device; a canary device's outcome comes back marked."""
        if device.key not in self.keys:
            return outcome
        self.finished += 1
        self.failed += outcome.status is Status.FAILED
        if self.finished == len(self.keys):
            self._done.set()
        return replace(outcome, canary=True)

    def release(self) -> None:
        """The run is stopping: stop waiting for the canary."""
        self._done.set()

    async def judge(self, stop: asyncio.Event) -> list[Run]:
        """The rest of the held runs once the canary passed; [] if the run is stopping."""
        await self._done.wait()
        if stop.is_set():
            return []
        reason = verdict(self.rule, self.failed, self.finished)
        if reason is not None:
            raise AbortedError(reason)
        log.info("canary passed: %d of %d failed; going on", self.failed, self.finished)
        return self._rest


def _group_of_run(run: Run) -> tuple[str, str]:
    return org_and_product(run.device)
