"""Read the device inventory (CSV or Parquet) as a stream of `Device` or `InvalidRow` values.

A bad row is a value (`InvalidRow`, see `batch.inventory.rows`), never an exception; a bad
*file* (missing, empty, unreadable, without the required columns) raises `InventoryError`
before any row is yielded.

Row numbers point an operator at the offending line: for CSV the header is line 1, so the first
data row is 2 (a quoted value that spans lines shifts the count, as in any record-based reader);
for Parquet it is the row index + 1. Blank CSV lines are skipped but still counted.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from batch.errors import InventoryError
from batch.inventory.columns import (
    CANONICAL_COLUMNS as CANONICAL_COLUMNS,  # re-exported: callers have always imported it here
)
from batch.inventory.columns import Format, column_map, inventory_format
from batch.inventory.columns import canonical_column as canonical_column
from batch.inventory.csv_file import csv_records
from batch.inventory.parquet_file import parquet_batches, parquet_row_count
from batch.inventory.rows import parse_canonical
from batch.inventory.rows import parse_row as parse_row
from batch.inventory.write import write_csv_rows as write_csv_rows
from batch.inventory.write import write_inventory_csv as write_inventory_csv
from batch.model import Device, InvalidRow


def read_inventory(
    path: str | os.PathLike[str],
    *,
    fmt: Format | None = None,
    default_org: str | None = None,
    chunk_rows: int = 50_000,
) -> Iterator[Device | InvalidRow]:
    """Stream the inventory's rows in file order, read in chunks of `chunk_rows`.

    The file, its header and the presence of at least one data row are checked now, before the
    iterator is returned; a file that turns out corrupt further on raises `InventoryError`
    from the iterator.
    """
    path = _existing(path)
    if inventory_format(path, fmt) == "csv":
        rows = _csv_rows(path, default_org, chunk_rows)
    else:
        rows = _parquet_rows(path, default_org, chunk_rows)
    try:
        first = next(rows)
    except StopIteration:
        raise InventoryError(f"inventory {path} has no data rows") from None
    return itertools.chain([first], rows)


def _existing(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InventoryError(f"inventory {path} does not exist or is not a file")
    return path


def _csv_rows(
    path: Path, default_org: str | None, chunk_rows: int
) -> Iterator[Device | InvalidRow]:
    records = csv_records(path)
    header = next(records)
    # Read a chunk ahead: a file damaged within its first chunk stops before any row.
    chunk = list(itertools.islice(records, chunk_rows))
    places = column_places(path, header, default_org)
    row = 2  # the header is line 1
    while chunk:
        for cells in chunk:
            if any(cells):  # a blank line: skipped, still counted
                values = {name: cells[at] for name, at in places}
                yield parse_canonical(values, row=row, default_org=default_org)
            row += 1
        chunk = list(itertools.islice(records, chunk_rows))


def column_places(
    path: Path, header: Sequence[str], default_org: str | None
) -> list[tuple[str, int]]:
    """Each canonical column's name and its index in `header` (required ones checked).

    By position: the first column wins when a header is repeated exactly, so every reader of
    the file's cells (the run, inventory.next.csv) reads the same cell for a column.
    """
    mapping = column_map(path, header, default_org)
    return [(name, list(header).index(spelling)) for name, spelling in mapping.items()]


def _parquet_rows(
    path: Path, default_org: str | None, chunk_rows: int
) -> Iterator[Device | InvalidRow]:
    row = 1
    for mapping, batch in parquet_batches(path, default_org, chunk_rows):
        columns = [batch.column(header).to_pylist() for header in mapping.values()]
        yield from _parsed(columns, list(mapping), row, default_org)
        row += batch.num_rows


def _parsed(
    columns: Sequence[list[object]], names: Sequence[str], first_row: int, default_org: str | None
) -> Iterator[Device | InvalidRow]:
    """Turn one batch (a list per column) into parsed rows numbered from `first_row`."""
    for offset, cells in enumerate(zip(*columns, strict=True)):
        yield parse_canonical(
            dict(zip(names, cells, strict=True)), row=first_row + offset, default_org=default_org
        )


def check_readable(
    path: str | os.PathLike[str],
    *,
    fmt: Format | None = None,
    default_org: str | None = None,
    chunk_rows: int = 50_000,
) -> None:
    """Read the whole file as `read_inventory` will, without making rows: InventoryError when
    any part of it cannot be read (bad encoding, a ragged line, a damaged Parquet page).

    The run calls this before it sends anything, so a file damaged at row 50,000 stops the run
    with nothing renewed, instead of after the devices before it (bad *rows* are not looked
    at here: each becomes an `InvalidRow` in the report, as always).
    """
    path = Path(path)
    parts = (
        csv_records(path)
        if inventory_format(path, fmt) == "csv"
        else parquet_batches(path, default_org, chunk_rows)
    )
    for _ in parts:
        pass


def count_rows(path: str | os.PathLike[str], *, fmt: Format | None = None) -> int:
    """How many data rows the inventory has, cheaply: a total for progress, not a validation.

    Parquet: from the footer. CSV: non-blank lines after the header (a value spanning lines
    counts once per line, so this is an upper bound for such files).
    """
    path = _existing(path)
    if inventory_format(path, fmt) == "parquet":
        return parquet_row_count(path)
    with open(path, "rb") as stream:
        lines = sum(1 for line in stream if line.strip())
    return max(lines - 1, 0)


def inventory_fingerprint(path: str | os.PathLike[str]) -> str:
    """The sha256 of the file's bytes, hex: tells whether a rerun reads the same inventory."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
