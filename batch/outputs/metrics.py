"""metrics.prom: the run's numbers in Prometheus text format, for node_exporter's textfile reader.

Every metric is a gauge describing the last run written to this output folder (a textfile
collector re-reads the file on every scrape, so counters would be misleading):

    fleet_renew_renewals{status}                 inventory rows by final state
    fleet_renew_errors{error_class}              rows by error class (every class, 0 when none)
    fleet_renew_attempts                         renewal attempts (sum of the attempts column)
    fleet_renew_requests                         API requests sent through the rate limiter
    fleet_renew_throttled                        HTTP 429 answers
    fleet_renew_duration_seconds                 wall time of the run
    fleet_renew_exit_code                        the process exit code
    fleet_renew_aborted                          1 when the run stopped itself (exit 3)
    fleet_renew_ca_changes                       issuing CAs new to the campaign (see --pin-ca)
    fleet_renew_earliest_not_after_seconds       earliest notAfter issued (unix s); absent if none
    fleet_renew_last_run_timestamp_seconds       when the run finished (unix s)

Point an alert at `fleet_renew_earliest_not_after_seconds - time()` and at `exit_code != 0`.
report.parquet is read in batches of two columns, so a 1M-row report costs little memory.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from batch.model import ErrorClass, Status
from batch.outputs.report import REPORT_PARQUET, Summary
from batch.storage import atomic_output

METRICS_PROM = "metrics.prom"
PREFIX = "fleet_renew_"
_BATCH_ROWS = 65_536


def write_metrics(out_dir: Path, summary: Summary) -> Path:
    """Write `<out_dir>/metrics.prom` atomically (mode 0644) and return its path.

    Not prometheus_client's write_to_textfile: its temporary file takes the umask's mode (0666
    under umask 000) and a killed run leaves it under a name the next run cannot recognise.
    """
    path = Path(out_dir) / METRICS_PROM
    attempts, earliest = read_attempts_and_earliest(Path(out_dir) / REPORT_PARQUET)
    registry = build_registry(summary, attempts=attempts, earliest_not_after=earliest)
    with atomic_output(path) as stream:
        stream.write(generate_latest(registry))
    return path


def build_registry(
    summary: Summary, *, attempts: int, earliest_not_after: datetime | None
) -> CollectorRegistry:
    """A fresh registry holding the run's gauges (never the process-global one)."""
    registry = CollectorRegistry(auto_describe=True)

    def gauge(name: str, doc: str, value: float) -> None:
        Gauge(PREFIX + name, doc, registry=registry).set(value)

    renewals = Gauge(
        PREFIX + "renewals", "Inventory rows by final state", ["status"], registry=registry
    )
    for status in Status:
        renewals.labels(status=status.value).set(summary.counts_by_status.get(status, 0))
    errors = Gauge(PREFIX + "errors", "Rows by error class", ["error_class"], registry=registry)
    for error_class in ErrorClass:
        errors.labels(error_class=error_class.value).set(
            summary.counts_by_class.get(error_class, 0)
        )
    throttled = summary.extra.get("throttled", 0)
    gauge("attempts", "Renewal attempts, retries included", attempts)
    gauge("requests", "API requests sent through the rate limiter", summary.requests)
    gauge("throttled", "HTTP 429 answers", throttled if isinstance(throttled, int) else 0)
    gauge("duration_seconds", "Wall time of the run", summary.duration_s)
    gauge("exit_code", "Exit code of the run", summary.exit_code)
    gauge("aborted", "1 when the run stopped itself", 1 if summary.aborted_reason else 0)
    ca_changes = summary.extra.get("caChanges", 0)
    gauge(
        "ca_changes",
        "Issuing CAs not seen before in this campaign",
        ca_changes if isinstance(ca_changes, int) else 0,
    )
    if earliest_not_after is not None:
        gauge(
            "earliest_not_after_seconds",
            "Earliest notAfter of the certificates issued, unix seconds",
            earliest_not_after.timestamp(),
        )
    gauge(
        "last_run_timestamp_seconds",
        "When the run finished, unix seconds",
        summary.finished.timestamp(),
    )
    return registry


def read_attempts_and_earliest(path: Path) -> tuple[int, datetime | None]:
    """Sum of `attempts` over all rows, and the earliest `notAfter` of renewed rows."""
    attempts = 0
    earliest: datetime | None = None
    columns = ["status", "attempts", "notAfter"]
    for batch in pq.ParquetFile(path).iter_batches(batch_size=_BATCH_ROWS, columns=columns):
        attempts += pc.sum(batch.column("attempts")).as_py() or 0
        renewed = pc.equal(batch.column("status"), Status.RENEWED.value)
        first = pc.min(pc.filter(batch.column("notAfter"), renewed)).as_py()
        if first is not None and (earliest is None or first < earliest):
            earliest = first
    return attempts, earliest
