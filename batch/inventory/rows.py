"""One inventory row -> a `Device`, or an `InvalidRow` saying what is wrong (pure: no I/O).

A bad row is a value, never an exception. Each column has its type rule: identifiers are
printable text; certSn a non-negative integer (ASCII digits, or a whole number from a typed
Parquet column, exact); validDay 1..36500; issueAuthority RSA or ECC; notAfter an ISO-8601
date/datetime or epoch milliseconds, as aware UTC. The first problem found is the reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal

from batch.inventory.columns import IDENTIFYING_COLUMNS, canonical_column
from batch.model import Device, InvalidRow

_MAX_VALID_DAY = 36_500
_AUTHORITIES = frozenset({"RSA", "ECC"})
_DIGITS = re.compile(r"[0-9]+", re.ASCII)
# Floats above 2**53 no longer hold every integer: a certSn read as one may have been rounded.
_MAX_EXACT_FLOAT = 2**53


class _BadValue(ValueError):
    """A cell that cannot be read as its column's type; the message is the row's reason."""


def _quote(value: object, limit: int = 40) -> str:
    """A cell for a reason: quoted, control characters escaped, long values cut short."""
    text = repr(value)
    if len(text) <= limit:
        return text
    closing = text[-1] if text[-1] in "'\"" else ""
    return f"{text[: limit - 4]}...{closing}"


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
    return parse_canonical(canonical, row=row, default_org=default_org)


def parse_canonical(
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
