"""The whole job, in process, against the real simulator over loopback.

Each test writes a real inventory file, runs `pipeline.run`, and checks the report, the bundles
and the simulator's own record of what happened.
"""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from batch.config import Credentials, run_config
from batch.errors import InventoryError
from batch.model import Device, KeyMode, Status
from batch.outputs.report import REPORT_COLUMNS
from batch.run.job import run
from batch.simulator import RunningSimulator
from batch.simulator.ca import Authority
from batch.store.bundles import bundle_dir
from batch.testing import (
    KEY,
    ORG,
    SECRET,
    assert_bundle_is_sound,
    fleet,
    job,
    load_cert,
    lose_a_renewal,
    read_csv,
    run_job,
    simulator,
    write_inventory,
)
from tests import certs

# --- every key mode, every output file --------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "n", "key_type"),
    [
        (KeyMode.REUSE, 12, "EC-P256"),
        (KeyMode.EC256, 12, "EC-P256"),
        (KeyMode.RSA2048, 3, "RSA-2048"),
    ],
)
async def test_each_key_mode_renews_every_device(
    tmp_path: Path, mode: KeyMode, n: int, key_type: str
) -> None:
    result = await job(tmp_path, fleet(n), key_mode=mode)
    assert result.summary.exit_code == 0
    assert [r["status"] for r in result.rows] == ["renewed"] * n
    for row in result.rows:
        assert row["keyType"] == key_type
        assert row["resolution"] == "direct"
        assert result.renewals(f"pkA/{row['deviceKey']}") == 1
        assert_bundle_is_sound(result.out / row["bundlePath"], with_key=mode is not KeyMode.REUSE)


async def test_csr_column_mode_sends_the_operators_csr(tmp_path: Path) -> None:
    rows = fleet(3)
    keys = {}
    for row in rows:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name.from_rfc4514_string(
            f"CN={row['deviceKey']},OU=EnOS,O=EnOS,L=Shanghai,ST=Shanghai,C=CN"
        )
        csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
        path = tmp_path / f"{row['deviceKey']}.csr"
        path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
        keys[row["deviceKey"]] = key
    inventory_rows = [{**r, "csrPath": str(tmp_path / f"{r['deviceKey']}.csr")} for r in rows]
    inventory_rows.append(
        {
            **fleet(1, start=5000)[0],
            "deviceKey": "dev-nocsr",
            "csrPath": str(tmp_path / "missing.csr"),
        }
    )
    result = await job(
        tmp_path,
        [*rows, inventory_rows[-1]],
        inventory_rows=inventory_rows,
        key_mode=KeyMode.CSR_COLUMN,
    )
    by = result.by_device()
    for name, key in keys.items():
        assert by[name]["status"] == "renewed"
        cert = load_cert(result.out / by[name]["bundlePath"] / "cert.pem")
        assert cert.public_key() == key.public_key()
        assert not (result.out / by[name]["bundlePath"] / "key.pem").exists()
    assert by["dev-nocsr"]["status"] == "invalid"
    assert by["dev-nocsr"]["errorClass"] == "invalid_input"
    assert result.summary.exit_code == 1


async def test_every_output_file_is_written(tmp_path: Path) -> None:
    rows = [*fleet(4), {"orgId": ORG, "assetId": "gone", "certSn": 7, "sandbox": "absent"}]
    result = await job(tmp_path, rows, sim_kw={"fail_rate": 0.0}, key_mode=KeyMode.EC256)
    out = result.out
    assert list(result.rows[0]) == list(REPORT_COLUMNS)
    table = pq.read_table(out / "report.parquet")
    assert table.num_rows == len(result.rows) == 5
    summary = json.loads((out / "summary.json").read_text())
    assert summary["exit_code"] == 1
    assert summary["counts_by_status"] == {"renewed": 4, "failed": 1}
    assert summary["counts_by_class"] == {"device_not_found": 1}
    assert (out / "retry.csv").read_text().splitlines()[0].startswith("orgId")
    assert stat.S_IMODE((out / "journal.sqlite").stat().st_mode) == 0o600
    # no secret, token or key material in anything the operator reads or ships
    for name in ("report.csv", "summary.json", "retry.csv"):
        text = (out / name).read_text()
        assert SECRET not in text and "PRIVATE KEY" not in text
    page = (out / "report.html").read_text()
    assert page.count("<svg") >= 4 and "device_not_found" in page and "gone" in page
    assert SECRET not in page and "PRIVATE KEY" not in page
    metrics = (out / "metrics.prom").read_text()
    assert 'fleet_renew_renewals{status="renewed"} 4.0' in metrics
    assert "fleet_renew_exit_code 1.0" in metrics


