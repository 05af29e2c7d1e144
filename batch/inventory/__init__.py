"""Stage 1: read the operator's inventory (CSV or Parquet) into `Device | InvalidRow` values.

Modules: `columns` (names, header spellings, formats), `rows` (one row's validation),
`csv_file` / `parquet_file` (streaming readers), `read` (the whole file: read, check, count,
fingerprint), `write` (inventory CSVs written back: retry.csv, inventory.next.csv).
"""

from batch.inventory.columns import (
    CANONICAL_COLUMNS,
    IDENTIFYING_COLUMNS,
    Format,
    canonical_column,
    inventory_format,
)
from batch.inventory.csv_file import csv_records
from batch.inventory.read import (
    check_readable,
    count_rows,
    inventory_fingerprint,
    read_inventory,
)
from batch.inventory.rows import parse_row
from batch.inventory.write import write_csv_rows, write_inventory_csv

__all__ = [
    "CANONICAL_COLUMNS",
    "IDENTIFYING_COLUMNS",
    "Format",
    "canonical_column",
    "check_readable",
    "count_rows",
    "csv_records",
    "inventory_fingerprint",
    "inventory_format",
    "parse_row",
    "read_inventory",
    "write_csv_rows",
    "write_inventory_csv",
]
