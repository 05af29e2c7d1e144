"""Stream a Parquet inventory's columns in record batches (pyarrow is the one boundary here)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from batch.errors import InventoryError
from batch.inventory.columns import column_map


def parquet_batches(
    path: Path, default_org: str | None, chunk_rows: int
) -> Iterator[tuple[dict[str, str], pa.RecordBatch]]:
    """The inventory's columns of the Parquet file, `chunk_rows` rows at a time."""
    try:
        with pq.ParquetFile(path, pre_buffer=False) as parquet:
            mapping = column_map(path, parquet.schema_arrow.names, default_org)
            for batch in parquet.iter_batches(
                batch_size=chunk_rows, columns=list(mapping.values())
            ):
                yield mapping, batch
    except (pa.ArrowException, OSError) as exc:
        raise InventoryError(f"inventory {path} is not a readable Parquet file: {exc}") from exc


def parquet_row_count(path: Path) -> int:
    """The number of rows the file's footer gives."""
    try:
        with pq.ParquetFile(path) as parquet:
            return int(parquet.metadata.num_rows)
    except (pa.ArrowException, OSError) as exc:
        raise InventoryError(f"inventory {path} is not a readable Parquet file: {exc}") from exc
