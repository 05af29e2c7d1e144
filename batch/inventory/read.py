"""Read the device inventory (CSV or Parquet) as a stream of `Device` or `InvalidRow` values.

Columns are matched case-insensitively, camelCase or snake_case (`orgId`, `org_id`, `ORGID`),
with `expireDate` accepted for `notAfter`; unknown columns are ignored. A bad row is a value
(`InvalidRow`), never an exception; a bad *file* (missing, empty, unreadable, without the
required columns) raises `InventoryError` before any row is yielded.

Row numbers point an operator at the offending line: for CSV the header is line 1, so the first
data row is 2 (a quoted value that spans lines shifts the count, as in any record-based reader);
for Parquet it is the row index + 1. Blank CSV lines are skipped but still counted.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from batch.errors import InventoryError
from batch.model import Device, InvalidRow
from batch.storage import atomic_output

Format = Literal["csv", "parquet"]

CANONICAL_COLUMNS: tuple[str, ...] = (
    "orgId",
    "assetId",
    "productKey",
    "deviceKey",
    "certSn",
    "validDay",
    "issueAuthority",
    "csrPath",
    "subject",
    "notAfter",
)
IDENTIFYING_COLUMNS: tuple[str, ...] = ("orgId", "assetId", "productKey", "deviceKey", "certSn")

# Header spellings, reduced by `_fold` (lower case, no "_", "-" or spaces) -> canonical name.
_ALIASES: dict[str, str] = {name.lower(): name for name in CANONICAL_COLUMNS} | {
    "expiredate": "notAfter",
}
_EXTENSIONS: dict[str, Format] = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_MAX_VALID_DAY = 36_500
_AUTHORITIES = frozenset({"RSA", "ECC"})
_DIGITS = re.compile(r"[0-9]+", re.ASCII)
# Floats above 2**53 no longer hold every integer: a certSn read as one may have been rounded.
_MAX_EXACT_FLOAT = 2**53
_WRITE_BLOCK = 1 << 20


class _BadValue(ValueError):
    """A cell that cannot be read as its column's type; the message is the row's reason."""


def _quote(value: object, limit: int = 40) -> str:
    """A cell for a reason: quoted, control characters escaped, long values cut short."""
    text = repr(value)
    if len(text) <= limit:
        return text
    closing = text[-1] if text[-1] in "'\"" else ""
    return f"{text[: limit - 4]}...{closing}"


def canonical_column(header: str) -> str | None:
    """The canonical column a header names (`org_id` -> `orgId`), or None when unknown."""
    return _ALIASES.get(re.sub(r"[\s_\-]", "", header).lower())


def parse_row(
    values: Mapping[str, object], *, row: int, default_org: str | None
) -> Device | InvalidRow:
    """Validate one inventory row into a `Device`, or an `InvalidRow` saying what is wrong.

    Keys may be any accepted spelling of a column; unknown keys are ignored. Pure: no I/O.
    The row's orgId wins over `default_org`. An assetId identifies the device on its own;
    without one, productKey and deviceKey are both required. The first problem found is the
    reason; `InvalidRow.values` keeps the identifying cells as read.
    """
    canonical: dict[str, object] = {}
    for key, value in values.items():
        name = canonical_column(key)
        if name is not None:
            canonical[name] = value
    return _parse_canonical(canonical, row=row, default_org=default_org)


def _parse_canonical(
    values: Mapping[str, object], *, row: int, default_org: str | None
) -> Device | InvalidRow:
    """`parse_row` for a row whose keys are already canonical column names."""
    text = {
        name: _text(values.get(name))
        for name in ("orgId", "assetId", "productKey", "deviceKey", "csrPath", "subject")
    }
    org = text["orgId"] or default_org
    try:
        _check_printable(values)
        if org is None:
            raise _BadValue("orgId is missing and no default org was given")
        _check_identity(text["assetId"], text["productKey"], text["deviceKey"])
        return Device(
            row=row,
            org_id=org,
            asset_id=text["assetId"],
            product_key=text["productKey"],
            device_key=text["deviceKey"],
            cert_sn=_required_int("certSn", values.get("certSn")),
            valid_day=_valid_day(values.get("validDay")),
            issue_authority=_authority(values.get("issueAuthority")),
            csr_path=text["csrPath"],
            subject=text["subject"],
            not_after=_timestamp("notAfter", values.get("notAfter")),
        )
    except _BadValue as exc:
        return InvalidRow(row=row, reason=str(exc), values=_identifying(values, default_org))


def _check_printable(values: Mapping[str, object]) -> None:
    """Identifiers hold no control or other non-printable character (NUL, ESC, DEL, U+202E...).

    They are sent to EnOS, written into the report and logs, and name bundle folders: a
    control character there is a damaged or hostile inventory, never a device's real name.
    Spaces and tabs around a value are fine (they are stripped).
    """
    for name in IDENTIFYING_COLUMNS:
        raw = values.get(name)
        if type(raw) is str and not raw.isprintable() and not raw.strip(" \t").isprintable():
            raise _BadValue(f"{name} {_quote(raw)} holds a control or non-printable character")


def _check_identity(asset_id: str | None, product_key: str | None, device_key: str | None) -> None:
    """An assetId, or a complete productKey + deviceKey pair, names the device."""
    if asset_id is not None:
        return
    if product_key is None and device_key is None:
        raise _BadValue("no device identifier: assetId or productKey + deviceKey is required")
    if device_key is None:
        raise _BadValue(f"productKey {_quote(product_key)} is given without a deviceKey")
    if product_key is None:
        raise _BadValue(f"deviceKey {_quote(device_key)} is given without a productKey")


def _identifying(values: Mapping[str, object], default_org: str | None) -> dict[str, str]:
    """The columns a report needs to point at the row, as read (the default org fills orgId)."""
    shown = {name: _shown(values.get(name)) for name in IDENTIFYING_COLUMNS}
    kept = {name: value for name, value in shown.items() if value is not None}
    if "orgId" not in kept and default_org is not None:
        kept["orgId"] = default_org
    return kept


def _shown(raw: object) -> str | None:
    if isinstance(raw, float) and raw.is_integer() and abs(raw) < _MAX_EXACT_FLOAT:
        return str(int(raw))  # Parquet float columns: show 42, not 42.0
    text = _text(raw)
    if text is None or text.isprintable():
        return text
    return text.encode("unicode_escape").decode("ascii")  # "a\x00b" shown, never written raw


def _text(raw: object) -> str | None:
    """A cell as stripped text; None, NaN and blank all mean missing."""
    if type(raw) is str:  # every CSV cell: the hot path of a million-row file
        return raw.strip() or None
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return None
    return str(raw).strip() or None


def _integer(column: str, raw: object) -> int | None:
    """An integer cell: ASCII digits (optionally "-"), an int, or a whole float/Decimal."""
    if type(raw) is str or raw is None:
        return _integer_text(column, raw)
    if isinstance(raw, bool):  # bool is an int subclass, but True is not a serial number
        raise _BadValue(f"{column} {_quote(raw)} is not an integer")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float | Decimal):
        return _whole(column, raw)
    return _integer_text(column, raw)


def _integer_text(column: str, raw: object) -> int | None:
    text = _text(raw)
    if text is None:
        return None
    if not _DIGITS.fullmatch(text.removeprefix("-")):
        raise _BadValue(f"{column} {_quote(text)} is not an integer")
    return int(text)


def _whole(column: str, raw: float | Decimal) -> int | None:
    """A number from a typed (Parquet) column that must hold a whole value; NaN is missing."""
    if isinstance(raw, float) and math.isnan(raw):
        return None
    finite = raw.is_finite() if isinstance(raw, Decimal) else math.isfinite(raw)
    if not finite or raw != int(raw):
        raise _BadValue(f"{column} {raw} is not a whole number")
    if isinstance(raw, float) and abs(raw) >= _MAX_EXACT_FLOAT:
        raise _BadValue(f"{column} {raw} is too large to be exact in a float column")
    return int(raw)


def _required_int(column: str, raw: object) -> int:
    value = _integer(column, raw)
    if value is None:
        raise _BadValue(f"{column} is missing")
    if value < 0:
        raise _BadValue(f"{column} {value} is negative")
    return value


def _valid_day(raw: object) -> int | None:
    value = _integer("validDay", raw)
    if value is not None and not 1 <= value <= _MAX_VALID_DAY:
        raise _BadValue(f"validDay {value} is outside 1..{_MAX_VALID_DAY}")
    return value


def _authority(raw: object) -> str | None:
    text = _text(raw)
    if text is None:
        return None
    if text.upper() not in _AUTHORITIES:
        raise _BadValue(f"issueAuthority {_quote(text)} is not RSA or ECC")
    return text.upper()


def _timestamp(column: str, raw: object) -> datetime | None:
    """An ISO-8601 date/datetime or epoch milliseconds, as an aware UTC datetime."""
    if isinstance(raw, datetime):
        return _utc(raw)
    if isinstance(raw, date):
        return datetime.combine(raw, time(), UTC)
    if isinstance(raw, int | float | Decimal) and not isinstance(raw, bool):
        return _epoch_ms(column, _integer(column, raw), raw)
    text = _text(raw)
    if text is None:
        return None
    if _DIGITS.fullmatch(text):
        return _epoch_ms(column, int(text), text)
    try:
        return _utc(datetime.fromisoformat(text.replace("z", "Z")))
    except ValueError:
        raise _BadValue(f"{column} {_quote(text)} is not an ISO-8601 date or epoch ms") from None


def _epoch_ms(column: str, millis: int | None, raw: object) -> datetime | None:
    if millis is None:
        return None
    try:
        return datetime.fromtimestamp(millis / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        raise _BadValue(f"{column} {_quote(raw)} is out of range for epoch ms") from None


def _utc(value: datetime) -> datetime:
    """Naive datetimes in an inventory are taken as UTC (what exports of EnOS data use)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


