"""The run's outputs besides bundles: report.csv/.parquet, summary.json and retry.csv.

`ReportWriter` appends one CSV row per finished inventory row and flushes it at once, so a run
killed with SIGKILL keeps every row it finished (the rows are in the kernel, not our buffer);
the run loop flushes once per event-loop tick instead (`write(flush=False)`, then `flush()`),
so a kill loses at most the rows of one tick, which the journal gives back on the rerun.
Measured on the shared 2-core dev machine, 100,000 rows: 2.46 s flushing every row against
2.36 s flushing never (best of 4; ~25 µs a row, nearly all formatting, ~1 µs the flush) in
isolation; in a run, each flush is also a hand-off of the GIL, hence one per tick.
`finish_reports` converts the CSV to a typed `report.parquet` when the run ends (a Parquet file
whose writer never closed is unreadable, so it is never written as we go).

Spreadsheet safety (CSV only): a text value that starts with `=`, `+`, `-`, `@`, a tab or a
carriage return could be run as a formula by a spreadsheet, so it is written with a leading
apostrophe. A value that is a plain number (`-1`, an invalid certSn shown as read) is left as
is, since a spreadsheet reads it as a number. A text value that itself starts with an
apostrophe gets one more, so the rule is reversible: `finish_reports` strips exactly one
leading apostrophe from text columns and the Parquet copy holds the original text. Numbers,
timestamps, booleans and enum values are never altered.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Self

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from batch import storage
from batch.inventory.read import write_inventory_csv
from batch.model import Device, ErrorClass, Outcome, Plain, Status, json_value
from batch.storage import atomic_output

if TYPE_CHECKING:
    from _csv import Writer  # the type csv.writer() returns

REPORT_CSV = "report.csv"
REPORT_PARQUET = "report.parquet"
SUMMARY_JSON = "summary.json"
RETRY_CSV = "retry.csv"

# Report column -> Outcome field, in report order; one per field of Outcome.
_FIELD_OF: dict[str, str] = {
    "row": "row",
    "orgId": "org_id",
    "assetId": "asset_id",
    "productKey": "product_key",
    "deviceKey": "device_key",
    "oldCertSn": "old_cert_sn",
    "status": "status",
    "errorClass": "error_class",
    "errorCode": "error_code",
    "errorMessage": "error_message",
    "attempts": "attempts",
    "newCertSn": "new_cert_sn",
    "currentCertSn": "current_cert_sn",
    "notBefore": "not_before",
    "notAfter": "not_after",
    "requestedDays": "requested_days",
    "grantedDays": "granted_days",
    "clamped": "clamped",
    "keyType": "key_type",
    "certSha256": "cert_sha256",
    "bundlePath": "bundle_path",
    "requestId": "request_id",
    "durationMs": "duration_ms",
    "resolution": "resolution",
    "canary": "canary",
    "note": "note",
}
REPORT_COLUMNS: tuple[str, ...] = tuple(_FIELD_OF)

_TYPED_COLUMNS: dict[str, pa.DataType] = {
    "row": pa.int64(),
    "errorCode": pa.int64(),
    "attempts": pa.int64(),
    "notBefore": pa.timestamp("us", tz="UTC"),
    "notAfter": pa.timestamp("us", tz="UTC"),
    "requestedDays": pa.int64(),
    "grantedDays": pa.int64(),
    "clamped": pa.bool_(),
    "canary": pa.bool_(),
    "durationMs": pa.int64(),
}
REPORT_SCHEMA = pa.schema([(c, _TYPED_COLUMNS.get(c, pa.string())) for c in REPORT_COLUMNS])

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")  # "'" keeps the rule reversible
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?", re.ASCII)
_CSV_BLOCK = 1 << 20  # bytes of CSV per Parquet batch (one reader thread): bounded memory


def neutralise(text: str) -> str:
    """Make `text` inert in a spreadsheet: prefix "'" when it could start a formula."""
    if text.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def _cell(value: Plain) -> str:
    """One report cell of a JSON value (`Outcome.to_json(utc=True)`): None empty, booleans
    true/false, text neutralised (enum values and UTC times never start like a formula, so
    they pass unchanged)."""
    if value is None:
        return ""
    if type(value) is str:  # the common case first
        return neutralise(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return neutralise(value)
    raise TypeError(f"no report format for {type(value).__name__}")


def report_cells(outcome: Outcome) -> list[str]:
    """The CSV cells of one outcome, in `REPORT_COLUMNS` order."""
    document = outcome.to_json(utc=True)
    return [_cell(document[name]) for name in _FIELD_OF.values()]


class ReportWriter:
    """Append outcomes to `<out_dir>/report.csv` as they finish, counting them as it goes."""

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.path = Path(out_dir) / REPORT_CSV
        self.rows_written = 0
        self._stream: IO[str] | None = None
        self._writer: Writer | None = None
        self._by_status: Counter[Status] = Counter()
        self._by_class: Counter[ErrorClass] = Counter()

    def __enter__(self) -> Self:
        with storage.translated(f"cannot write {self.path}"):
            storage.make_dirs(self.path.parent)
            fd = storage.create_file(self.path)
            self._stream = open(fd, "w", newline="", encoding="utf-8")
            # "\r\n" (RFC 4180) also makes the csv module quote values holding a lone "\r".
            self._writer = csv.writer(self._stream, lineterminator="\r\n")
            self._writer.writerow(REPORT_COLUMNS)
            self._stream.flush()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stream is None:
            return
        stream, self._stream = self._stream, None
        with storage.translated(f"cannot write {self.path}"):
            try:
                stream.flush()
                os.fsync(stream.fileno())
            finally:
                with contextlib.suppress(OSError):  # rows that could not be written are lost
                    stream.close()  # here, not in the journal: the rerun writes them again

    def write(self, outcome: Outcome, *, flush: bool = True) -> None:
        """Append one row and hand it to the kernel at once (a kill loses none); with
        `flush=False` the caller hands rows over with `flush()` (e.g. once per loop tick)."""
        if self._stream is None or self._writer is None:
            raise RuntimeError("ReportWriter.write() outside its `with` block")
        try:  # not `storage.translated`: this runs for every row, and a try costs nothing
            self._writer.writerow(report_cells(outcome))
            if flush:
                self._stream.flush()
        except OSError as exc:
            if not storage.is_storage_error(exc):
                raise
            raise storage.storage_error(exc, f"cannot write {self.path}") from exc
        self.rows_written += 1
        self._by_status[outcome.status] += 1
        if outcome.error_class is not None:
            self._by_class[outcome.error_class] += 1

    def flush(self) -> None:
        """Hand the rows written so far to the kernel (nothing to do once closed)."""
        if self._stream is None:
            return
        try:
            self._stream.flush()
        except OSError as exc:
            if not storage.is_storage_error(exc):
                raise
            raise storage.storage_error(exc, f"cannot write {self.path}") from exc

    @property
    def counts_by_status(self) -> dict[Status, int]:
        """Rows written per status, every status present (zero when none)."""
        return {status: self._by_status[status] for status in Status}

    @property
    def counts_by_class(self) -> dict[ErrorClass, int]:
        """Rows written per error class, only the classes that occurred."""
        return dict(self._by_class)


def finish_reports(out_dir: str | os.PathLike[str], *, block_size: int = _CSV_BLOCK) -> Path:
    """Convert report.csv into a typed report.parquet, streaming; return the Parquet path.

    Memory stays bounded by `block_size` bytes of CSV per batch; each batch is a row group.
    """
    source = Path(out_dir) / REPORT_CSV
    target = Path(out_dir) / REPORT_PARQUET
    reader = pa_csv.open_csv(
        source,
        read_options=pa_csv.ReadOptions(block_size=block_size, use_threads=False),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types=dict(zip(REPORT_SCHEMA.names, REPORT_SCHEMA.types, strict=True)),
            include_columns=list(REPORT_COLUMNS),
            strings_can_be_null=True,
            null_values=[""],  # only an empty cell is None: "NA" or "null" may be real text
            true_values=["true"],
            false_values=["false"],
        ),
    )
    with atomic_output(target) as stream, pq.ParquetWriter(stream, REPORT_SCHEMA) as writer:
        for batch in reader:
            writer.write_batch(_restore_text(batch))
    # The reader leaves its freed buffers in pyarrow's allocator (~60 MB for 100,000 rows,
    # while the pool reports 8-17 MB in use): hand them back, or report.html's charts are
    # drawn on top of them and the run's peak is conversion plus charts.
    pa.default_memory_pool().release_unused()
    return target


def _restore_text(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Undo `neutralise` on the text columns: drop exactly one leading apostrophe."""
    columns = []
    for column in batch.columns:
        if pa.types.is_string(column.type):
            quoted = pc.starts_with(column, "'")
            column = pc.if_else(quoted, pc.utf8_slice_codeunits(column, 1), column)
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, schema=REPORT_SCHEMA)


