"""Stream a CSV inventory's records with the `csv` module, and say clearly what is damaged.

Records, not lines: the header is record 1, so the first data row is 2; a blank line is an
all-empty record (counted, for the caller to skip); a quoted value that spans lines is one
record, as in any record-based reader. A record shorter than the header is padded with empty
cells; one longer than the header means the file is misaligned and stops the read, and so does
a quote left open at the end of the file.
"""

from __future__ import annotations

import _csv
import csv
from collections.abc import Iterable, Iterator
from pathlib import Path

from batch.errors import InventoryError

# Fed to the reader after the file's last line. The `csv` module ends a quoted value left open
# at the end of the file silently, the rest of the file in one cell; this line tells: after a
# clean end it comes back as a record of its own, [_END]; after an open quote, at the end of a
# cell with its newline kept.
_END = "\x00end of the inventory\x00"
_END_LINE = _END + "\n"
_ENDINGS = (_END, _END_LINE)


def csv_records(path: Path) -> Iterator[list[str]]:
    """The header, then every record as text, padded to the header's width.

    A file that is empty, not UTF-8 or not a CSV raises `InventoryError` from the iterator,
    when the reader reaches the damage (rows before it have been yielded already).
    """
    records: _csv.Reader | None = None
    try:
        with open(path, newline="", encoding="utf-8-sig") as stream:
            records = csv.reader(_with_end(stream))
            header = next(records)
            if not header or header == [_END]:  # no record, or a blank first line
                raise InventoryError(f"inventory {path} is empty")
            _check_closed(path, header, 1)
            yield header
            width = len(header)
            for number, cells in enumerate(records, start=2):
                if cells and cells[-1].endswith(_ENDINGS):
                    if cells == [_END]:
                        return
                    _check_closed(path, cells, number)
                if len(cells) != width:
                    cells = _fitted(path, number, cells, width)
                yield cells
    except UnicodeDecodeError as exc:
        where = _first_undecodable_line(path)
        raise InventoryError(
            f"inventory {path} is not a readable CSV: line {where} is not UTF-8 ({exc.reason})"
        ) from exc
    except csv.Error as exc:
        line = records.line_num if records is not None else 1
        raise InventoryError(f"inventory {path} is not a readable CSV: line {line}: {exc}") from exc
    except OSError as exc:
        raise InventoryError(f"inventory {path} is not a readable CSV: {exc}") from exc


def _with_end(lines: Iterable[str]) -> Iterator[str]:
    yield from lines
    yield _END_LINE


def _check_closed(path: Path, cells: list[str], number: int) -> None:
    if cells and cells[-1].endswith(_END_LINE):
        raise InventoryError(
            f"inventory {path} is not a readable CSV: a quoted value in record {number}"
            " is never closed"
        )


def _fitted(path: Path, number: int, cells: list[str], width: int) -> list[str]:
    """A record shorter than the header, padded; a longer one is refused."""
    if len(cells) < width:
        return cells + [""] * (width - len(cells))
    if number == 2:
        raise InventoryError(
            f"inventory {path}: line 2 has {len(cells)} fields but the header has {width}"
        )
    raise InventoryError(
        f"inventory {path} is not a readable CSV: expected {width} fields in line {number},"
        f" saw {len(cells)}"
    )


def _first_undecodable_line(path: Path) -> int | None:
    """The number of the first line that is not UTF-8 (the decoder only tells a byte offset)."""
    with open(path, "rb") as stream:
        for number, line in enumerate(stream, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return None
