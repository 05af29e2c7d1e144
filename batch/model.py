"""Values shared by every stage of the pipeline: frozen, plain, no behaviour beyond naming.

A row of the inventory becomes a `Device` (or an `InvalidRow`); a device ends as exactly one
`Outcome`, which is one row of the report.

Outcomes are made by their named constructors (`Outcome.renewed`, `.failed`, `.invalid`,
`.skipped`) and turned into JSON by one serialiser, `Outcome.to_json` (`json_value` per value):
the journal, report.csv/.parquet and summary.json all render values through it.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import operator
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any, Protocol, overload


class Status(enum.StrEnum):
    """The final state of one inventory row."""

    RENEWED = "renewed"
    FAILED = "failed"
    INVALID = "invalid"
    SKIPPED = "skipped"


class ErrorClass(enum.StrEnum):
    """Why a device did not renew. `batch.enos.errors.POLICY` says which ones are retried."""

    INVALID_REQUEST = "invalid_request"  # 99400
    DEVICE_NOT_FOUND = "device_not_found"  # 11404
    CERT_BOUND_TO_OTHER_DEVICE = "cert_bound_to_other_device"  # 11833
    SERVER_ERROR = "server_error"  # 99500, HTTP 5xx
    PERMISSION_DENIED = "permission_denied"  # 99403, HTTP 403
    NOT_FOUND = "not_found"  # 99404
    THROTTLED = "throttled"  # HTTP 429
    NETWORK = "network"  # refused, reset, dropped
    TIMEOUT = "timeout"
    AUTH = "auth"  # the token service refused our credentials
    TOKEN_SERVICE = "token_service"  # the token service failed: no renew was sent
    TOKEN_REJECTED = "token_rejected"  # HTTP 401 even with a fresh token (another holder?)
    MALFORMED_RESPONSE = "malformed_response"
    UNKNOWN = "unknown"
    # Decided by us, not by EnOS:
    VERIFICATION_FAILED = "verification_failed"
    CERT_EXPIRED = "cert_expired"
    CERT_REVOKED = "cert_revoked"
    AMBIGUOUS = "ambiguous"  # the renewal may have happened and could not be resolved
    INVALID_INPUT = "invalid_input"  # a bad inventory row
    DUPLICATE = "duplicate"  # the same device appears again in the inventory
    BUNDLE_REFUSED = "bundle_refused"  # a link or non-folder on the bundle's path under --out


class KeyMode(enum.StrEnum):
    """Where the key of the renewed certificate comes from."""

    REUSE = "reuse"  # no CSR: EnOS re-issues from the previous request data
    RSA2048 = "rsa2048"
    EC256 = "ec256"
    CSR_COLUMN = "csr-column"  # a CSR file per device, named by the inventory's csrPath


class ParamPlacement(enum.StrEnum):
    """Where Renew's certSn, validDay and issueAuthority travel (or, for a gateway, are read).

    Every cloud Renew page puts them in the JSON body; the Edge Renew page puts certSn and
    validDay in the query. BOTH sends them in both places, so either kind of gateway finds them.
    """

    QUERY = "query"
    BODY = "body"
    BOTH = "both"


class Resolution(enum.StrEnum):
    """How a device's final state was reached."""

    DIRECT = "direct"  # the renew call answered
    RECONCILED = "reconciled"  # the answer was lost; List Certificate showed the renewal
    RESUMED = "resumed"  # finished in an earlier run of the same output folder


class DeviceRef(Protocol):
    """What the EnOS client needs to address a device."""

    @property
    def org_id(self) -> str: ...
    @property
    def asset_id(self) -> str | None: ...
    @property
    def product_key(self) -> str | None: ...
    @property
    def device_key(self) -> str | None: ...


def device_identity(ref: DeviceRef) -> str:
    """The device's name as EnOS knows it: the assetId, else `productKey/deviceKey`."""
    if ref.asset_id:
        return ref.asset_id
    return f"{ref.product_key}/{ref.device_key}"


def identity_key(
    org_id: str, asset_id: str | None, product_key: str | None, device_key: str | None
) -> str:
    """The device's unambiguous key: its kind of identifier, then length-prefixed fields.

    `org/assetId` and `org/productKey/deviceKey` collide (assetId "pk1/dk1" against the pair
    pk1 + dk1; orgs holding "/"); `a:<len>:<org>:<assetId>` and
    `p:<len>:<org>:<len>:<productKey>:<deviceKey>` cannot (every field but the last carries
    its length), stay readable in the journal, and cost a fraction of a JSON encoding.
    """
    if asset_id:
        return f"a:{len(org_id)}:{org_id}:{asset_id}"
    product = product_key or ""
    return f"p:{len(org_id)}:{org_id}:{len(product)}:{product}:{device_key or ''}"


