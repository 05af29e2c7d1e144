"""report.html: one self-contained, offline page that shows an operator how a run went.

The page holds everything inline: CSS in a `<style>` element, charts as SVG written by
`batch.outputs.charts` (text in the page's own system font), no script, no image, no font and
no link to any URL. A Content-Security-Policy that forbids every fetch makes that a promise the
browser keeps even if a future edit slips.

Every value that comes from the data (device ids, error messages, `extra`) is HTML-escaped:
an inventory is untrusted input and a device id may well be `<script>`.

report.parquet is read in one streaming pass over only the columns the page needs; what is kept
is bounded (the durations, 8 bytes a row; at most `TABLE_ROWS` failed and clamped rows; the
distinct validity pairs), so a 1M-row report stays within memory.
"""

from __future__ import annotations

import html
import json
import re
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batch.model import ErrorClass, Status
from batch.outputs import charts, stats
from batch.outputs.report import REPORT_PARQUET, Summary
from batch.outputs.timeline import Sample, timeline_rates
from batch.storage import atomic_output

REPORT_HTML = "report.html"
TABLE_ROWS = 1000  # failed / clamped devices listed in full; the rest are counted

# What the exit code tells the operator (batch.errors and batch.run.job define them).
EXIT_MEANINGS: dict[int, str] = {
    0: "every device renewed or was skipped",
    1: "some devices failed or were invalid rows; see the table below and retry.csv",
    2: "usage, configuration or inventory error; nothing was renewed",
    3: "the run aborted itself (see the reason); devices not reached were not renewed",
    4: "the storage refused a write (disk full, read-only, permission); free it and rerun",
    130: "stopped by SIGINT (Ctrl-C); rerun with the same output folder to resume",
    143: "stopped by SIGTERM; rerun with the same output folder to resume",
}

