"""inventory.next.csv: the run's inventory with every device's current certificate.

An inventory is a snapshot: after a run, the certSn of each renewed device is superseded. The
next night should start from the truth, not from yesterday's file, so every run writes, in its
output folder, the input inventory again with, per row:

- renewed here (or in an earlier run of the same folder, or issued but failing verification):
  the new certificate's serial and notAfter;
- following a current certificate that superseded the inventory's (`currentCertSn`): that
  serial and its notAfter;
- otherwise the row as it was, with the notAfter List Certificate reported when it was looked up;
- invalid rows (bad input, duplicates) left out, and, with `--shard`, the other shards' rows
  (each shard writes its own rows: concatenate the shards' files, header once).

The input's columns are kept in their order and spelling (a `notAfter` column is added when
the input has none); values are written as read. Written atomically once the report is final.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from batch.config import Scope, Shard
from batch.errors import InventoryError
from batch.inventory import (
    Format,
    canonical_column,
    csv_records,
    inventory_format,
    write_csv_rows,
)
from batch.inventory.read import column_places
from batch.inventory.rows import parse_canonical
from batch.model import Device
from batch.plan.decide import in_shard

log = logging.getLogger(__name__)

NEXT_INVENTORY = "inventory.next.csv"


@dataclass(frozen=True, slots=True)
class Current:
    """A row's certificate after the run: serial (None: unchanged) and notAfter (None: same)."""

    cert_sn: str | None
    not_after: datetime | None


def write_for_run(scope: Scope, out_dir: Path, report_parquet: Path) -> int | None:
    """Write the run's inventory.next.csv; None (logged) when the inventory cannot be reread.

    The run's results stand either way (report, journal, bundles): only this copy is missing.
    """
    try:
        changed, dropped = changes_from_report(report_parquet)
        rows = write_next_inventory(
            out_dir,
            scope.inventory,
            fmt=inventory_format(scope.inventory, scope.inventory_format),
            default_org=scope.org_id,
            shard=scope.shard,
            changed=changed,
            dropped=dropped,
        )
    # What rereading a file can meet (gone, damaged, not UTF-8); a bug in this module is
    # not among them and propagates.
    except (InventoryError, OSError, UnicodeDecodeError, csv.Error, pa.ArrowException) as exc:
        # The exception's type, not its text: a parser's message may quote the file's cells.
        log.error(
            "%s not written: %s rereading %s", NEXT_INVENTORY, type(exc).__name__, scope.inventory
        )
        return None
    log.info("next inventory: %d rows in %s", rows, out_dir / NEXT_INVENTORY)
    return rows


def changes_from_report(report_parquet: Path) -> tuple[dict[int, Current], set[int]]:
    """From the final report: what changed per inventory row, and the rows to leave out."""
    columns = ["row", "status", "newCertSn", "currentCertSn", "notAfter"]
    # ParquetFile, not read_table: read_table goes through pyarrow.dataset, ~35 ms of import
    with pq.ParquetFile(report_parquet) as parquet:
        table = parquet.read(columns=columns)
    changed: dict[int, Current] = {}
    dropped: set[int] = set()
    values = [table.column(name).to_pylist() for name in columns]
    for row, status, new_sn, current_sn, not_after in zip(*values, strict=True):
        if status == "invalid":
            dropped.add(row)
        elif new_sn or current_sn or not_after:
            changed[row] = Current(new_sn or current_sn, not_after)
    return changed, dropped


def write_next_inventory(
    out_dir: Path,
    inventory: Path,
    *,
    fmt: Format,
    default_org: str | None,
    shard: Shard | None,
    changed: Mapping[int, Current],
    dropped: set[int],
) -> int:
    """Write out_dir/inventory.next.csv; return how many rows it holds."""
    headers, rows = _raw_rows(inventory, fmt)
    places = column_places(inventory, headers, default_org)
    names = [canonical_column(h) for h in headers]
    add_not_after = "notAfter" not in names
    at = (names.index("certSn"), len(headers) if add_not_after else names.index("notAfter"))
    kept = (
        _updated(cells, changed.get(row), at, add_not_after)
        for row, cells in rows
        # A row with a change was reported by this run: valid and in its shard, no parse needed.
        if row not in dropped and (row in changed or _mine(places, cells, row, default_org, shard))
    )
    header = [*headers, "notAfter"] if add_not_after else headers
    return write_csv_rows(out_dir / NEXT_INVENTORY, header, kept)


def _mine(
    places: Sequence[tuple[str, int]],
    cells: Sequence[object],
    row: int,
    default_org: str | None,
    shard: Shard | None,
) -> bool:
    """A valid row of this shard (invalid rows are left out, as the run reported them)."""
    values = {name: cells[at] for name, at in places}  # the cells the run read
    parsed = parse_canonical(values, row=row, default_org=default_org)
    return isinstance(parsed, Device) and in_shard(parsed.key, shard)


def _updated(
    cells: Sequence[object], update: Current | None, at: tuple[int, int], add_not_after: bool
) -> list[str]:
    out = [_cell(c) for c in cells] + ([""] if add_not_after else [])
    if update is not None:
        sn_at, not_after_at = at
        if update.cert_sn:
            out[sn_at] = update.cert_sn
        if update.not_after is not None:
            out[not_after_at] = update.not_after.astimezone(UTC).isoformat()
    return out


def _cell(value: object) -> str:
    if type(value) is str:  # every CSV cell
        return value
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _raw_rows(path: Path, fmt: Format) -> tuple[list[str], Iterator[tuple[int, Sequence[object]]]]:
    """The file's headers and its rows as read, numbered as `batch.inventory.read` numbers them."""
    if fmt == "parquet":
        parquet = pq.ParquetFile(path, pre_buffer=False)
        return list(parquet.schema_arrow.names), _parquet_rows(parquet)
    records = csv_records(path)
    return next(records), _csv_rows(records)


def _csv_rows(records: Iterator[list[str]]) -> Iterator[tuple[int, Sequence[object]]]:
    # The header is line 1; blank lines count, as in batch.inventory.read.
    for line, cells in enumerate(records, start=2):
        if any(cells):
            yield line, cells


def _parquet_rows(parquet: pq.ParquetFile) -> Iterator[tuple[int, Sequence[object]]]:
    row = 1
    with parquet:
        for batch in parquet.iter_batches(batch_size=50_000):
            columns = [column.to_pylist() for column in batch.columns]
            for offset, cells in enumerate(zip(*columns, strict=True)):
                yield row + offset, cells
            row += batch.num_rows
