"""Reruns of the same output folder: lost bundles, a changed inventory, --retry-failed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from cryptography.hazmat.primitives.serialization import pkcs12

from batch.model import KeyMode
from batch.testing import (
    ORG,
    assert_bundle_is_sound,
    fleet,
    job,
    run_job,
    simulator,
    write_inventory,
)


async def test_a_deleted_bundle_is_rewritten_from_the_journal(tmp_path: Path) -> None:
    rows = fleet(3)
    inventory = write_inventory(tmp_path / "inv.csv", rows)
    async with simulator(rows, tmp_path) as sim:
        first = await run_job(sim, inventory, tmp_path / "out", key_mode=KeyMode.EC256)
        lost = tmp_path / "out" / first.rows[0]["bundlePath"]
        original = (lost / "cert.pem").read_bytes()
        shutil.rmtree(lost)
        second = await run_job(sim, inventory, tmp_path / "out", key_mode=KeyMode.EC256)
    assert (lost / "cert.pem").read_bytes() == original
    assert_bundle_is_sound(lost, with_key=True)  # the private key came back from the journal
    rewritten = [r for r in second.rows if r["note"] == "bundle rewritten from the journal"]
    assert len(rewritten) == 1 and rewritten[0]["resolution"] == "resumed"
    assert all(second.renewals(f"pkA/dev-{i:04d}") == 1 for i in range(3))


async def test_a_rewritten_bundle_keeps_why_the_device_was_renewed_twice(tmp_path: Path) -> None:
    # A renewal whose answer was lost, renewed once more (List has no PEM): after a crash
    # before its report row, the rerun's row still says so, next to the rewrite.
    rows = fleet(20)
    inventory = write_inventory(tmp_path / "inv.csv", rows)
    async with simulator(rows, tmp_path, lost_rate=0.3, seed=5) as sim:
        first = await run_job(
            sim, inventory, tmp_path / "out", key_mode=KeyMode.EC256, max_attempts=6
        )
        again = next(r for r in first.rows if r["resolution"] == "reconciled")
        assert "took effect unseen" in again["note"]
        shutil.rmtree(tmp_path / "out" / again["bundlePath"])
        second = await run_job(sim, inventory, tmp_path / "out", key_mode=KeyMode.EC256)
    row = second.by_device()[again["deviceKey"]]
    assert row["note"] == f"{again['note']}; bundle rewritten from the journal"
    assert row["newCertSn"] == again["newCertSn"]


async def test_an_emptied_bundle_file_is_rewritten_too(tmp_path: Path) -> None:
    rows = fleet(2)
    inventory = write_inventory(tmp_path / "inv.csv", rows)
    async with simulator(rows, tmp_path) as sim:
        first = await run_job(sim, inventory, tmp_path / "out")
        damaged = tmp_path / "out" / first.rows[0]["bundlePath"] / "cert.pem"
        original = damaged.read_bytes()
        damaged.write_bytes(b"")  # what a power cut can leave of a file never fsynced
        await run_job(sim, inventory, tmp_path / "out")
    assert damaged.read_bytes() == original


async def test_a_changed_inventory_runs_new_rows_and_names_vanished_ones(tmp_path: Path) -> None:
    rows = fleet(5)
    async with simulator(rows, tmp_path) as sim:
        first = await run_job(sim, write_inventory(tmp_path / "a.csv", rows[:4]), tmp_path / "out")
        changed = write_inventory(tmp_path / "b.csv", rows[1:])  # dev-0000 gone, dev-0004 new
        second = await run_job(sim, changed, tmp_path / "out")
    assert first.summary.exit_code == second.summary.exit_code == 0
    by = second.by_device()
    assert by["dev-0004"]["status"] == "renewed"
    assert {by[f"dev-{i:04d}"]["status"] for i in (1, 2, 3)} == {"skipped"}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["extra"]["vanished"] == 1
    assert summary["extra"]["vanishedDevices"] == [f"{ORG}/pkA/dev-0000"]


async def test_retry_failed_retries_permanent_failures_of_earlier_runs(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [
        {"orgId": ORG, "assetId": "late", "certSn": 77, "sandbox": "absent"},
        {"orgId": ORG, "assetId": "ok", "certSn": 78},
    ]
    inventory = write_inventory(tmp_path / "inv.csv", rows)
    async with simulator(rows, tmp_path) as sim:
        first = await run_job(sim, inventory, tmp_path / "out")
        assert first.by_device()["late"]["errorClass"] == "device_not_found"
        plain = await run_job(sim, inventory, tmp_path / "out")
        assert plain.by_device()["late"]["status"] == "skipped"  # not retried by default
        sim.fleet.add_device(org_id=ORG, asset_id="late", cert_sn=77)  # registered meanwhile
        retried = await run_job(sim, inventory, tmp_path / "out", retry_failed=True)
    assert retried.by_device()["late"]["status"] == "renewed"
    assert retried.by_device()["ok"]["status"] == "skipped"
    assert retried.summary.exit_code == 0


async def test_pkcs12_bundle_and_params_in_body(tmp_path: Path) -> None:
    result = await job(
        tmp_path,
        fleet(2),
        key_mode=KeyMode.EC256,
        params_in="body",
        pkcs12_passphrase=b"s3cret-pass",
    )
    assert {r["status"] for r in result.rows} == {"renewed"}
    for row in result.rows:
        p12 = (result.out / row["bundlePath"] / "bundle.p12").read_bytes()
        key, cert, cas = pkcs12.load_key_and_certificates(p12, b"s3cret-pass")
        assert key is not None and cert is not None and len(cas) == 1
        assert cert.serial_number == int(row["newCertSn"])


async def test_an_in_flight_renewal_of_a_first_run_is_recovered_once_a_ca_is_seen(
    tmp_path: Path,
) -> None:
    """A first run killed before any answer: its journal has an intent and no CA yet.

    The renewal did take effect. The rerun must recover it from List (PEM) once the other
    devices' answers show the CA, instead of renewing it a second time.
    """
    from batch.model import Device
    from batch.testing import lose_a_renewal

    rows = fleet(6)
    inventory = write_inventory(tmp_path / "inv.csv", rows)
    out = tmp_path / "out"
    out.mkdir()
    lost = Device(row=2, org_id=ORG, product_key="pkA", device_key="dev-0000", cert_sn=1000)
    async with simulator(rows, tmp_path, list_includes_pem=True) as sim:
        await lose_a_renewal(sim, out, lost)
        result = await run_job(sim, inventory, out, key_mode=KeyMode.EC256, concurrency=2)
    row = result.by_device()["dev-0000"]
    assert (row["status"], row["resolution"]) == ("renewed", "reconciled")
    assert result.renewals("pkA/dev-0000") == 1  # recovered, not renewed a second time
    assert_bundle_is_sound(out / row["bundlePath"], with_key=True)