async def test_the_summary_is_posted_to_the_notify_url(tmp_path: Path) -> None:
    from aiohttp import web

    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        result = await job(tmp_path, fleet(2), notify_url=f"http://127.0.0.1:{port}/hook")
    finally:
        await runner.cleanup()
    assert len(received) == 1
    assert received[0]["exit_code"] == result.summary.exit_code == 0
    assert "renewed" in received[0]["text"]


# --- every error class ---------------------------------------------------------------------------


async def test_documented_failures_are_classified_and_only_transient_ones_retried(
    tmp_path: Path,
) -> None:
    rows: list[dict[str, object]] = [
        {"orgId": ORG, "assetId": "ok", "certSn": 1},
        {"orgId": ORG, "assetId": "flaky", "certSn": 2, "sandbox": "flaky"},
        {"orgId": ORG, "assetId": "absent", "certSn": 3, "sandbox": "absent"},
        {"orgId": ORG, "assetId": "expired", "certSn": 4, "sandbox": "expired"},
        {"orgId": ORG, "assetId": "revoked", "certSn": 5, "sandbox": "revoked"},
        {"orgId": ORG, "assetId": "noauth", "certSn": 6, "sandbox": "no-cert-auth"},
        {"orgId": ORG, "assetId": "thief", "certSn": 1},  # certSn 1 is ok's: 11833
        {"orgId": ORG, "assetId": "toolong", "certSn": 8, "validDay": 9999},
    ]
    result = await job(tmp_path, rows, sim_kw={"product_max_days": 3650})
    by = result.by_device()
    expected = {
        "ok": ("renewed", ""),
        "flaky": ("renewed", ""),
        "absent": ("failed", "device_not_found"),
        "expired": ("failed", "cert_expired"),
        "revoked": ("failed", "cert_revoked"),
        "noauth": ("failed", "invalid_request"),
        "thief": ("failed", "cert_bound_to_other_device"),
        "toolong": ("failed", "invalid_request"),
    }
    assert {k: (v["status"], v["errorClass"]) for k, v in by.items()} == expected
    assert by["flaky"]["attempts"] == "2"
    assert by["absent"]["attempts"] == "1"  # permanent: never retried
    assert by["absent"]["errorCode"] == "11404"
    assert by["thief"]["errorCode"] == "11833"
    assert result.summary.exit_code == 1
    assert (result.out / "retry.csv").read_text().count("\n") == 1  # header only: none retryable


async def test_exhausted_server_errors_fail_and_land_in_retry_csv(tmp_path: Path) -> None:
    result = await job(tmp_path, fleet(3), sim_kw={"fail_rate": 1.0}, max_attempts=2)
    # 99500 may come after the renewal took effect, and List (failing too) could not say:
    # ambiguous, so the next run reconciles before renewing again
    assert {r["errorClass"] for r in result.rows} == {"ambiguous"}
    assert {r["errorCode"] for r in result.rows} == {"99500"}
    assert {r["attempts"] for r in result.rows} == {"1"}  # the second attempt was List's
    assert result.sim.stats.requests["list"] == 3 and result.sim.stats.requests["renew"] == 3
    retry_rows = read_csv(result.out / "retry.csv")
    assert sorted(r["deviceKey"] for r in retry_rows) == [f"dev-{i:04d}" for i in range(3)]


async def test_invalid_rows_and_duplicates_are_reported_once_each(tmp_path: Path) -> None:
    rows = fleet(2)
    inventory_rows: list[dict[str, object]] = [
        *rows,
        {"orgId": ORG, "productKey": "pkA", "deviceKey": "bad", "certSn": "12x"},
        {"orgId": ORG, "productKey": "pkA", "deviceKey": "", "certSn": 5},
        rows[0],
    ]
    result = await job(tmp_path, rows, inventory_rows=inventory_rows)
    assert len(result.rows) == 5
    statuses = sorted((r["row"], r["status"], r["errorClass"]) for r in result.rows)
    assert statuses == [
        ("2", "renewed", ""),
        ("3", "renewed", ""),
        ("4", "invalid", "invalid_input"),
        ("5", "invalid", "invalid_input"),
        ("6", "invalid", "duplicate"),
    ]
    assert result.renewals("pkA/dev-0000") == 1