_KEY = re.compile(r"([ap]):([0-9]+):", re.ASCII)


def shard_text(key: str) -> str:
    """The text `in_shard` hashes for a device key: `org/identity`, as versions before
    `identity_key` did, so no device changes shard on upgrade (two devices sharing that text
    only share a shard, which is harmless). Any other text is hashed as is."""
    found = _KEY.match(key)
    if found is None:
        return key
    start = found.end()
    org_end = start + int(found.group(2))
    org, rest = key[start:org_end], key[org_end + 1 :]
    if found.group(1) == "p":
        length, _, tail = rest.partition(":")
        rest = f"{tail[: int(length)]}/{tail[int(length) + 1 :]}"
    return f"{org}/{rest}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Device:
    """One valid inventory row: a device and the certificate to renew."""

    row: int  # the inventory line number (CSV: the header is line 1) or Parquet row + 1
    org_id: str
    cert_sn: int
    asset_id: str | None = None
    product_key: str | None = None
    device_key: str | None = None
    valid_day: int | None = None
    issue_authority: str | None = None  # "RSA" or "ECC"
    csr_path: str | None = None
    subject: str | None = None  # RFC 4514 subject of the current certificate, when known
    not_after: datetime | None = None  # expiry of the current certificate, when known

    @property
    def identity(self) -> str:
        return device_identity(self)

    @property
    def key(self) -> str:
        """Unique across orgs and kinds of identifier: what dedupe and the journal use."""
        return identity_key(self.org_id, self.asset_id, self.product_key, self.device_key)


@dataclass(frozen=True, slots=True, kw_only=True)
class InvalidRow:
    """An inventory row that cannot be renewed, and why."""

    row: int
    reason: str
    error_class: ErrorClass = ErrorClass.INVALID_INPUT
    values: Mapping[str, str] = field(default_factory=dict)  # identifying columns, as read


@dataclass(frozen=True, slots=True, kw_only=True)
class Issued:
    """What EnOS returned for a successful renew (or apply)."""

    cert_pem: str
    ca_pem: str
    cert_sn: str
    cert_chain_url: str | None = None
    issue_authority: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CertRecord:
    """One entry of List Certificate."""

    cert_sn: str
    status: str  # "valid" | "revoked" | "expired"
    sign_date: datetime | None = None
    expire_date: datetime | None = None
    subject: str | None = None
    issuer: str | None = None
    cert_pem: str | None = None  # only when EnOS returns the PEM (the documented sample does not)


