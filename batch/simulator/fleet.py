"""The simulated devices and their certificates, seeded from an inventory file or rows.

Seeded certificates are records, not X.509 objects, so that 100,000 devices seed in seconds: a
serial, a subject, a validity window and a status. Their public key (EC P-256) is made on first
need, e.g. when a device renews without a CSR and EnOS re-issues from the old request data.

The optional `sandbox` column shapes a device for demos and tests: `absent` (not registered),
`expired`, `revoked`, `flaky` (its first renew answers 99500), `flaky-after` (its first renew
takes effect, then answers 99500), `no-cert-auth` (its product has no certificate-based
bi-directional authentication).
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from batch.inventory import csv_records
from batch.model import identity_key
from batch.simulator.ca import Authority, PublicKey, device_subject

SEED_AGE = timedelta(days=335)  # seeded certificates were signed this long ago ...
SEED_LEFT = timedelta(days=30)  # ... and expire this long from now, unless the row says

FleetSource = str | Path | Iterable[Mapping[str, object]] | None


class CertStatus(enum.IntEnum):
    """`certStatus` of List Certificate."""

    VALID = 0
    REVOKED = 1
    EXPIRED = 2


@dataclass(slots=True, kw_only=True)
class CertEntry:
    """One certificate bound to a device (mutable: status changes on renew/revoke)."""

    serial: int
    common_name: str
    not_before: datetime
    not_after: datetime
    authority: Authority
    status: CertStatus = CertStatus.VALID
    subject: x509.Name | None = None  # None: the seeded default subject for common_name
    public_key: PublicKey | None = None  # None until first needed (seeded records)
    pem: str | None = None  # None for seeded records
    revoke_reason: str | None = None

    def status_at(self, now: datetime) -> CertStatus:
        """The status as EnOS reports it at `now` (a valid certificate past notAfter expired)."""
        if self.status is CertStatus.VALID and now >= self.not_after:
            return CertStatus.EXPIRED
        return self.status

    def subject_name(self) -> x509.Name:
        return self.subject if self.subject is not None else device_subject(self.common_name)

    def materialised_key(self) -> PublicKey:
        """The certificate's public key, made (EC P-256, cheap) on first need for seeded records."""
        if self.public_key is None:
            self.public_key = ec.generate_private_key(ec.SECP256R1()).public_key()
        return self.public_key


@dataclass(slots=True, kw_only=True)
class SimDevice:
    """A registered device: identity, product traits and bound certificates (oldest first)."""

    org_id: str
    asset_id: str | None = None
    product_key: str | None = None
    device_key: str | None = None
    cert_auth: bool = True  # the product supports certificate-based bi-directional auth
    flaky_renewals: int = 0  # renew calls still to answer with 99500
    fail_after_renewals: int = 0  # renewals still to answer with 99500 after they took effect
    renewals: int = 0
    certificates: list[CertEntry] = field(default_factory=list)
    lost_answers: list[int] = field(default_factory=list)  # issued serials never answered

    @property
    def identity(self) -> str:
        """The assetId, else `productKey/deviceKey` (the state file's device ID)."""
        return self.asset_id or f"{self.product_key}/{self.device_key}"


@dataclass(frozen=True, slots=True)
class _Row:
    org_id: str
    asset_id: str | None
    product_key: str | None
    device_key: str | None
    cert_sn: int
    not_after: datetime | None
    sandbox: str