# --- summary ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Summary:
    """What a run did, for summary.json and the closing lines of the log."""

    counts_by_status: Mapping[Status, int]
    counts_by_class: Mapping[ErrorClass, int]
    devices: int  # inventory rows seen
    requests: int  # renewal requests sent, retries included
    request_span_s: float | None = None  # from the first request's start to the last one's
    started: datetime
    finished: datetime
    configured_rate: float  # requests/s
    exit_code: int
    aborted_reason: str | None = None
    sandbox: bool = False
    extra: Mapping[str, object] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return (self.finished - self.started).total_seconds()

    @property
    def achieved_rate(self) -> float:
        """Renewal requests per second while requesting: the rate the limiter held.

        Measured from the first request's start to the last one's, so the set-up before the
        first request and the report writing after the last answer (both in `duration_s`) do
        not count; without a span (a merged campaign), over the whole run. 0 for an instant run.
        """
        if self.request_span_s and self.requests > 1:
            return (self.requests - 1) / self.request_span_s
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def to_json(self) -> dict[str, object]:
        """The summary.json document."""
        return {
            "counts_by_status": {str(k): v for k, v in self.counts_by_status.items()},
            "counts_by_class": {str(k): v for k, v in self.counts_by_class.items()},
            "devices": self.devices,
            "requests": self.requests,
            "started": _iso(self.started),
            "finished": _iso(self.finished),
            "duration_s": round(self.duration_s, 3),
            "achieved_rate": round(self.achieved_rate, 2),
            "request_span_s": _rounded(self.request_span_s),
            "configured_rate": self.configured_rate,
            "exit_code": self.exit_code,
            "aborted_reason": self.aborted_reason,
            "sandbox": self.sandbox,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Summary:
        """The Summary a summary.json document holds (what `merge` reads back from a shard);
        `duration_s` and `achieved_rate` are derived from it, not read."""
        return cls(
            counts_by_status={Status(k): v for k, v in document["counts_by_status"].items()},
            counts_by_class={ErrorClass(k): v for k, v in document["counts_by_class"].items()},
            devices=int(document["devices"]),
            requests=int(document["requests"]),
            request_span_s=document.get("request_span_s"),
            started=datetime.fromisoformat(document["started"]),
            finished=datetime.fromisoformat(document["finished"]),
            configured_rate=float(document["configured_rate"]),
            exit_code=document["exit_code"],
            aborted_reason=document.get("aborted_reason") or None,
            sandbox=bool(document.get("sandbox")),
            extra=dict(document.get("extra", {})),
        )


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def _iso(value: datetime) -> str:
    return str(json_value(value, utc=True))


def summary_json_default(value: object) -> Plain:
    """`json.dumps`'s `default` for summary documents: values of `extra` rendered as every
    other value of the document (times in UTC); anything not JSON is a bug (TypeError)."""
    return json_value(value, utc=True)


def write_summary(out_dir: str | os.PathLike[str], summary: Summary) -> Path:
    """Write `<out_dir>/summary.json` atomically; return its path."""
    path = Path(out_dir) / SUMMARY_JSON
    text = json.dumps(summary.to_json(), indent=2, default=summary_json_default) + "\n"
    with atomic_output(path) as stream:
        stream.write(text.encode())
    return path


def render_summary(summary: Summary) -> str:
    """A one-screen, plain-text account of the run for a terminal or a log."""
    where = " against the built-in simulator (sandbox)" if summary.sandbox else ""
    lines = [f"fleet-renew finished in {summary.duration_s:.1f} s{where}"]
    lines.append(f"  devices   {summary.devices:>9}")
    lines += [f"  {s.value:<9} {summary.counts_by_status.get(s, 0):>9}" for s in Status]
    classes = sorted(summary.counts_by_class.items(), key=lambda kv: (-kv[1], kv[0].value))
    if classes:
        lines.append("  by error class:")
        lines += [f"    {c.value:<28} {n:>9}" for c, n in classes]
    lines.append(
        f"  rate      {summary.achieved_rate:.1f} requests/s achieved,"
        f" {summary.configured_rate:g} configured ({summary.requests} requests)"
    )
    if summary.aborted_reason:
        lines.append(f"  ABORTED: {summary.aborted_reason}")
    lines.append(f"  exit code {summary.exit_code}")
    return "\n".join(lines)


def exit_code_for(counts_by_status: Mapping[Status, int], aborted: bool) -> int:
    """3 when aborted; 1 when any row failed or was invalid; else 0 (2 is raised earlier)."""
    if aborted:
        return 3
    if counts_by_status.get(Status.FAILED, 0) or counts_by_status.get(Status.INVALID, 0):
        return 1
    return 0


def write_retry_csv(out_dir: str | os.PathLike[str], devices: Iterable[Device]) -> int:
    """Write `<out_dir>/retry.csv` in inventory format (header only when empty); return count."""
    return write_inventory_csv(Path(out_dir) / RETRY_CSV, devices)