@dataclass(frozen=True, slots=True)
class Follow:
    """Renew the device's current certificate `cert_sn` in place of the inventory's, which was
    superseded (see batch.renew.current); `note` says so in the report."""

    cert_sn: int
    note: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """The final state of one inventory row: one row of the report."""

    row: int
    status: Status
    org_id: str | None = None
    asset_id: str | None = None
    product_key: str | None = None
    device_key: str | None = None
    old_cert_sn: int | str | None = None
    error_class: ErrorClass | None = None
    error_code: int | None = None
    error_message: str | None = None
    attempts: int = 0
    new_cert_sn: str | None = None
    # The device's valid certificate when it is neither the inventory's nor renewed here
    # (the inventory's was superseded: see batch.renew.current); what inventory.next.csv carries.
    current_cert_sn: str | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None
    requested_days: int | None = None
    granted_days: int | None = None
    clamped: bool | None = None
    key_type: str | None = None
    cert_sha256: str | None = None
    bundle_path: str | None = None
    request_id: str | None = None
    duration_ms: int | None = None
    resolution: Resolution | None = None
    canary: bool | None = None  # renewed in the canary batch (--canary)
    note: str | None = None

    # -- named constructors: how every stage makes a device's Outcome ---------------------

    @classmethod
    def for_device(cls, device: Device, status: Status, **fields: Any) -> Outcome:
        """An Outcome carrying the device's identifying columns and the certSn it was given."""
        return cls(
            row=device.row,
            status=status,
            org_id=device.org_id,
            asset_id=device.asset_id,
            product_key=device.product_key,
            device_key=device.device_key,
            old_cert_sn=device.cert_sn,
            **fields,
        )

    @classmethod
    def renewed(cls, device: Device, **fields: Any) -> Outcome:
        return cls.for_device(device, Status.RENEWED, **fields)

    @classmethod
    def failed(
        cls, device: Device, *, error_class: ErrorClass, error_message: str, **fields: Any
    ) -> Outcome:
        return cls.for_device(
            device, Status.FAILED, error_class=error_class, error_message=error_message, **fields
        )

    @classmethod
    def skipped(cls, device: Device, *, note: str, **fields: Any) -> Outcome:
        return cls.for_device(device, Status.SKIPPED, note=note, **fields)

    @overload
    @classmethod
    def invalid(cls, item: InvalidRow) -> Outcome: ...
    @overload
    @classmethod
    def invalid(cls, item: Device, *, error_class: ErrorClass, error_message: str) -> Outcome: ...
    @classmethod
    def invalid(
        cls,
        item: Device | InvalidRow,
        *,
        error_class: ErrorClass | None = None,
        error_message: str | None = None,
    ) -> Outcome:
        """A row not renewed because of its input: an unreadable row (its values as read, its
        reason), or a readable device refused (a duplicate, an unusable CSR file)."""
        if isinstance(item, Device):
            return cls.for_device(
                item, Status.INVALID, error_class=error_class, error_message=error_message
            )
        values = item.values
        return cls(
            row=item.row,
            status=Status.INVALID,
            org_id=values.get("orgId") or None,
            asset_id=values.get("assetId") or None,
            product_key=values.get("productKey") or None,
            device_key=values.get("deviceKey") or None,
            old_cert_sn=values.get("certSn") or None,
            error_class=item.error_class,
            error_message=item.reason,
        )

    # -- the one serialiser ---------------------------------------------------------------

    def to_json(self, *, utc: bool = False) -> dict[str, Plain]:
        """Every field by name, as JSON values (see `json_value`; `utc` as there)."""
        # Twice per renewal (journal and report): the plain values, most of them, skip the call.
        values = zip(OUTCOME_FIELDS, _outcome_values(self), strict=True)
        return {
            name: value if type(value) in _PLAIN_TYPES else json_value(value, utc=utc)
            for name, value in values
        }

    @classmethod
    def from_json(cls, document: Mapping[str, object]) -> Outcome:
        """The Outcome `to_json` (not `utc`) wrote, exactly; fields it lacks take defaults."""
        hints = _outcome_hints()
        values: dict[str, Any] = {
            name: _typed(document[name], hints[name]) for name in OUTCOME_FIELDS if name in document
        }
        return cls(**values)


OUTCOME_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Outcome))

Plain = str | int | float | bool | None  # a JSON scalar
_AS_IS = (str, int, bool, float, type(None))
_PLAIN_TYPES = frozenset(_AS_IS)
_outcome_values = operator.attrgetter(*OUTCOME_FIELDS)  # every field's value, in field order


def json_value(value: object, *, utc: bool = False) -> Plain:
    """A value as JSON: the one rule every output renders values by.

    Enums by value; paths as text; times in ISO 8601, either exact (as given, offset kept or
    naive: what the journal reads back) or, with `utc`, in UTC with "Z" as every report shows
    them (a naive time taken as UTC, not local time). Anything else is a bug: TypeError.
    """
    if type(value) in _AS_IS:  # most values: nothing to convert
        return typing.cast(Plain, value)
    if isinstance(value, enum.Enum):
        return typing.cast(Plain, value.value)
    if isinstance(value, datetime):
        return _utc_text(value) if utc else value.isoformat()
    if isinstance(value, str | int | float):  # subclasses of the plain types
        return value
    if isinstance(value, PurePath):
        return str(value)
    raise TypeError(f"no JSON form for a value of type {type(value).__name__}")


def _utc_text(moment: datetime) -> str:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")


@functools.cache
def _outcome_hints() -> dict[str, Any]:
    return typing.get_type_hints(Outcome)


def _typed(value: object, hint: object) -> object:
    """A JSON value back as the field's type (an enum, a datetime, or as it is)."""
    if value is None:
        return None
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for option in options:
        if isinstance(option, type) and issubclass(option, enum.Enum):
            return option(value)
        if option is datetime and isinstance(value, str):
            return datetime.fromisoformat(value)
    return value


def invalid_outcome(invalid: InvalidRow) -> Outcome:
    """The report row of an inventory row that could not be read as a device."""
    return Outcome.invalid(invalid)