# --- files ------------------------------------------------------------------------------------


def read_inventory(
    path: str | os.PathLike[str],
    *,
    fmt: Format | None = None,
    default_org: str | None = None,
    chunk_rows: int = 50_000,
) -> Iterator[Device | InvalidRow]:
    """Stream the inventory's rows in file order, in chunks of `chunk_rows`.

    The file, its header and the presence of at least one data row are checked now, before the
    iterator is returned; a file that turns out corrupt further on raises `InventoryError`
    from the iterator.
    """
    path = Path(path)
    if not path.is_file():
        raise InventoryError(f"inventory {path} does not exist or is not a file")
    fmt = fmt or _format_of(path)
    reader = _csv_rows if fmt == "csv" else _parquet_rows
    rows = reader(path, default_org, chunk_rows)
    try:
        first = next(rows)
    except StopIteration:
        raise InventoryError(f"inventory {path} has no data rows") from None
    return itertools.chain([first], rows)


def _format_of(path: Path) -> Format:
    fmt = _EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(_EXTENSIONS)
        raise InventoryError(f"inventory {path}: unknown extension (expected {known}, or --format)")
    return fmt


def _column_map(path: Path, headers: Sequence[str], default_org: str | None) -> dict[str, str]:
    """Canonical name -> the file's header for it; raise if required columns are missing."""
    found: dict[str, str] = {}
    for header in headers:
        name = canonical_column(str(header))
        if name is None:
            continue
        if name in found:
            raise InventoryError(
                f"inventory {path}: columns {found[name]!r} and {header!r} both mean {name}"
            )
        found[name] = str(header)
    missing = [] if "certSn" in found else ["certSn"]
    if "assetId" not in found and not {"productKey", "deviceKey"} <= found.keys():
        missing.append("assetId (or productKey and deviceKey)")
    if "orgId" not in found and default_org is None:
        missing.append("orgId (or a default org)")
    if missing:
        raise InventoryError(f"inventory {path}: required columns missing: {', '.join(missing)}")
    return found