_IDENTITY = ("orgId", "assetId", "productKey", "deviceKey")
_COLUMNS = (
    *_IDENTITY,
    "status",
    "errorClass",
    "errorCode",
    "errorMessage",
    "durationMs",
    "requestedDays",
    "grantedDays",
    "clamped",
)
_TIMED = pa.array([Status.RENEWED.value, Status.FAILED.value])
_BATCH_ROWS = 65_536
_NUMBER = re.compile(r"[0-9][0-9,.]*( ms| s)?")  # right-aligned in tables
_STATUS_COLOURS = {
    Status.RENEWED: "#2e7d32",
    Status.FAILED: "#c62828",
    Status.INVALID: "#ef6c00",
    Status.SKIPPED: "#78909c",
}
# The browser may fetch nothing at all: styles inline, images only as data: URIs (none today).
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;color:#222}
h1{font-size:1.5rem}h2{font-size:1.2rem;border-bottom:1px solid #ccc;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.2rem .5rem;
text-align:left;vertical-align:top}td.n{text-align:right;font-variant-numeric:tabular-nums}
.bad{color:#b71c1c;font-weight:bold}.good{color:#1b5e20;font-weight:bold}.note{color:#555}
figure{margin:.5rem 0}svg{max-width:100%;height:auto}
.sandbox{background:#fff3cd;border:1px solid #e0c060;padding:.5rem}
"""


@dataclass(slots=True)
class ReportRows:
    """What the page needs from report.parquet, gathered in one streaming pass."""

    durations_ms: array[int] = field(default_factory=lambda: array("q"))
    # (requested days, None: EnOS's default; granted days; clamped) -> devices
    validity: Counter[tuple[int | None, int, bool]] = field(default_factory=Counter)
    failed: list[dict[str, object]] = field(default_factory=list)
    failed_total: int = 0
    clamped: list[dict[str, object]] = field(default_factory=list)
    clamped_total: int = 0

    @property
    def durations(self) -> list[int]:
        """Sorted."""
        return sorted(self.durations_ms)


def write_html_report(out_dir: Path, summary: Summary, timeline: Sequence[Sample]) -> Path:
    """Write `<out_dir>/report.html` atomically from the summary, timeline and report.parquet."""
    rows = read_report_rows(Path(out_dir) / REPORT_PARQUET)
    page = render_page(summary, timeline, rows)
    path = Path(out_dir) / REPORT_HTML
    with atomic_output(path) as stream:
        stream.write(page.encode("utf-8"))
    return path


# --- reading report.parquet ----------------------------------------------------------------------


def read_report_rows(path: Path, *, table_rows: int = TABLE_ROWS) -> ReportRows:
    """Stream the needed columns of report.parquet into a bounded `ReportRows`."""
    rows = ReportRows()
    for batch in pq.ParquetFile(path).iter_batches(batch_size=_BATCH_ROWS, columns=_COLUMNS):
        _take_durations(rows, batch)
        _take_validity(rows, batch)
        failed = batch.filter(pc.equal(batch.column("status"), Status.FAILED.value))
        rows.failed_total += failed.num_rows
        rows.failed += _head(failed, table_rows - len(rows.failed))
        clamped = batch.filter(pc.fill_null(batch.column("clamped"), False))
        rows.clamped_total += clamped.num_rows
        rows.clamped += _head(clamped, table_rows - len(rows.clamped))
    return rows


def _head(batch: pa.RecordBatch, room: int) -> list[dict[str, object]]:
    return batch.slice(0, room).to_pylist() if room > 0 else []


def _take_durations(rows: ReportRows, batch: pa.RecordBatch) -> None:
    timed = batch.filter(pc.is_in(batch.column("status"), value_set=_TIMED))
    durations = pc.drop_null(timed.column("durationMs"))
    if len(durations):
        rows.durations_ms.extend(durations.to_pylist())


def _take_validity(rows: ReportRows, batch: pa.RecordBatch) -> None:
    renewed = batch.filter(pc.equal(batch.column("status"), Status.RENEWED.value))
    table = pa.table(
        {
            "requested": renewed.column("requestedDays"),
            "granted": renewed.column("grantedDays"),
            "clamped": pc.fill_null(renewed.column("clamped"), False),
        }
    )
    table = table.filter(pc.is_valid(table.column("granted")))  # requested may be null: default
    grouped = table.group_by(["requested", "granted", "clamped"]).aggregate([([], "count_all")])
    for pair in grouped.to_pylist():
        rows.validity[(pair["requested"], pair["granted"], pair["clamped"])] += pair["count_all"]


def device_name(row: Mapping[str, object]) -> str:
    """The device as EnOS knows it: the assetId, else productKey/deviceKey."""
    if row.get("assetId"):
        return str(row["assetId"])
    return f"{row.get('productKey') or ''}/{row.get('deviceKey') or ''}"


# --- the page ------------------------------------------------------------------------------------


def render_page(summary: Summary, timeline: Sequence[Sample], rows: ReportRows) -> str:
    """The whole HTML document."""
    sections = [
        _summary_section(summary),
        _outcomes_section(summary),
        _timeline_section(timeline),
        _latency_section(rows.durations),
        _validity_section(rows),
        _failed_section(rows),
    ]
    title = f"fleet-renew report, {_when(summary)}"
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        # An empty data: icon stops the browser asking the server for /favicon.ico.
        '<link rel=icon href="data:,">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        f"<h1>{_e(title)}</h1>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


def _when(summary: Summary) -> str:
    return summary.started.strftime("%Y-%m-%d %H:%M:%S UTC")


def _summary_section(summary: Summary) -> str:
    counts = summary.counts_by_status
    meaning = EXIT_MEANINGS.get(summary.exit_code, "see the log")
    throttled = summary.extra.get("throttled", 0)
    facts: list[tuple[str, str]] = [
        ("Devices (inventory rows)", f"{summary.devices:,}"),
        *((s.value.capitalize(), f"{counts.get(s, 0):,}") for s in Status),
        ("Duration", f"{summary.duration_s:,.1f} s"),
        ("Started / finished", f"{_iso(summary.started)} / {_iso(summary.finished)}"),
        ("Requests", f"{summary.requests:,}"),
        (
            "Rate achieved / configured",
            f"{summary.achieved_rate:,.1f} / {summary.configured_rate:g} requests/s",
        ),
        ("HTTP 429 answers", f"{throttled}"),
        ("Exit code", f"{summary.exit_code}: {meaning}"),
        ("Aborted", summary.aborted_reason or "no"),
        ("Sandbox (built-in simulator)", "yes" if summary.sandbox else "no"),
    ]
    facts += [
        (f"extra: {key}", _plain(value))
        for key, value in summary.extra.items()
        if key != "throttled"  # shown above as HTTP 429 answers
    ]
    verdict = "good" if summary.exit_code == 0 else "bad"
    banner = (
        "<p class=sandbox>Sandbox run: no real device was touched.</p>" if summary.sandbox else ""
    )
    headline = f"<p class={verdict}>Exit code {summary.exit_code}: {_e(meaning)}</p>"
    if summary.aborted_reason:
        headline += f"<p class=bad>Aborted: {_e(summary.aborted_reason)}</p>"
    return f"<h2>Summary</h2>{banner}{headline}{_table(('', ''), facts, header=False)}"


def _plain(value: object) -> str:
    """An `extra` value as short text (JSON for lists and dicts, cut at 300 characters)."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 300 else text[:299] + "…"


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="seconds")


def _outcomes_section(summary: Summary) -> str:
    statuses = [(s.value, summary.counts_by_status.get(s, 0), _STATUS_COLOURS[s]) for s in Status]
    classes = sorted(summary.counts_by_class.items(), key=lambda kv: (-kv[1], str(kv[0])))
    parts = [
        "<h2>Outcomes</h2>",
        "<h3>By status</h3>",
        charts.inline_svg(charts.bars(statuses, "devices"), "status"),
    ]
    parts.append(_table(("status", "devices"), [(n, f"{c:,}") for n, c, _ in statuses]))
    parts.append("<h3>By error class</h3>")
    if classes:
        bars = [(_class_name(c), n, "#c62828") for c, n in classes]
        parts.append(charts.inline_svg(charts.bars(bars, "rows"), "class"))
        parts.append(_table(("error class", "rows"), [(b[0], f"{b[1]:,}") for b in bars]))
    else:
        parts.append("<p class=note>No errors.</p>")
    return "\n".join(parts)


def _class_name(value: ErrorClass | str) -> str:
    return value.value if isinstance(value, ErrorClass) else str(value)


def _timeline_section(timeline: Sequence[Sample]) -> str:
    head = "<h2>Throughput and HTTP 429s over time</h2>"
    intervals = timeline_rates(timeline)
    if not intervals:
        return head + "<p class=note>Too short a run for a timeline (fewer than 2 samples).</p>"
    peak = max(i.finished_per_s for i in intervals)
    throttled = timeline[-1].throttled - timeline[0].throttled
    note = (
        f"<p>Finished rows per second (peak {peak:,.1f}) and HTTP 429 answers per second"
        f" ({throttled:,} in all), per sampling interval.</p>"
    )
    return head + note + charts.inline_svg(charts.timeline_chart(intervals), "timeline")


def _latency_section(durations: Sequence[int]) -> str:
    """`durations`: sorted."""
    head = "<h2>Latency (renewed and failed devices)</h2>"
    if not durations:
        return head + "<p class=note>No device was timed.</p>"
    p50, p90, p99 = stats.percentiles(durations, [50, 90, 99])
    facts = [
        ("devices timed", f"{len(durations):,}"),
        ("median", f"{p50:,.0f} ms"),
        ("p90", f"{p90:,.0f} ms"),
        ("p99", f"{p99:,.0f} ms"),
        ("max", f"{durations[-1]:,} ms"),
    ]
    return (
        head
        + charts.inline_svg(charts.histogram(durations), "latency")
        + _table(("", ""), facts, header=False)
    )


def _validity_section(rows: ReportRows) -> str:
    head = "<h2>Validity granted vs requested</h2>"
    if not rows.validity:
        return head + "<p class=note>No renewed device with a requested validity.</p>"
    pairs = sorted(rows.validity.items(), key=lambda kv: (-kv[1], kv[0][0] or 0, kv[0][1:]))
    table = [
        (charts.requested_text(r), f"{g:,}", "yes" if c else "no", f"{n:,}")
        for (r, g, c), n in pairs
    ]
    parts = [head, charts.inline_svg(charts.validity_chart(pairs), "validity")]
    parts.append(_table(("requested days", "granted days", "clamped", "devices"), table))
    if rows.clamped_total:
        parts.append(
            f"<p class=bad>{rows.clamped_total:,} devices were clamped: the CA expires sooner "
            "than the validity asked for.</p>"
        )
        listed = [
            (r.get("orgId"), device_name(r), r.get("requestedDays"), r.get("grantedDays"))
            for r in rows.clamped
        ]
        parts.append(_table(("org", "device", "requested", "granted"), listed))
        parts.append(_more(rows.clamped_total, len(rows.clamped)))
    else:
        parts.append("<p class=good>No device was clamped.</p>")
    return "\n".join(parts)


def _failed_section(rows: ReportRows) -> str:
    head = f"<h2>Failed devices ({rows.failed_total:,})</h2>"
    if not rows.failed_total:
        return head + "<p class=good>No device failed.</p>"
    listed = [
        (
            r.get("orgId"),
            device_name(r),
            r.get("errorClass"),
            r.get("errorCode"),
            r.get("errorMessage"),
        )
        for r in rows.failed
    ]
    headers = ("org", "device", "error class", "code", "message")
    return head + _table(headers, listed) + _more(rows.failed_total, len(rows.failed))


def _more(total: int, shown: int) -> str:
    if total <= shown:
        return ""
    return f"<p class=note>… and {total - shown:,} more (all of them are in report.csv).</p>"


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, header: bool = True) -> str:
    """An HTML table of escaped cells (None shows as an empty cell)."""

    def cell(value: object) -> str:
        text = "" if value is None else str(value)
        number = header and _NUMBER.fullmatch(text) is not None  # not in two-column facts
        return f"<td class=n>{_e(text)}</td>" if number else f"<td>{_e(text)}</td>"

    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _e(text: str) -> str:
    return html.escape(text, quote=True)