async def test_validity_longer_than_the_ca_is_clamped(tmp_path: Path) -> None:
    result = await job(tmp_path, fleet(2), sim_kw={"ca_days": 100}, valid_days=365)
    for row in result.rows:
        assert row["status"] == "renewed"
        assert row["clamped"] == "true"
        assert row["requestedDays"] == "365"
        assert int(row["grantedDays"]) <= 100


async def test_without_a_requested_validity_the_granted_one_is_accepted_and_reported(
    tmp_path: Path,
) -> None:
    # A deployment whose default is its product maximum (365): no validDay is sent.
    sim_kw = {"product_max_days": 365, "default_valid_days": 365}
    result = await job(tmp_path, fleet(2), sim_kw=sim_kw, key_mode=KeyMode.EC256)
    for row in result.rows:
        assert (row["status"], row["errorClass"]) == ("renewed", "")
        assert (row["requestedDays"], row["grantedDays"]) == ("", "365")
    assert result.summary.exit_code == 0


async def test_a_default_above_the_product_maximum_asks_for_valid_days(tmp_path: Path) -> None:
    result = await job(tmp_path, fleet(1), sim_kw={"product_max_days": 365})
    (row,) = result.rows
    assert (row["status"], row["errorClass"], row["errorCode"]) == (
        "failed",
        "invalid_request",
        "99400",
    )
    assert "pass --valid-days" in row["errorMessage"]
    assert "no validDay was sent" in row["errorMessage"]
    assert "EnOS does not say the maximum" in row["errorMessage"]
    assert row["attempts"] == "1"


async def test_a_too_long_validity_names_the_maximum_when_enos_states_it(tmp_path: Path) -> None:
    sim_kw = {"product_max_days": 365, "validity_error_states_max": True}
    result = await job(tmp_path, fleet(1), sim_kw=sim_kw, valid_days=400)
    (row,) = result.rows
    assert row["errorClass"] == "invalid_request"
    assert "the requested 400 days exceed" in row["errorMessage"]
    assert "at most 365 days" in row["errorMessage"]


async def test_throttling_slows_down_and_still_renews_everything(tmp_path: Path) -> None:
    result = await job(tmp_path, fleet(60), sim_kw={"rate_limit": 20}, rate=40)
    assert {r["status"] for r in result.rows} == {"renewed"}
    stats = result.sim.state_dict()["stats"]
    assert stats["throttled"] > 0
    assert result.summary.extra["throttled"] == stats["throttled"]


# --- ambiguous answers ----------------------------------------------------------------------------


async def test_lost_answers_are_reconciled_not_renewed_twice(tmp_path: Path) -> None:
    rows = fleet(30)
    result = await job(
        tmp_path,
        rows,
        sim_kw={"lost_rate": 0.3, "list_includes_pem": True, "seed": 3},
        key_mode=KeyMode.EC256,
        max_attempts=6,
    )
    assert {r["status"] for r in result.rows} == {"renewed"}
    resolutions = {r["resolution"] for r in result.rows}
    assert "reconciled" in resolutions
    for row in result.rows:
        assert result.renewals(f"pkA/{row['deviceKey']}") == 1
        assert_bundle_is_sound(result.out / row["bundlePath"], with_key=True)


async def test_lost_answer_without_pem_in_list_is_renewed_once_more_and_said_so(
    tmp_path: Path,
) -> None:
    result = await job(
        tmp_path,
        fleet(20),
        sim_kw={"lost_rate": 0.3, "seed": 5},
        key_mode=KeyMode.EC256,
        max_attempts=6,
    )
    assert {r["status"] for r in result.rows} == {"renewed"}
    reconciled = [r for r in result.rows if r["resolution"] == "reconciled"]
    assert reconciled
    for row in reconciled:
        assert "again" in row["note"]
        assert_bundle_is_sound(result.out / row["bundlePath"], with_key=True)
    states = result.sim.state_dict()["devices"]
    for row in result.rows:
        certs = states[f"pkA/{row['deviceKey']}"]["certificates"]
        assert [c["serial"] for c in certs if c["status"] == "valid"] == [row["newCertSn"]]