def _rows_of(
    columns: Sequence[list[object]],
    names: Sequence[str],
    first_row: int,
    default_org: str | None,
    *,
    skip_blank: bool,
) -> Iterator[Device | InvalidRow]:
    """Turn one chunk (a list per column) into parsed rows numbered from `first_row`."""
    for offset, cells in enumerate(zip(*columns, strict=True)):
        if skip_blank and not any(cells):
            continue
        yield _parse_canonical(
            dict(zip(names, cells, strict=True)), row=first_row + offset, default_org=default_org
        )


def _csv_rows(
    path: Path, default_org: str | None, chunk_rows: int
) -> Iterator[Device | InvalidRow]:
    line = 2  # the header is line 1
    mapping: dict[str, str] | None = None
    for chunk in csv_chunks(path, chunk_rows):
        if mapping is None:
            mapping = _column_map(path, list(chunk.columns), default_org)
        columns = [chunk[header].tolist() for header in mapping.values()]
        yield from _rows_of(columns, list(mapping), line, default_org, skip_blank=True)
        line += len(chunk)


def csv_chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The CSV's records as text, `chunk_rows` at a time; a damaged file is InventoryError."""
    try:
        _check_first_record(path)
        chunks = pd.read_csv(
            path,
            chunksize=chunk_rows,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skip_blank_lines=False,
            index_col=False,
            encoding="utf-8-sig",
        )
        with chunks:
            yield from chunks
    except pd.errors.EmptyDataError:
        raise InventoryError(f"inventory {path} is empty") from None
    except UnicodeDecodeError as exc:
        where = _first_undecodable_line(path)
        raise InventoryError(
            f"inventory {path} is not a readable CSV: line {where} is not UTF-8 ({exc.reason})"
        ) from exc
    except (pd.errors.ParserError, csv.Error, OSError) as exc:
        raise InventoryError(f"inventory {path} is not a readable CSV: {exc}") from exc


