"""Maintenance mode: what is due, what is not, what cannot be renewed, and in what order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from batch.config import DueRule
from batch.model import CertRecord, Device, ErrorClass, Outcome, Status
from batch.renew.due import Due, verdict_from_inventory, verdict_from_list
from batch.testing import ORG, job

NOW = datetime(2026, 11, 25, tzinfo=UTC)


def _device(**kw: object) -> Device:
    return Device(row=2, org_id="o", asset_id="a", cert_sn=7, **kw)  # type: ignore[arg-type]


def _record(status: str = "valid", days_left: int = 10, lifetime: int = 100) -> CertRecord:
    expire = NOW + timedelta(days=days_left)
    return CertRecord(
        cert_sn="7", status=status, sign_date=expire - timedelta(days=lifetime), expire_date=expire
    )


def test_inventory_not_after_decides_without_a_lookup() -> None:
    rule = DueRule(within_days=30)
    soon = verdict_from_inventory(_device(not_after=NOW + timedelta(days=5)), rule, NOW)
    assert isinstance(soon, Due) and soon.expires == NOW + timedelta(days=5)
    later = verdict_from_inventory(_device(not_after=NOW + timedelta(days=90)), rule, NOW)
    assert isinstance(later, Outcome) and later.status is Status.SKIPPED
    assert (later.note or "").startswith("not_due")
    # Expired by the inventory: List tells whether a newer valid certificate superseded it.
    assert verdict_from_inventory(_device(not_after=NOW - timedelta(days=1)), rule, NOW) is None
    assert verdict_from_inventory(_device(), rule, NOW) is None  # unknown: look it up


def test_list_decides_due_expired_revoked_and_unbound() -> None:
    rule = DueRule(within_days=30)
    assert isinstance(verdict_from_list(_device(), [_record(days_left=3)], rule, NOW), Due)
    skipped = verdict_from_list(_device(), [_record(days_left=60)], rule, NOW)
    assert isinstance(skipped, Outcome) and skipped.status is Status.SKIPPED
    revoked = verdict_from_list(_device(), [_record(status="revoked")], rule, NOW)
    assert isinstance(revoked, Outcome) and revoked.error_class is ErrorClass.CERT_REVOKED
    assert "Apply" in (revoked.error_message or "")
    expired = verdict_from_list(_device(), [_record(status="expired")], rule, NOW)
    assert isinstance(expired, Outcome) and expired.error_class is ErrorClass.CERT_EXPIRED
    other = CertRecord(cert_sn="8", status="valid")
    unbound = verdict_from_list(_device(), [other], rule, NOW)
    assert isinstance(unbound, Outcome) and unbound.status is Status.FAILED


def test_fraction_of_lifetime() -> None:
    rule = DueRule(at_fraction=0.67)
    lived_70 = _record(days_left=30, lifetime=100)
    lived_50 = _record(days_left=50, lifetime=100)
    assert isinstance(verdict_from_list(_device(), [lived_70], rule, NOW), Due)
    assert isinstance(verdict_from_list(_device(), [lived_50], rule, NOW), Outcome)


def _iso(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


async def test_maintenance_run_renews_due_devices_soonest_first(tmp_path: Path) -> None:
    fleet_rows: list[dict[str, object]] = [
        {"orgId": ORG, "assetId": "due-20", "certSn": 1, "notAfter": _iso(20)},
        {"orgId": ORG, "assetId": "later", "certSn": 2, "notAfter": _iso(200)},
        {"orgId": ORG, "assetId": "due-3", "certSn": 3, "notAfter": _iso(3)},
        {"orgId": ORG, "assetId": "expired", "certSn": 4, "sandbox": "expired"},
        {"orgId": ORG, "assetId": "revoked", "certSn": 5, "sandbox": "revoked"},
        {"orgId": ORG, "assetId": "due-9", "certSn": 6, "notAfter": _iso(9)},
    ]
    # the inventory has no notAfter: every certificate is looked up with List Certificate
    inventory = [
        {k: v for k, v in r.items() if k not in ("notAfter", "sandbox")} for r in fleet_rows
    ]
    result = await job(
        tmp_path, fleet_rows, inventory_rows=inventory, renew_within=30, concurrency=1
    )
    by = result.by_device()
    assert by["later"]["status"] == "skipped" and by["later"]["note"].startswith("not_due")
    assert (by["expired"]["status"], by["expired"]["errorClass"]) == ("failed", "cert_expired")
    assert (by["revoked"]["status"], by["revoked"]["errorClass"]) == ("failed", "cert_revoked")
    renewed = [r["assetId"] for r in result.rows if r["status"] == "renewed"]
    assert renewed == ["due-3", "due-9", "due-20"]
    assert result.renewals("later") == 0
    assert result.summary.exit_code == 1  # expired/revoked devices need an operator


async def test_inventory_not_after_needs_no_lookup(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [
        {"orgId": ORG, "assetId": "soon", "certSn": 1, "notAfter": _iso(5)},
        {"orgId": ORG, "assetId": "far", "certSn": 2, "notAfter": _iso(300)},
    ]
    result = await job(tmp_path, rows, renew_within=30)
    assert {r["assetId"]: r["status"] for r in result.rows} == {"soon": "renewed", "far": "skipped"}
    assert result.sim.state_dict()["stats"]["requests"].get("list", 0) == 0
    assert result.summary.exit_code == 0