class Fleet:
    """Every registered device, indexed by assetId and by productKey+deviceKey, and every serial."""

    def __init__(self, default_org: str, *, now: datetime) -> None:
        self.default_org = default_org
        self.orgs: set[str] = {default_org}
        self.devices: dict[str, SimDevice] = {}  # by `batch.model.identity_key`: never collide
        self._by_asset: dict[tuple[str, str], SimDevice] = {}
        self._by_keys: dict[tuple[str, str, str], SimDevice] = {}
        self.owners: dict[int, SimDevice] = {}  # serial -> the device it is bound to
        self._by_cn: dict[str, SimDevice] = {}  # common name -> first device that used it
        self._next_serial = 100_000
        self._now = now
        self._seed_not_before = now - SEED_AGE
        self._seed_not_after = now + SEED_LEFT

    def __len__(self) -> int:
        return len(self.devices)

    def find(
        self, org_id: str, asset_id: str | None, product_key: str | None, device_key: str | None
    ) -> SimDevice | None:
        """The device named by assetId (preferred) or productKey+deviceKey, if registered."""
        if asset_id:
            return self._by_asset.get((org_id, asset_id))
        if product_key and device_key:
            return self._by_keys.get((org_id, product_key, device_key))
        return None

    def named(self, org_id: str, identity: str) -> SimDevice | None:
        """The device an assetId names, else the one `productKey/deviceKey` names."""
        product, _, device = identity.partition("/")
        return self.find(org_id, identity, None, None) or self.find(org_id, None, product, device)

    def new_serial(self) -> int:
        """A serial no certificate has used."""
        serial = self._next_serial
        self._next_serial += 1
        return serial

    def bind(self, device: SimDevice, entry: CertEntry) -> None:
        """Attach a certificate to a device and record its serial as taken."""
        device.certificates.append(entry)
        self.owners[entry.serial] = device
        self._by_cn.setdefault(entry.common_name, device)
        self._next_serial = max(self._next_serial, entry.serial + 1)

    def cn_owner(self, common_name: str) -> SimDevice | None:
        """The first device whose certificate used this common name, if any."""
        return self._by_cn.get(common_name)

    def add_device(
        self,
        *,
        org_id: str | None = None,
        asset_id: str | None = None,
        product_key: str | None = None,
        device_key: str | None = None,
        cert_sn: int | None = None,
        not_after: datetime | None = None,
        sandbox: str = "",
    ) -> SimDevice | None:
        """Register a device with one seeded certificate; None when `sandbox` is `absent`.

        A device already registered (same assetId, or same productKey+deviceKey) is returned
        unchanged.

        A `cert_sn` already bound to another device is not shared: this device gets a fresh
        serial, so renewing it with that `cert_sn` answers 11833.
        """
        if not asset_id and not (product_key and device_key):
            raise ValueError("a device needs an assetId or a productKey and deviceKey")
        org = org_id or self.default_org
        serial = -1 if cert_sn is None else cert_sn  # -1: give it a fresh serial
        row = _Row(org, asset_id, product_key, device_key, serial, not_after, sandbox)
        return self._add(row)

    def _add(self, row: _Row) -> SimDevice | None:
        self.orgs.add(row.org_id)
        if row.sandbox == "absent":
            return None
        known = self.find(row.org_id, row.asset_id, None, None) or self.find(
            row.org_id, None, row.product_key, row.device_key
        )
        if known is not None:  # the same device listed again: its first row stands
            return known
        device = SimDevice(
            org_id=row.org_id,
            asset_id=row.asset_id,
            product_key=row.product_key,
            device_key=row.device_key,
            cert_auth=row.sandbox != "no-cert-auth",
            flaky_renewals=1 if row.sandbox == "flaky" else 0,
            fail_after_renewals=1 if row.sandbox == "flaky-after" else 0,
        )
        key = identity_key(row.org_id, row.asset_id, row.product_key, row.device_key)
        self.devices[key] = device
        if row.asset_id:
            self._by_asset[(row.org_id, row.asset_id)] = device
        if row.product_key and row.device_key:
            self._by_keys[(row.org_id, row.product_key, row.device_key)] = device
        self.bind(device, self._seed_cert(row))
        return device

    def _seed_cert(self, row: _Row) -> CertEntry:
        serial = row.cert_sn
        if serial < 0 or serial in self.owners:
            serial = self.new_serial()
        status = CertStatus.VALID
        not_after = row.not_after or self._seed_not_after
        if row.sandbox == "revoked":
            status = CertStatus.REVOKED
        elif row.sandbox == "expired":
            status = CertStatus.EXPIRED
            not_after = min(not_after, self._now - timedelta(days=1))
        return CertEntry(
            serial=serial,
            common_name=row.device_key or row.asset_id or "",
            not_before=(
                self._seed_not_before
                if row.not_after is None
                else min(self._seed_not_before, not_after - timedelta(days=1))
            ),
            not_after=not_after,
            authority=Authority.ECC,  # the lazily made key is EC P-256
            status=status,
            revoke_reason="KEY COMPROMISE" if status is CertStatus.REVOKED else None,
        )

    def seed(self, source: FleetSource) -> int:
        """Register every usable row of `source` (file path or row mappings); return how many."""
        if source is None:
            return 0
        rows = _rows_from_file(Path(source)) if isinstance(source, str | Path) else source
        before = len(self.devices)
        for row in _parse_rows(rows, self.default_org):
            self._add(row)
        return len(self.devices) - before


_ALIASES = {
    "orgid": "org_id",
    "assetid": "asset_id",
    "productkey": "product_key",
    "devicekey": "device_key",
    "certsn": "cert_sn",
    "notafter": "not_after",
    "expiredate": "not_after",
    "sandbox": "sandbox",
}


@functools.lru_cache(maxsize=256)  # called per cell: rows repeat the same few column names
def _canonical(column: str) -> str | None:
    """Map `orgId`, `org_id`, `ORGID`, `certSN` ... to one field name."""
    return _ALIASES.get(re.sub(r"[^a-z0-9]", "", column.lower()))


def _rows_from_file(path: Path) -> Iterator[Mapping[str, object]]:
    """Read a CSV or Parquet inventory into row mappings, column by column (fast)."""
    if path.suffix.lower() not in {".parquet", ".pq"}:
        records = csv_records(path)
        header = next(records)
        for record in records:
            yield dict(zip(header, record, strict=True))
        return
    table = pq.read_table(path)
    columns = [str(c) for c in table.column_names]
    values = [column.to_pylist() for column in table.columns]
    for cells in zip(*values, strict=True):
        yield dict(zip(columns, cells, strict=True))


def _parse_rows(rows: Iterable[Mapping[str, object]], default_org: str) -> Iterator[_Row]:
    """Turn tolerant inventory rows into seed rows; rows without identity or certSn are skipped."""
    for raw in rows:
        row = {name: _text(value) for key, value in raw.items() if (name := _canonical(key))}
        asset, pk, dk = row.get("asset_id"), row.get("product_key"), row.get("device_key")
        cert_sn = _integer(row.get("cert_sn"))
        if cert_sn is None or not (asset or (pk and dk)):
            continue
        yield _Row(
            org_id=row.get("org_id") or default_org,
            asset_id=asset,
            product_key=pk,
            device_key=dk,
            cert_sn=cert_sn,
            not_after=_moment(row.get("not_after")),
            sandbox=(row.get("sandbox") or "").strip().lower(),
        )


def _text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and value != value):  # NaN
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _integer(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _moment(text: str | None) -> datetime | None:
    """An ISO-8601 date/time or epoch milliseconds, as UTC; None if absent or unreadable."""
    if text is None:
        return None
    if text.isdigit():
        return datetime.fromtimestamp(int(text) / 1000, UTC)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
