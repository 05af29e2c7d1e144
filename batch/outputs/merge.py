"""`fleet-renew merge`: bring the output folders of a sharded run together into one.

Each shard reports only its own rows, so the merged report is the shards' rows in inventory
order; counts add up; the exit code follows the same rules as a single run's; retry.csv and
inventory.next.csv are the shards' files end to end. A shard without
a summary.json did not finish: merging it would hide devices, so that is an error.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pyarrow.csv as pa_csv

from batch.errors import UsageError
from batch.model import ErrorClass, Status
from batch.outputs import report
from batch.outputs.next_inventory import NEXT_INVENTORY
from batch.storage import atomic_output
from batch.store.outdir import OutDir


def merge_outputs(shard_dirs: list[Path], out_dir: Path) -> report.Summary:
    """Merge shard folders into `out_dir`; returns the merged summary (also written)."""
    if not shard_dirs:
        raise UsageError("merge needs at least one shard output folder")
    _check_distinct(shard_dirs, out_dir)
    summaries = [_summary_of(folder) for folder in shard_dirs]
    tables = [_report_of(folder) for folder in shard_dirs]
    _check_rows_unique(tables, shard_dirs)
    with OutDir.claim(out_dir):
        _merge_reports(tables, out_dir)
        _concat_csv(shard_dirs, out_dir, report.RETRY_CSV)
        # Each shard's next inventory holds its own rows: together, the whole inventory's.
        if any((folder / NEXT_INVENTORY).exists() for folder in shard_dirs):
            _concat_csv(shard_dirs, out_dir, NEXT_INVENTORY)
        summary = _merged_summary(summaries, shard_dirs)
        report.write_summary(out_dir, summary)
    return summary


def _check_distinct(shard_dirs: list[Path], out_dir: Path) -> None:
    """The same folder twice (by any name) would count its devices twice; --out as a shard
    would overwrite that shard's report."""
    seen: dict[tuple[int, int], Path] = {}
    for folder in shard_dirs:
        try:
            info = folder.stat()
        except OSError as exc:
            raise UsageError(f"shard folder {folder}: {exc.strerror or exc}") from None
        earlier = seen.setdefault((info.st_dev, info.st_ino), folder)
        if earlier is not folder:
            raise UsageError(f"shard folder {folder} is given twice (also as {earlier})")
    with contextlib.suppress(OSError):  # an --out that does not exist yet is no shard
        out = out_dir.stat()
        if (out.st_dev, out.st_ino) in seen:
            raise UsageError(f"--out {out_dir} is one of the shard folders: choose a new folder")


def _report_of(folder: Path) -> pa.Table:
    path = folder / report.REPORT_CSV
    try:
        return _read_strings(path)
    except FileNotFoundError:
        raise UsageError(f"{folder} has no {report.REPORT_CSV}: is it a shard's output?") from None
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise UsageError(f"{path} is unreadable: {exc}") from None


def _check_rows_unique(tables: list[pa.Table], shard_dirs: list[Path]) -> None:
    """Each inventory row is reported by exactly one shard: a row twice means a shard was
    given twice (a copy of a folder) or the shards come from different runs."""
    for table, folder in zip(tables, shard_dirs, strict=True):
        if "row" not in table.column_names:
            raise UsageError(f"{folder / report.REPORT_CSV} has no row column: not a report")
    rows = pa.chunked_array(
        [chunk for table in tables for chunk in table["row"].chunks], type=pa.string()
    )
    if len(pa.compute.unique(rows)) == len(rows):
        return
    owner: dict[str, Path] = {}  # only to name the culprit
    for table, folder in zip(tables, shard_dirs, strict=True):
        for row in table["row"].to_pylist():
            earlier = owner.setdefault(row, folder)
            if earlier is not folder:
                raise UsageError(
                    f"inventory row {row} is reported by both {earlier} and {folder}: the same "
                    "shard given twice, or shards of different runs"
                )


def _summary_of(folder: Path) -> report.Summary:
    path = folder / report.SUMMARY_JSON
    try:
        document = dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise UsageError(f"{folder} has no {report.SUMMARY_JSON}: did that shard finish?") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} is unreadable: {exc}") from exc
    return report.Summary.from_json(document)


def _read_strings(path: Path) -> pa.Table:
    # Every column as text: the merged CSV must keep each cell exactly as the shard wrote it.
    with path.open("rb") as fh:
        header = fh.readline().decode().strip().split(",")
    options = pa_csv.ConvertOptions(column_types=dict.fromkeys(header, pa.string()))
    return pa_csv.read_csv(path, convert_options=options)


def _merge_reports(tables: list[pa.Table], out_dir: Path) -> None:
    merged = pa.concat_tables(tables)
    order = pa.compute.sort_indices(pa.compute.cast(merged["row"], pa.int64()))
    merged = merged.take(order)
    with atomic_output(out_dir / report.REPORT_CSV) as stream:
        pa_csv.write_csv(merged, stream, pa_csv.WriteOptions(quoting_style="needed"))
    report.finish_reports(out_dir)


def _concat_csv(shard_dirs: list[Path], out_dir: Path, name: str) -> None:
    """The shards' CSV files `name` as one, header once (a shard without one adds nothing)."""
    header: bytes | None = None
    lines: list[bytes] = []
    for folder in shard_dirs:
        path = folder / name
        if not path.exists():
            continue
        first, *rest = path.read_bytes().splitlines(keepends=True) or [b""]
        header = header or first
        lines.extend(rest)
    with atomic_output(out_dir / name) as stream:
        stream.write((header or b"") + b"".join(lines))


def _merged_summary(summaries: list[report.Summary], shard_dirs: list[Path]) -> report.Summary:
    by_status: Counter[Status] = Counter()
    by_class: Counter[ErrorClass] = Counter()
    campaign: Counter[Status] = Counter()
    for s in summaries:
        by_status.update(s.counts_by_status)
        by_class.update(s.counts_by_class)
        shard_campaign = cast(Mapping[str, int], s.extra.get("campaign", {}))
        campaign.update({Status(k): v for k, v in shard_campaign.items()})
    aborted = [s.aborted_reason for s in summaries if s.aborted_reason]
    # A shard stopped by a signal or by a storage error (exit 4) left the campaign unfinished.
    stopped = [s for s in summaries if s.exit_code in (4, 130, 143)]
    exit_code = report.exit_code_for(campaign or by_status, aborted=bool(aborted))
    if stopped and exit_code != 3:
        exit_code = stopped[0].exit_code
    return report.Summary(
        counts_by_status=dict(by_status),
        counts_by_class=dict(by_class),
        devices=sum(s.devices for s in summaries),
        requests=sum(s.requests for s in summaries),
        started=min(s.started for s in summaries),
        finished=max(s.finished for s in summaries),
        configured_rate=sum(s.configured_rate for s in summaries),
        exit_code=exit_code,
        aborted_reason="; ".join(aborted) or None,
        sandbox=any(s.sandbox for s in summaries),
        extra={
            "shards": [str(folder) for folder in shard_dirs],
            "campaign": {status.value: n for status, n in campaign.items()},
            "shardExitCodes": [s.exit_code for s in summaries],
            # Each shard notes the CAs new to it: the sum is an upper bound on the campaign's.
            "caChanges": sum(int(cast(Any, s.extra.get("caChanges")) or 0) for s in summaries),
        },
    )
