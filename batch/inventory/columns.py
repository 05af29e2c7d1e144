"""The inventory's columns: canonical names, the header spellings accepted, the file formats.

Headers are matched case-insensitively, camelCase or snake_case (`orgId`, `org_id`, `ORGID`),
with `expireDate` accepted for `notAfter`; unknown columns are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from batch.errors import InventoryError

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

# Header spellings, folded (lower case, no "_", "-" or spaces) -> canonical name.
_ALIASES: dict[str, str] = {name.lower(): name for name in CANONICAL_COLUMNS} | {
    "expiredate": "notAfter",
}
_EXTENSIONS: dict[str, Format] = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def canonical_column(header: str) -> str | None:
    """The canonical column a header names (`org_id` -> `orgId`), or None when unknown."""
    return _ALIASES.get(re.sub(r"[\s_\-]", "", header).lower())


def inventory_format(path: Path, fmt: Format | None = None) -> Format:
    """The format given, else the one the file's extension names (InventoryError if none)."""
    if fmt is not None:
        return fmt
    found = _EXTENSIONS.get(path.suffix.lower())
    if found is None:
        known = ", ".join(_EXTENSIONS)
        raise InventoryError(f"inventory {path}: unknown extension (expected {known}, or --format)")
    return found


def column_map(path: Path, headers: Sequence[str], default_org: str | None) -> dict[str, str]:
    """Canonical name -> the file's header for it; raise if required columns are missing.

    A header repeated exactly is read from its first column only (the reader has always done
    so); two different spellings of one column are refused as ambiguous.
    """
    found: dict[str, str] = {}
    for header in headers:
        name = canonical_column(str(header))
        if name is None or found.get(name) == str(header):
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