async def test_rerun_recovers_an_in_flight_renewal_with_the_ca_of_an_earlier_run(
    tmp_path: Path,
) -> None:
    # A crash right after a renew request left: the journal holds its intent and EnOS renewed.
    # The rerun reconciles that device before any answer of its own has shown the issuing CA
    # (List does not return it), so only the journal can supply it; else a second renewal.
    rows = fleet(2)
    out = tmp_path / "out"
    first_inventory = write_inventory(tmp_path / "first.csv", rows[:1])
    inventory = write_inventory(tmp_path / "inv.csv", rows)
    device = Device(row=3, org_id=ORG, cert_sn=1001, product_key="pkA", device_key="dev-0001")
    async with simulator(rows, tmp_path, list_includes_pem=True) as sim:
        await run_job(sim, first_inventory, out, key_mode=KeyMode.EC256)
        material, lost = await lose_a_renewal(sim, out, device)
        result = await run_job(sim, inventory, out, key_mode=KeyMode.EC256)
    row = result.by_device()["dev-0001"]
    assert (row["status"], row["resolution"], row["note"]) == ("renewed", "reconciled", "")
    assert row["newCertSn"] == lost.cert_sn
    assert result.renewals("pkA/dev-0001") == 1
    assert_bundle_is_sound(out / row["bundlePath"], with_key=True)
    assert (out / row["bundlePath"] / "key.pem").read_bytes() == material.key_pem


# --- batch-level endings ----------------------------------------------------------------


async def test_refused_credentials_abort_with_exit_3(tmp_path: Path) -> None:
    rows = fleet(5)
    inventory = write_inventory(tmp_path / "inv.csv", rows)
    async with simulator(rows, tmp_path) as sim:
        config = run_config(
            inventory=inventory,
            out_dir=tmp_path / "out",
            api_url=sim.url,
            credentials=Credentials(app_key=KEY, app_secret="wrong"),
            progress="off",
        )
        summary = await run(config)
    assert summary.exit_code == 3
    assert "authentication" in (summary.aborted_reason or "")
    assert sim.state_dict()["stats"]["requests"].get("renew", 0) == 0


async def test_circuit_breaker_stops_a_run_of_identical_failures(tmp_path: Path) -> None:
    rows = [{"orgId": ORG, "assetId": f"a{i}", "certSn": i, "sandbox": "absent"} for i in range(40)]
    result = await job(tmp_path, rows, abort_after_failures=5, concurrency=1)
    assert result.summary.exit_code == 3
    assert "consecutive" in (result.summary.aborted_reason or "")
    assert len(result.rows) < 40


async def test_rerun_resumes_and_skips_finished_devices(tmp_path: Path) -> None:
    rows = [*fleet(6), {"orgId": ORG, "assetId": "absent", "certSn": 9, "sandbox": "absent"}]
    inventory = write_inventory(tmp_path / "inv.csv", rows)
    async with simulator(rows, tmp_path) as sim:
        first = await run_job(sim, inventory, tmp_path / "out", key_mode=KeyMode.EC256)
        second = await run_job(sim, inventory, tmp_path / "out", key_mode=KeyMode.EC256)
    assert first.summary.exit_code == second.summary.exit_code == 1
    assert {r["status"] for r in second.rows} == {"skipped"}
    assert {r["resolution"] for r in second.rows} == {"resumed"}
    firsts = first.by_device()
    for key, row in second.by_device().items():
        assert row["newCertSn"] == firsts[key]["newCertSn"]
    for i in range(6):
        assert second.renewals(f"pkA/dev-{i:04d}") == 1


