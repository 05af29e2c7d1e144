"""Seeding the simulator's fleet from inventory files and rows."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch.simulator.fleet import CertStatus, Fleet, SimDevice

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def test_csv_columns_are_matched_tolerantly(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.csv"
    inventory.write_text(
        "ORG_ID,asset_id,product_key,DeviceKey,certSN,expireDate\n"
        "o-1,a-1,,,11,2027-01-02T03:04:05Z\n"
        ",,pk,dk,12,\n"  # no org: the default org
        ",a-3,,,not-a-number,\n"  # no usable certSn: ignored
        ",,pk,,13,\n"  # no identity: ignored
    )
    fleet = Fleet("o-default", now=NOW)
    assert fleet.seed(inventory) == 2
    first = fleet.find("o-1", "a-1", None, None)
    assert first is not None and first.certificates[0].serial == 11
    assert first.certificates[0].not_after == datetime(2027, 1, 2, 3, 4, 5, tzinfo=UTC)
    second = fleet.find("o-default", None, "pk", "dk")
    assert second is not None and second.identity == "pk/dk"
    assert second.certificates[0].not_after == NOW + timedelta(days=30)
    assert second.certificates[0].not_before == NOW - timedelta(days=335)
    assert fleet.find("o-default", "a-3", None, None) is None
    assert fleet.orgs == {"o-default", "o-1"}


def test_parquet_inventories_seed_too(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.parquet"
    table = pa.table(
        {
            "orgId": ["o-1", "o-1"],
            "assetId": ["a-1", "a-2"],
            "certSn": [21, 22],
            "notAfter": pa.array(
                [datetime(2026, 7, 1, tzinfo=UTC), datetime(2026, 8, 1, tzinfo=UTC)],
                pa.timestamp("ns", tz="UTC"),
            ),
        }
    )
    pq.write_table(table, inventory)
    fleet = Fleet("o-default", now=NOW)
    assert fleet.seed(inventory) == 2
    device = fleet.find("o-1", "a-2", None, None)
    assert device is not None
    assert device.certificates[0].serial == 22
    assert device.certificates[0].not_after == datetime(2026, 8, 1, tzinfo=UTC)


def _device(fleet: Fleet, identity: str) -> SimDevice:
    device = fleet.named("o", identity)
    assert device is not None
    return device


def test_a_repeated_serial_stays_with_its_first_owner() -> None:
    fleet = Fleet("o", now=NOW)
    fleet.seed([{"assetId": "a", "certSn": 5}, {"assetId": "b", "certSn": 5}])
    first, second = _device(fleet, "a"), _device(fleet, "b")
    assert fleet.owners[5] is first
    assert second.certificates[0].serial != 5
    assert fleet.owners[second.certificates[0].serial] is second


def test_a_device_listed_twice_keeps_its_first_row() -> None:
    fleet = Fleet("o", now=NOW)
    fleet.seed([{"assetId": "a", "certSn": 5}, {"assetId": "a", "certSn": 6}])
    assert len(fleet) == 1
    assert [c.serial for c in _device(fleet, "a").certificates] == [5]
    assert 6 not in fleet.owners


@pytest.mark.parametrize(
    ("sandbox", "status", "cert_auth", "flaky"),
    [
        ("", CertStatus.VALID, True, 0),
        ("expired", CertStatus.EXPIRED, True, 0),
        ("revoked", CertStatus.REVOKED, True, 0),
        ("flaky", CertStatus.VALID, True, 1),
        ("no-cert-auth", CertStatus.VALID, False, 0),
    ],
)
def test_sandbox_column_shapes_the_device(
    sandbox: str, status: CertStatus, cert_auth: bool, flaky: int
) -> None:
    fleet = Fleet("o", now=NOW)
    fleet.seed([{"assetId": "a", "certSn": 1, "sandbox": sandbox}])
    device = _device(fleet, "a")
    assert device.certificates[0].status_at(NOW) is status
    assert (device.cert_auth, device.flaky_renewals) == (cert_auth, flaky)


def test_an_absent_device_is_not_registered_but_its_org_is() -> None:
    fleet = Fleet("o", now=NOW)
    fleet.seed([{"orgId": "o-2", "assetId": "a", "certSn": 1, "sandbox": "absent"}])
    assert len(fleet) == 0 and "o-2" in fleet.orgs


def test_devices_can_be_added_programmatically() -> None:
    fleet = Fleet("o", now=NOW)
    device = fleet.add_device(product_key="pk", device_key="dk", cert_sn=77)
    assert device is fleet.find("o", None, "pk", "dk")
    assert device is not None and device.certificates[0].serial == 77
    fresh = fleet.add_device(asset_id="x")
    assert fresh is not None and fresh.certificates[0].serial not in {77}
    assert fleet.new_serial() > max(77, fresh.certificates[0].serial)
    with pytest.raises(ValueError, match="assetId"):
        fleet.add_device(product_key="pk")


def test_seeded_keys_are_made_only_when_needed() -> None:
    fleet = Fleet("o", now=NOW)
    fleet.seed([{"assetId": "a", "certSn": 1}])
    entry = _device(fleet, "a").certificates[0]
    assert entry.public_key is None
    key = entry.materialised_key()
    assert entry.materialised_key() is key


def test_seeding_100000_devices_takes_seconds(tmp_path: Path) -> None:
    inventory = tmp_path / "big.csv"
    n = 100_000
    inventory.write_text(
        "orgId,assetId,certSn\n" + "".join(f"o-big,asset-{i},{i + 1}\n" for i in range(n))
    )
    fleet = Fleet("o-big", now=NOW)
    started = time.perf_counter()
    assert fleet.seed(inventory) == n
    elapsed = time.perf_counter() - started
    print(f"seeded {n} devices in {elapsed:.2f} s")
    assert elapsed < 60  # generous: the target is a few seconds on a shared 2-core machine
    assert fleet.owners[n].identity == f"asset-{n - 1}"
