"""Following a device's current certificate when the inventory's one was superseded."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

from batch.config import DueRule
from batch.model import CertRecord, Device, ErrorClass, Follow, KeyMode, Outcome, Status
from batch.renew.current import current_certificate, follow, maintenance_verdict
from batch.renew.due import Due
from batch.testing import ORG, run_job, simulator, write_inventory

NOW = datetime(2026, 11, 25, tzinfo=UTC)
DEVICE = Device(row=2, org_id="o", asset_id="a", cert_sn=7)


def _record(sn: str, status: str = "valid", days_left: int = 300, age: int = 10) -> CertRecord:
    return CertRecord(
        cert_sn=sn,
        status=status,
        sign_date=NOW - timedelta(days=age),
        expire_date=NOW + timedelta(days=days_left),
    )


def test_the_current_certificate_is_the_newest_valid_one_other_than_the_inventorys() -> None:
    records = [
        _record("7", "revoked", age=400),
        _record("8", "revoked", age=30),
        _record("9", age=5),
        _record("6", "expired", days_left=-1),
    ]
    current = current_certificate(records, 7, NOW)
    assert current is not None and current.cert_sn == "9"
    assert current_certificate([_record("7"), _record("8", "revoked")], 7, NOW) is None
    assert current_certificate([_record("7", "revoked")], 7, NOW) is None


def test_a_campaign_skips_a_superseded_device_unless_asked_to_renew_the_current_one() -> None:
    current = _record("9", days_left=700)
    skipped = follow(DEVICE, current, rule=None, renew_current=False, now=NOW)
    assert isinstance(skipped, Outcome) and skipped.status is Status.SKIPPED
    expires = (NOW + timedelta(days=700)).date().isoformat()
    assert skipped.note == f"superseded: current certificate 9 expires {expires}"
    assert (skipped.current_cert_sn, skipped.old_cert_sn) == ("9", 7)
    renew = follow(DEVICE, current, rule=None, renew_current=True, now=NOW)
    assert isinstance(renew, Follow) and renew.cert_sn == 9


def test_maintenance_decides_from_the_current_certificate() -> None:
    rule = DueRule(within_days=30)
    due = maintenance_verdict(
        DEVICE, [_record("7", "revoked"), _record("9", days_left=10)], rule, NOW
    )
    assert isinstance(due, Due) and due.follow is not None and due.follow.cert_sn == 9
    assert due.expires == NOW + timedelta(days=10)
    fresh = maintenance_verdict(DEVICE, [_record("7", "revoked"), _record("9")], rule, NOW)
    assert isinstance(fresh, Outcome) and fresh.status is Status.SKIPPED
    assert (fresh.note or "").startswith("not_due: current certificate 9 expires")
    assert fresh.current_cert_sn == "9"
    expired = maintenance_verdict(
        DEVICE, [_record("7", "expired", days_left=-2), _record("9", days_left=3)], rule, NOW
    )
    assert isinstance(expired, Due) and expired.follow is not None


def test_a_device_without_any_valid_certificate_still_needs_apply() -> None:
    rule = DueRule(within_days=30)
    revoked = maintenance_verdict(
        DEVICE, [_record("7", "revoked"), _record("8", "revoked")], rule, NOW
    )
    assert isinstance(revoked, Outcome) and revoked.error_class is ErrorClass.CERT_REVOKED
    assert "Apply" in (revoked.error_message or "")
    valid = maintenance_verdict(DEVICE, [_record("7", days_left=5), _record("9")], rule, NOW)
    assert isinstance(valid, Due) and valid.follow is None  # the inventory's is still valid


def _iso(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


def _day_in(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).date().isoformat()


async def test_a_campaign_on_a_stale_inventory_skips_renewed_devices_or_renews_current(
    tmp_path: Path,
) -> None:
    rows: list[dict[str, object]] = [
        {"orgId": ORG, "assetId": "a1", "certSn": 11},
        {"orgId": ORG, "assetId": "a2", "certSn": 12},
        {"orgId": ORG, "assetId": "gone", "certSn": 13, "sandbox": "revoked"},
    ]
    inventory = write_inventory(tmp_path / "inv.csv", [{**r, "sandbox": ""} for r in rows])
    async with simulator(rows, tmp_path) as sim:
        first = await run_job(sim, inventory, tmp_path / "night-1", key_mode=KeyMode.EC256)
        stale = await run_job(sim, inventory, tmp_path / "night-2", key_mode=KeyMode.EC256)
        renewals_after_stale = [sim.device(a).renewals for a in ("a1", "a2")]
        forced = await run_job(
            sim, inventory, tmp_path / "night-3", key_mode=KeyMode.EC256, renew_current=True
        )
        renewals_after_forced = [sim.device(a).renewals for a in ("a1", "a2")]
    issued = {r["assetId"]: r["newCertSn"] for r in first.rows}
    by = {r["assetId"]: r for r in stale.rows}
    for asset in ("a1", "a2"):
        assert (by[asset]["status"], by[asset]["errorClass"]) == ("skipped", "")
        assert by[asset]["note"] == (
            f"superseded: current certificate {issued[asset]} expires {_day_in(730)}"
        )
        assert by[asset]["currentCertSn"] == issued[asset]
    # Only a device with no valid certificate at all is cert_revoked (use Apply).
    assert (by["gone"]["status"], by["gone"]["errorClass"]) == ("failed", "cert_revoked")
    assert "Apply" in by["gone"]["errorMessage"]
    assert renewals_after_stale == [1, 1]
    forced_by = {r["assetId"]: r for r in forced.rows}
    for asset in ("a1", "a2"):
        row = forced_by[asset]
        assert row["status"] == "renewed" and row["oldCertSn"] == str(11 if asset == "a1" else 12)
        assert f"renewed the current certificate {issued[asset]}" in row["note"]
        assert row["newCertSn"] not in (issued[asset], row["oldCertSn"])
    assert renewals_after_forced == [2, 2]


async def test_maintenance_after_a_campaign_on_the_unchanged_inventory(tmp_path: Path) -> None:
    """The operating loop: a campaign, then the nightly `--renew-within 30` run in a new folder
    on the same inventory, whose certSn and notAfter all name superseded certificates."""
    rows: list[dict[str, object]] = [
        # due by the inventory; the campaign grants 10 days (validDay): due again by the current
        {"orgId": ORG, "assetId": "short-1", "certSn": 1, "notAfter": _iso(5), "validDay": 10},
        {"orgId": ORG, "assetId": "short-2", "certSn": 2, "notAfter": "", "validDay": 10},
        # due by the inventory; the campaign grants EnOS's default: not due by the current
        {"orgId": ORG, "assetId": "long-1", "certSn": 3, "notAfter": _iso(5), "validDay": ""},
        {"orgId": ORG, "assetId": "long-2", "certSn": 4, "notAfter": "", "validDay": ""},
        # not due by the inventory (and renewed by the campaign all the same)
        {"orgId": ORG, "assetId": "far-1", "certSn": 5, "notAfter": _iso(200), "validDay": ""},
    ]
    inventory = write_inventory(tmp_path / "inventory.csv", rows)
    async with simulator(rows, tmp_path) as sim:
        campaign = await run_job(sim, inventory, tmp_path / "campaign", key_mode=KeyMode.EC256)
        nightly = await run_job(
            sim, inventory, tmp_path / "night-1", key_mode=KeyMode.EC256, renew_within=30
        )
        renewals = {r["assetId"]: sim.device(str(r["assetId"])).renewals for r in rows}
        valid = {
            str(r["assetId"]): [
                str(c.serial)
                for c in sim.device(str(r["assetId"])).certificates
                if c.status_at(datetime.now(UTC)).name == "VALID"
            ]
            for r in rows
        }
    assert {r["status"] for r in campaign.rows} == {"renewed"}
    issued = {r["assetId"]: r["newCertSn"] for r in campaign.rows}
    by = {r["assetId"]: r for r in nightly.rows}
    assert {a: (r["status"], r["errorClass"]) for a, r in by.items()} == {
        "short-1": ("renewed", ""),
        "short-2": ("renewed", ""),
        "long-1": ("skipped", ""),
        "long-2": ("skipped", ""),
        "far-1": ("skipped", ""),
    }
    for asset in ("short-1", "short-2"):  # renewed by their current certificate
        assert f"superseded by {issued[asset]}" in by[asset]["note"]
        assert valid[asset] == [by[asset]["newCertSn"]]
    for asset in ("long-1", "long-2"):
        assert by[asset]["note"].startswith(f"not_due: current certificate {issued[asset]} ")
        assert by[asset]["currentCertSn"] == issued[asset]
    assert renewals == {"short-1": 2, "short-2": 2, "long-1": 1, "long-2": 1, "far-1": 1}
    assert nightly.summary.exit_code == 0
    # Its inventory.next.csv names each device's current certificate (far-1 was decided from
    # the inventory's notAfter alone, so it keeps the inventory's view).
    with (tmp_path / "night-1" / "inventory.next.csv").open(newline="") as fh:
        next_sn = {r["assetId"]: r["certSn"] for r in csv.DictReader(fh)}
    assert next_sn == {
        "short-1": by["short-1"]["newCertSn"],
        "short-2": by["short-2"]["newCertSn"],
        "long-1": issued["long-1"],
        "long-2": issued["long-2"],
        "far-1": "5",
    }