def inventory_format(path: Path, fmt: Format | None = None) -> Format:
    """The format given, else the one the file's extension names (InventoryError if none)."""
    return fmt or _format_of(path)


def _first_undecodable_line(path: Path) -> int | None:
    """The number of the first line that is not UTF-8 (pandas only tells a buffer offset)."""
    with open(path, "rb") as stream:
        for number, line in enumerate(stream, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return None


def _check_first_record(path: Path) -> None:
    """Refuse a first data row longer than the header.

    pandas reports every later ragged row as a ParserError, but for the first one it only
    warns and drops the extra cells: a misaligned file would slip through.
    """
    with open(path, newline="", encoding="utf-8-sig") as stream:
        records = csv.reader(stream)
        header = next(records, [])
        first = next(records, [])
    if len(first) > len(header):
        raise InventoryError(
            f"inventory {path}: line 2 has {len(first)} fields but the header has {len(header)}"
        )


def _parquet_rows(
    path: Path, default_org: str | None, chunk_rows: int
) -> Iterator[Device | InvalidRow]:
    row = 1
    for mapping, batch in _parquet_batches(path, default_org, chunk_rows):
        columns = [batch.column(header).to_pylist() for header in mapping.values()]
        yield from _rows_of(columns, list(mapping), row, default_org, skip_blank=False)
        row += batch.num_rows


def _parquet_batches(
    path: Path, default_org: str | None, chunk_rows: int
) -> Iterator[tuple[dict[str, str], pa.RecordBatch]]:
    """The inventory's columns of the Parquet file, `chunk_rows` rows at a time."""
    try:
        with pq.ParquetFile(path, pre_buffer=False) as parquet:
            mapping = _column_map(path, parquet.schema_arrow.names, default_org)
            for batch in parquet.iter_batches(
                batch_size=chunk_rows, columns=list(mapping.values())
            ):
                yield mapping, batch
    except (pa.ArrowException, OSError) as exc:
        raise InventoryError(f"inventory {path} is not a readable Parquet file: {exc}") from exc


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
    if (fmt or _format_of(path)) == "csv":
        for _ in csv_chunks(path, chunk_rows):
            pass
    else:
        for _ in _parquet_batches(path, default_org, chunk_rows):
            pass


def count_rows(path: str | os.PathLike[str], *, fmt: Format | None = None) -> int:
    """How many data rows the inventory has, cheaply: a total for progress, not a validation.

    Parquet: from the footer. CSV: non-blank lines after the header (a value spanning lines
    counts once per line, so this is an upper bound for such files).
    """
    path = Path(path)
    if not path.is_file():
        raise InventoryError(f"inventory {path} does not exist or is not a file")
    if (fmt or _format_of(path)) == "parquet":
        try:
            with pq.ParquetFile(path) as parquet:
                return int(parquet.metadata.num_rows)
        except (pa.ArrowException, OSError) as exc:
            raise InventoryError(f"inventory {path} is not a readable Parquet file: {exc}") from exc
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


def write_inventory_csv(path: str | os.PathLike[str], devices: Iterable[Device]) -> int:
    """Write devices as an inventory CSV with canonical columns, atomically; return the count.

    Values are written as they are, not neutralised against spreadsheet formulas: this file is
    input for `fleet-renew run`, and must read back to the same devices.
    """
    return write_csv_rows(path, CANONICAL_COLUMNS, (_inventory_cells(d) for d in devices))


def write_csv_rows(
    path: str | os.PathLike[str], header: Sequence[str], rows: Iterable[Sequence[object]]
) -> int:
    """Write a CSV (values as they are) atomically, in blocks; return the count of rows."""
    count = 0
    text = io.StringIO()
    writer = csv.writer(text)  # "\r\n": values holding a lone "\r" get quoted too
    writer.writerow(header)
    with atomic_output(path) as stream:
        for cells in rows:
            writer.writerow(cells)
            count += 1
            if text.tell() >= _WRITE_BLOCK:
                stream.write(text.getvalue().encode())
                text.seek(0)
                text.truncate()
        stream.write(text.getvalue().encode())
    return count


def _inventory_cells(device: Device) -> list[object]:
    not_after = device.not_after.astimezone(UTC).isoformat() if device.not_after else None
    cells: list[object] = [
        device.org_id,
        device.asset_id,
        device.product_key,
        device.device_key,
        device.cert_sn,
        device.valid_day,
        device.issue_authority,
        device.csr_path,
        device.subject,
        not_after,
    ]
    return ["" if cell is None else cell for cell in cells]
