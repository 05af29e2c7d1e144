"""After the loop: report.parquet, retry.csv, summary.json, then report.html, metrics.prom and
the notification, however the run ended.

After a write the storage refused, each output is still attempted (so a summary is written when
it can be) and the first refusal ends the run with exit 4.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from datetime import UTC, datetime

from batch import storage
from batch.config import RunConfig
from batch.errors import StorageError
from batch.outputs import html as html_report
from batch.outputs import metrics, next_inventory, notify, report
from batch.run.result import RunResult

log = logging.getLogger(__name__)

EXIT_SIGNALS = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Writes:
    """Outputs written one by one after a storage failure: each is attempted, the first
    refusal is kept (it ends the run with exit 4)."""

    def __init__(self, failure: StorageError | None) -> None:
        self.failure = failure

    def attempt(self, what: str, write: Callable[[], object]) -> None:
        try:
            with storage.translated(f"cannot write {what}"):
                write()
        except StorageError as exc:
            log.error("%s", exc.message)
            self.failure = self.failure or exc


def summarise(
    config: RunConfig, result: RunResult, started: datetime, writes: Writes
) -> report.Summary:
    """Parquet copy, retry list and summary.json, however the run ended."""
    totals, requests = result.totals, result.requests
    out_dir = config.outputs.out_dir
    os.sync()  # bundles are written without fsync each (the journal is the durable record)
    writes.attempt(report.REPORT_PARQUET, lambda: report.finish_reports(out_dir))
    retry = result.retry
    writes.attempt(report.RETRY_CSV, lambda: report.write_retry_csv(out_dir, retry))
    if writes.failure is not None:
        exit_code = writes.failure.exit_code
    elif result.stop_signal is not None:
        exit_code = EXIT_SIGNALS[result.stop_signal]
    else:
        exit_code = report.exit_code_for(totals.campaign, aborted=result.aborted is not None)
    summary = report.Summary(
        counts_by_status=dict(totals.by_status),
        counts_by_class=dict(totals.by_class),
        devices=sum(totals.by_status.values()),
        requests=requests.sent,
        request_span_s=requests.span_s,
        started=started,
        finished=datetime.now(UTC),
        configured_rate=config.limits.rate,
        exit_code=exit_code,
        aborted_reason=result.aborted,
        sandbox=config.endpoint.sandbox,
        extra={
            "campaign": {status.value: n for status, n in totals.campaign.items()},
            "outOfShard": totals.out_of_shard,
            "throttled": requests.throttled,
            "stoppedBy": result.stop_signal.name if result.stop_signal else None,
            "vanished": len(result.vanished),
            "vanishedDevices": list(result.vanished[:100]),
            "dryRun": config.dry_run,
            "caChanges": result.ca_changes,
            "storageError": writes.failure.message if writes.failure else None,
        },
    )
    writes.attempt(report.SUMMARY_JSON, lambda: report.write_summary(out_dir, summary))
    next_inventory.write_for_run(config.scope, out_dir, out_dir / report.REPORT_PARQUET)
    return summary


async def publish(
    config: RunConfig, summary: report.Summary, result: RunResult, writes: Writes
) -> None:
    """report.html, metrics.prom and the notification, once the summary is written."""
    out_dir = config.outputs.out_dir
    if (out_dir / report.REPORT_PARQUET).exists():
        # Charts take a second or more for a large report: keep them off the event loop.
        samples = result.samples
        await asyncio.to_thread(
            writes.attempt,
            "report.html",
            lambda: html_report.write_html_report(out_dir, summary, samples),
        )
        writes.attempt("metrics.prom", lambda: metrics.write_metrics(out_dir, summary))
    else:
        log.error("report.html and metrics.prom not written: they are made from report.parquet")
    if config.outputs.notify_url:
        await notify.notify(config.outputs.notify_url, summary)  # a failure is logged, never fatal