async def test_an_asset_id_and_a_key_pair_that_read_alike_are_two_devices(
    tmp_path: Path,
) -> None:
    rows: list[dict[str, object]] = [
        {"orgId": ORG, "assetId": "pk1/dk1", "certSn": 1},
        {"orgId": ORG, "productKey": "pk1", "deviceKey": "dk1", "certSn": 2},
        {"orgId": "o/a", "assetId": "b", "certSn": 3},  # "o/a" + "b" against "o" + "a/b"
        {"orgId": "o", "assetId": "a/b", "certSn": 4},
    ]
    inventory = write_inventory(tmp_path / "inv.csv", rows)
    async with simulator(rows, tmp_path) as sim:
        first = await run_job(sim, inventory, tmp_path / "out", key_mode=KeyMode.EC256)
        again = await run_job(sim, inventory, tmp_path / "out", key_mode=KeyMode.EC256)
        renewals = [
            sim.fleet.find(ORG, "pk1/dk1", None, None),
            sim.fleet.find(ORG, None, "pk1", "dk1"),
            sim.fleet.find("o/a", "b", None, None),
            sim.fleet.find("o", "a/b", None, None),
        ]
    assert [r["status"] for r in first.rows] == ["renewed"] * 4
    assert [d.renewals if d else None for d in renewals] == [1, 1, 1, 1]
    assert len(sim.state_dict()["devices"]) == 4  # the state file names all four
    assert len({r["bundlePath"] for r in first.rows}) == 4
    # The rerun resumes each device from its own journal entry, with its own new serial.
    assert {r["row"]: r["newCertSn"] for r in again.rows} == {
        r["row"]: r["newCertSn"] for r in first.rows
    }


async def test_dry_run_sends_nothing(tmp_path: Path) -> None:
    result = await job(tmp_path, fleet(3), dry_run=True)
    assert {r["status"] for r in result.rows} == {"skipped"}
    assert result.sim.state_dict()["stats"]["requests"].get("renew", 0) == 0
    assert result.summary.exit_code == 0
    assert not (result.out / "report.csv").exists()  # in out/dry-run/, never over a campaign's


# --- malformed inventories -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("case", ["missing", "empty", "no-columns"])
async def test_unusable_inventory_stops_before_sending(tmp_path: Path, fmt: str, case: str) -> None:
    path = tmp_path / f"inv.{fmt}"
    if case == "empty":
        if fmt == "csv":
            path.write_text("")
        else:
            empty = pa.array([], pa.string())
            pq.write_table(pa.table({"assetId": empty, "certSn": empty}), path)
    elif case == "no-columns":
        if fmt == "csv":
            path.write_text("name,serial\na,1\n")
        else:
            pq.write_table(pa.table({"name": ["a"], "serial": ["1"]}), path)
    async with simulator(fleet(1), tmp_path) as sim:
        with pytest.raises(InventoryError):
            await run_job(sim, path, tmp_path / "out")
        assert sim.state_dict()["stats"]["requests"].get("renew", 0) == 0


async def test_parquet_inventory_with_bad_rows(tmp_path: Path) -> None:
    rows = fleet(3)
    table = pa.Table.from_pylist(
        [*rows, {"orgId": ORG, "productKey": "pkA", "deviceKey": "neg", "certSn": -4}]
    )
    path = tmp_path / "inv.parquet"
    pq.write_table(table, path)
    async with simulator(rows, tmp_path) as sim:
        result = await run_job(sim, path, tmp_path / "out")
    assert sorted(r["status"] for r in result.rows) == ["invalid", "renewed", "renewed", "renewed"]


async def test_broken_line_deep_in_the_csv_stops_the_run_as_an_inventory_error(
    tmp_path: Path,
) -> None:
    rows = fleet(3)
    path = write_inventory(tmp_path / "inv.csv", rows)
    with path.open("a") as fh:
        fh.write("o-test,pkA,dev-x,1,extra,cells,here\n")
    async with simulator(rows, tmp_path) as sim:
        with pytest.raises(InventoryError):
            await run_job(sim, path, tmp_path / "out")


# --- the issuing CA: --pin-ca, and a CA not seen before in the campaign ------------------


def sim_ca_pem(sim: RunningSimulator) -> str:
    """The simulator's CA for the EC keys its seeded devices hold (what reuse renews)."""
    return sim.simulator.authorities[Authority.ECC].pem


async def test_pinned_ca_accepts_the_simulators_certificates(tmp_path: Path) -> None:
    rows = fleet(2)
    inventory = write_inventory(tmp_path / "inventory.csv", rows)
    async with simulator(rows, tmp_path) as sim:
        pin = tmp_path / "pin.pem"
        pin.write_text(certs.make_ca(common_name="Unrelated CA").pem + "\n" + sim_ca_pem(sim))
        result = await run_job(sim, inventory, tmp_path / "out", pin_ca=(pin,))
    assert [r["status"] for r in result.rows] == ["renewed", "renewed"]
    assert result.summary.extra["caChanges"] == 0


