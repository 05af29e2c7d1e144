"""Write inventory CSVs (retry.csv, inventory.next.csv) atomically, values as they are."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from datetime import UTC

from batch.inventory.columns import CANONICAL_COLUMNS
from batch.model import Device
from batch.storage import atomic_output

_WRITE_BLOCK = 1 << 20


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
