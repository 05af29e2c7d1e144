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
"""

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