async def test_a_certificate_from_an_unpinned_ca_fails_verification_and_is_kept(
    tmp_path: Path,
) -> None:
    rows = fleet(2)
    inventory = write_inventory(tmp_path / "inventory.csv", rows)
    pin = tmp_path / "pin.pem"
    pin.write_text(certs.make_ca(common_name="EnOS CA").pem)  # a look-alike, not EnOS's CA
    async with simulator(rows, tmp_path) as sim:
        result = await run_job(sim, inventory, tmp_path / "out", pin_ca=(pin,))
        issued = {name: sim.device(f"pkA/{name}").certificates[-1] for name in result.by_device()}
    assert result.summary.exit_code == 1
    for name, row in result.by_device().items():
        assert (row["status"], row["errorClass"]) == ("failed", "verification_failed")
        assert "does not chain to a pinned CA" in row["errorMessage"]
        kept = load_cert(result.out / row["bundlePath"] / "cert.pem")  # kept, as DESIGN says
        assert str(kept.serial_number) == row["newCertSn"] == str(issued[name].serial)


async def test_a_ca_not_seen_before_in_the_campaign_is_noted_and_counted(tmp_path: Path) -> None:
    first, later = fleet(2), fleet(2, start=5000)
    for n, row in enumerate(later):
        row["deviceKey"] = f"late-{n}"
    out = tmp_path / "out"
    async with simulator(first, tmp_path) as sim:
        done = await run_job(sim, write_inventory(tmp_path / "one.csv", first), out)
    assert all(not r["note"] for r in done.rows) and done.summary.extra["caChanges"] == 0
    # The same campaign goes on against an EnOS whose CA has changed (a new simulator, new CA).
    async with simulator(later, tmp_path) as rotated:
        result = await run_job(rotated, write_inventory(tmp_path / "two.csv", first + later), out)
    fresh = [r for r in result.rows if r["deviceKey"].startswith("late-")]
    assert [r["status"] for r in fresh] == ["renewed", "renewed"]
    notes = [r["note"] for r in fresh if "CA not seen before in this campaign" in r["note"]]
    assert len(notes) == 1 and "sha256 " in notes[0]  # said once, on the first such row
    assert result.summary.extra["caChanges"] == 1
    assert json.loads((out / "summary.json").read_text())["extra"]["caChanges"] == 1


# --- an inventory damaged far down -------------------------------------------------------


def damaged_csv(path: Path, valid: int, total: int, bad_line: int) -> Path:
    """`valid` devices of `fleet`, then rows without a certSn (invalid, never sent) up to
    `total` rows, with a byte that is not UTF-8 on line `bad_line` (the header is line 1)."""
    lines = [b"orgId,productKey,deviceKey,certSn\n"]
    for n in range(total):
        sn = str(1000 + n).encode() if n < valid else b""
        lines.append(b"o-test,pkA,dev-%04d,%s\n" % (n, sn))
    lines[bad_line - 1] = b"o-test,pkA,dev-\xff,1\n"
    path.write_bytes(b"".join(lines))
    return path


async def test_an_encoding_error_at_row_55000_stops_the_run_before_anything_is_sent(
    tmp_path: Path,
) -> None:
    inventory = damaged_csv(tmp_path / "inv.csv", valid=40, total=60_000, bad_line=55_000)
    async with simulator(fleet(40), tmp_path) as sim:
        with pytest.raises(InventoryError, match="not a readable CSV") as caught:
            await run_job(sim, inventory, tmp_path / "out")
        assert sim.state_dict()["stats"]["requests"].get("renew", 0) == 0
    assert "line 55000 is not UTF-8" in caught.value.message


async def test_an_inventory_damaged_during_the_run_aborts_with_exit_3_not_2(tmp_path: Path) -> None:
    # 5 devices, one worker, 200 ms an answer: the producer waits on the queue inside the first
    # 50,000-row chunk while the test damages the file's last line; the second chunk finds it.
    inventory = damaged_csv(tmp_path / "inv.csv", valid=5, total=80_000, bad_line=2)
    size = inventory.stat().st_size
    with inventory.open("r+b") as fh:  # undo the damage: the file starts out clean
        fh.write(b"orgId,productKey,deviceKey,certSn\no-test,pkA,dev-0000,1000\n")
    assert inventory.stat().st_size == size
    async with simulator(fleet(5), tmp_path, latency_ms=200) as sim:
        job = asyncio.create_task(run_job(sim, inventory, tmp_path / "out", concurrency=1))
        while sim.state_dict()["stats"]["requests"].get("renew", 0) == 0:
            await asyncio.sleep(0.005)
        with inventory.open("r+b") as fh:
            fh.seek(size - 4)
            fh.write(b"\xff")
        result = await job
    assert result.summary.exit_code == 3
    assert "inventory became unreadable during the run" in (result.summary.aborted_reason or "")
    assert result.summary.counts_by_status[Status.RENEWED] >= 1


