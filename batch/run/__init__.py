"""The run stage: the job around the run loop, and the loop's parts.

    job        run(config, clock=, sleep=, rng=) -> Summary: set up, run the loop, sum up
    setup      the checked inventory, endpoint, journal, renewer, report writer -> RunLoop
    loop       RunLoop.run(rows) -> RunResult (result): the intake and the workers
    intake     decide each row and feed the workers (canary, maintenance, resume)
    stop       SIGTERM/SIGINT or refused storage: no new devices, a grace deadline
    stream     one stream of outcomes and its subscribers: report rows, tally, retry list
    breaker    the circuit breaker, a subscriber that may stop the run
    finish     report.parquet, retry.csv, summary.json, report.html, metrics, notification
    progress   the bar or log lines; canary: the first batch and its verdict

The names below are imported when first used: `fleet-renew --help` and the commands that never
run the job (plan, merge) do not pay the ~0.7 s of importing it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batch.run.breaker import Breaker, BreakerRule
    from batch.run.canary import CanaryRule
    from batch.run.job import output_folder, run
    from batch.run.loop import RunLoop
    from batch.run.progress import Progress
    from batch.run.result import Requests, RunResult, Totals
    from batch.run.setup import Timing
    from batch.run.stream import Kind, Origin, OutcomeSink, OutcomeStream

__all__ = [
    "Breaker",
    "BreakerRule",
    "CanaryRule",
    "Kind",
    "Origin",
    "OutcomeSink",
    "OutcomeStream",
    "Progress",
    "Requests",
    "RunLoop",
    "RunResult",
    "Timing",
    "Totals",
    "output_folder",
    "run",
]

_HOMES = {
    "Breaker": "breaker",
    "BreakerRule": "breaker",
    "CanaryRule": "canary",
    "Kind": "stream",
    "Origin": "stream",
    "OutcomeSink": "stream",
    "OutcomeStream": "stream",
    "Progress": "progress",
    "Requests": "result",
    "RunLoop": "loop",
    "RunResult": "result",
    "Timing": "setup",
    "Totals": "result",
    "output_folder": "job",
    "run": "job",
}


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