async def test_a_damaged_parquet_page_at_row_100000_stops_the_run_before_anything_is_sent(
    tmp_path: Path,
) -> None:
    import pyarrow as pa

    n = 120_000
    table = pa.table(
        {
            "orgId": [ORG] * n,
            "productKey": ["pkA"] * n,
            "deviceKey": [f"dev-{i:04d}" for i in range(n)],
            "certSn": [1000 + i for i in range(n)],
        }
    )
    path = tmp_path / "inv.parquet"
    pq.write_table(table, path, row_group_size=50_000)
    chunk = pq.ParquetFile(path).metadata.row_group(2).column(2)  # rows 100,000+, deviceKey
    data = bytearray(path.read_bytes())
    middle = chunk.data_page_offset + chunk.total_compressed_size // 2
    data[middle : middle + 64] = b"\xa5" * 64  # the snappy page no longer decompresses
    path.write_bytes(bytes(data))
    async with simulator(fleet(40), tmp_path) as sim:
        with pytest.raises(InventoryError, match="not a readable Parquet file"):
            await run_job(sim, path, tmp_path / "out")
        assert sim.state_dict()["stats"]["requests"].get("renew", 0) == 0


# --- links planted under --out/bundles -----------------------------------------------------------


async def test_links_planted_in_bundles_fail_their_devices_and_a_rerun_writes_them(
    tmp_path: Path,
) -> None:
    rows = fleet(5)
    inventory = write_inventory(tmp_path / "inv.csv", rows)
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    folders = [
        bundle_dir(out, Device(row=2 + i, org_id=ORG, cert_sn=int(str(r["certSn"])),
                               product_key="pkA", device_key=str(r["deviceKey"])))
        for i, r in enumerate(rows)
    ]  # fmt: skip
    async with simulator(rows, tmp_path) as sim:
        # A campaign under way (dev-0004 done), then links are planted among its bundles.
        started = write_inventory(tmp_path / "start.csv", rows[4:])
        await run_job(sim, started, out, key_mode=KeyMode.EC256)
        folders[0].symlink_to(outside)  # dev-0000's key.pem would land outside --out
        folders[1].symlink_to(folders[2])  # dev-0001's cert and key: into dev-0002's bundle
        folders[3].symlink_to(tmp_path / "nowhere")  # dangling: killed the run
        first = await run_job(sim, inventory, out, key_mode=KeyMode.EC256)
        by = first.by_device()
        for name in ("dev-0000", "dev-0001", "dev-0003"):
            assert by[name]["status"] == "failed"
            assert by[name]["errorClass"] == "bundle_refused"
            assert "symbolic link" in by[name]["errorMessage"]
            assert by[name]["newCertSn"]  # renewed at EnOS: the certificate is in the journal
        assert by["dev-0002"]["status"] == "renewed"
        assert by["dev-0004"]["status"] == "skipped"
        for name in ("dev-0002", "dev-0004"):
            assert_bundle_is_sound(out / by[name]["bundlePath"], with_key=True)
        assert load_cert(folders[2] / "cert.pem").serial_number == int(by["dev-0002"]["newCertSn"])
        assert list(outside.iterdir()) == []
        assert not (tmp_path / "nowhere").exists()
        assert first.summary.exit_code == 1
        for i in (0, 1, 3):
            folders[i].unlink()
        second = await run_job(sim, inventory, out, key_mode=KeyMode.EC256)
    again = second.by_device()
    for i, name in ((0, "dev-0000"), (1, "dev-0001"), (3, "dev-0003")):
        assert again[name]["status"] == "renewed"  # its bundle written from the journal
        assert again[name]["newCertSn"] == by[name]["newCertSn"]
        assert_bundle_is_sound(folders[i], with_key=True)
        assert load_cert(folders[i] / "cert.pem").serial_number == int(by[name]["newCertSn"])
    assert second.summary.exit_code == 0
    for i in range(5):
        assert second.renewals(f"pkA/dev-{i:04d}") == 1  # never renewed twice
