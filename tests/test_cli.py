"""The console script as an operator runs it: help, exit codes, sandbox runs, plan and merge."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_inventory.csv"
BIN = Path(sys.executable).parent / "fleet-renew"


def fleet_renew(
    *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ENOS_")}
    return subprocess.run(
        [str(BIN), *map(str, args)],
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        cwd=cwd,
        timeout=120,
        check=False,
    )


def read_report(folder: Path) -> list[dict[str, str]]:
    with (folder / "report.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def write_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_help_explains_every_option_with_its_default() -> None:
    result = fleet_renew("run", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for option in ("--rate", "--concurrency", "--max-attempts", "--key-mode", "--params-in",
                   "--grace-seconds", "--abort-after-failures", "--timeout", "--log-interval"):
        assert option in text
    assert "[default: 10.0]" in text  # --rate
    assert "[default: reuse]" in text  # --key-mode
    assert "--renew-current" in text and "[default: off: the device is reported skipped" in text
    assert "no validDay is sent" in text and "[default: none sent]" in text  # --valid-days
    assert "ENOS_API_URL" in text and "ENOS_APP_SECRET" in text
    for code in ("0 ", "1 ", "2 ", "3 ", "143"):
        assert code in text


def test_no_api_url_and_no_sandbox_is_a_usage_error(tmp_path: Path) -> None:
    result = fleet_renew("run", SAMPLE, "--out", tmp_path / "out")
    assert result.returncode == 2
    assert "ENOS_API_URL" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_bad_canary_is_refused_before_out_is_touched(tmp_path: Path) -> None:
    # It was checked only once the rows were counted: after the sandbox started and the
    # journal was created in --out.
    result = fleet_renew("run", SAMPLE, "--out", tmp_path / "out", "--sandbox", "--canary", "ten")
    assert result.returncode == 2
    assert "--canary must be a number of devices or a share like 2%" in result.stderr
    assert not (tmp_path / "out").exists()


def test_missing_inventory_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    result = fleet_renew("run", tmp_path / "nope.csv", "--out", tmp_path / "out", "--sandbox")
    assert result.returncode == 2
    assert "nope.csv" in result.stderr
    assert "Traceback" not in result.stderr


def test_inventory_without_required_columns_exits_2(tmp_path: Path) -> None:
    bad = write_csv(tmp_path / "bad.csv", [{"name": "x", "serial": "1"}])
    result = fleet_renew("run", bad, "--out", tmp_path / "out", "--sandbox")
    assert result.returncode == 2
    assert "certSn" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("content", [None, "not a certificate\n"], ids=["missing", "junk"])
def test_pin_ca_that_is_not_a_pem_certificate_exits_2(tmp_path: Path, content: str | None) -> None:
    pin = tmp_path / "pin.pem"
    if content is not None:
        pin.write_text(content)
    result = fleet_renew("run", SAMPLE, "--out", tmp_path / "out", "--sandbox", "--pin-ca", pin)
    assert result.returncode == 2, result.stderr
    assert f"--pin-ca {pin}" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()  # refused before the run claimed --out


def test_pin_ca_of_another_ca_fails_every_sandbox_renewal_as_verification_failed(
    tmp_path: Path,
) -> None:
    from tests import certs

    pin = tmp_path / "pin.pem"
    pin.write_text(certs.make_ca(common_name="Not the sandbox CA").pem)
    out = tmp_path / "out"
    result = fleet_renew("run", SAMPLE, "--out", out, "--sandbox", "--rate", "100",
                         "--pin-ca", pin, "--abort-after-failures", "100")  # fmt: skip
    assert result.returncode == 1, result.stderr
    rows = read_report(out)
    assert not [r for r in rows if r["status"] == "renewed"]
    pinned = [r for r in rows if r["errorClass"] == "verification_failed"]
    assert len(pinned) > 10 and all("pinned CA" in r["errorMessage"] for r in pinned)
    assert all((out / r["bundlePath"] / "cert.pem").is_file() for r in pinned)  # kept


def test_sandbox_run_of_the_sample_reports_every_row(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = fleet_renew("run", SAMPLE, "--out", out, "--sandbox", "--rate", "20",
                         "--key-mode", "ec256", "--log-interval", "0.3")
    assert result.returncode == 1, result.stderr  # the sample has failures by design
    rows = read_report(out)
    with SAMPLE.open() as fh:
        assert len(rows) == sum(1 for _ in fh) - 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sandbox"] is True and summary["exit_code"] == 1
    # not a terminal: periodic plain progress lines, then the one-screen summary
    assert "progress: " in result.stderr and " rows/s" in result.stderr
    assert "fleet-renew finished" in result.stderr and "sandbox" in result.stderr


def test_clean_inventory_exits_0_and_rerun_skips(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [
        {"orgId": "o1", "assetId": f"a{i}", "certSn": 100 + i} for i in range(5)
    ]
    inventory = write_csv(tmp_path / "inv.csv", rows)
    out = tmp_path / "out"
    first = fleet_renew("run", inventory, "--out", out, "--sandbox", "--rate", "100")
    assert first.returncode == 0, first.stderr
    assert {r["status"] for r in read_report(out)} == {"renewed"}


def test_circuit_breaker_exits_3(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [
        {"orgId": "o1", "assetId": f"a{i}", "certSn": i, "sandbox": "absent"} for i in range(10)
    ]
    inventory = write_csv(tmp_path / "inv.csv", rows)
    result = fleet_renew("run", inventory, "--out", tmp_path / "out", "--sandbox",
                         "--abort-after-failures", "2", "--concurrency", "1", "--rate", "100")
    assert result.returncode == 3
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "consecutive" in summary["aborted_reason"]


def test_plan_counts_without_renewing(tmp_path: Path) -> None:
    result = fleet_renew("plan", SAMPLE, "--rate", "10")
    assert result.returncode == 0, result.stderr
    assert "to renew: 29" in result.stdout
    assert "invalid rows: 2" in result.stdout
    assert "duplicate devices: 1" in result.stdout
    assert "estimated duration at 10 requests/s: 0m 03s" in result.stdout


def test_plan_refuses_the_settings_a_run_would_refuse(tmp_path: Path) -> None:
    # A saved plan is a promise a run must be able to keep; --rate 0 used to crash the estimate.
    for option, value, message in [
        ("--rate", "0", "--rate must be positive"),
        ("--valid-days", "0", "--valid-days must be between 1 and 36500"),
        ("--renew-at-fraction", "1.5", "--renew-at-fraction must be between 0 and 1"),
    ]:
        plan = tmp_path / f"{option}.json"
        result = fleet_renew("plan", SAMPLE, option, value, "--save", plan)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
        assert not plan.exists()


@pytest.mark.parametrize("shards", [3])
def test_sharded_runs_merge_into_the_unsharded_result(tmp_path: Path, shards: int) -> None:
    whole = tmp_path / "whole"
    assert fleet_renew("run", SAMPLE, "--out", whole, "--sandbox", "--rate", "100").returncode == 1
    parts = []
    for i in range(shards):
        part = tmp_path / f"shard-{i}"
        result = fleet_renew("run", SAMPLE, "--out", part, "--sandbox", "--rate", "100",
                             "--shard", f"{i}/{shards}")
        assert result.returncode in (0, 1), result.stderr
        parts.append(part)
    merged = tmp_path / "merged"
    result = fleet_renew("merge", *parts, "--out", merged)
    assert result.returncode == 1, result.stderr
    merged_rows, whole_rows = read_report(merged), read_report(whole)
    assert sorted(int(r["row"]) for r in merged_rows) == sorted(int(r["row"]) for r in whole_rows)

    def outcome(rows: list[dict[str, str]]) -> set[tuple[str, str, str]]:
        return {(r["row"], r["status"], r["errorClass"]) for r in rows}

    assert outcome(merged_rows) == outcome(whole_rows)
    summary = json.loads((merged / "summary.json").read_text())
    whole_summary = json.loads((whole / "summary.json").read_text())
    assert summary["counts_by_status"] == whole_summary["counts_by_status"]
    assert (merged / "report.parquet").exists()

    def devices(folder: Path) -> list[tuple[str, ...]]:
        with (folder / "inventory.next.csv").open(newline="") as fh:
            rows = list(csv.reader(fh))
        return sorted(tuple(r[:4]) for r in rows[1:])  # orgId, assetId, productKey, deviceKey

    assert devices(merged) == devices(whole) and len(devices(whole)) == 29  # 32 - 2 bad - 1 dup


def test_merge_adds_up_the_shards_ca_changes(tmp_path: Path) -> None:
    parts = []
    for i, changes in enumerate((1, 2)):
        part = tmp_path / f"shard-{i}"
        result = fleet_renew("run", SAMPLE, "--out", part, "--sandbox", "--shard", f"{i}/2")
        assert result.returncode in (0, 1), result.stderr
        summary_path = part / "summary.json"
        summary = json.loads(summary_path.read_text())
        summary["extra"]["caChanges"] = changes  # as if EnOS had switched CA under that shard
        summary_path.write_text(json.dumps(summary))
        parts.append(part)
    assert fleet_renew("merge", *parts, "--out", tmp_path / "merged").returncode == 1
    merged = json.loads((tmp_path / "merged" / "summary.json").read_text())
    assert merged["extra"]["caChanges"] == 3


def test_merge_refuses_an_unfinished_shard(tmp_path: Path) -> None:
    (tmp_path / "shard-0").mkdir()
    result = fleet_renew("merge", tmp_path / "shard-0", "--out", tmp_path / "merged")
    assert result.returncode == 2
    assert "did that shard finish" in result.stderr


def test_maintenance_mode_from_the_command_line(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [
        {"orgId": "o1", "assetId": "soon", "certSn": 1, "notAfter": "2000-01-01"},
        {"orgId": "o1", "assetId": "far", "certSn": 2, "notAfter": "2999-01-01"},
    ]
    inventory = write_csv(tmp_path / "inv.csv", rows)
    result = fleet_renew("run", inventory, "--out", tmp_path / "out", "--sandbox",
                         "--renew-within", "30")
    assert result.returncode == 1, result.stderr  # "soon" has already expired
    by = {r["assetId"]: r for r in read_report(tmp_path / "out")}
    assert (by["soon"]["status"], by["soon"]["errorClass"]) == ("failed", "cert_expired")
    assert by["far"]["status"] == "skipped" and by["far"]["note"].startswith("not_due")


def test_saved_plan_round_trip_on_the_command_line(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [
        {"orgId": "o1", "assetId": f"a{i}", "certSn": 100 + i} for i in range(4)
    ]
    inventory = write_csv(tmp_path / "inv.csv", rows)
    plan = tmp_path / "plan.json"
    saved = fleet_renew("plan", inventory, "--save", plan, "--key-mode", "ec256")
    assert saved.returncode == 0, saved.stderr
    assert json.loads(plan.read_text())["options"]["keyMode"] == "ec256"
    refused = fleet_renew("run", inventory, "--out", tmp_path / "o1", "--sandbox", "--plan", plan)
    assert refused.returncode == 2
    assert "keyMode was 'ec256' in the plan, now 'reuse'" in refused.stderr
    ran = fleet_renew("run", inventory, "--out", tmp_path / "o2", "--sandbox", "--plan", plan,
                      "--key-mode", "ec256", "--canary", "25%", "--rate", "100")
    assert ran.returncode == 0, ran.stderr
    assert sum(r["canary"] == "true" for r in read_report(tmp_path / "o2")) == 1


def test_a_csr_path_that_is_a_fifo_is_an_invalid_row_not_a_hang(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    name = x509.Name.from_rfc4514_string("CN=good,OU=EnOS,O=EnOS,L=Shanghai,ST=Shanghai,C=CN")
    csr = x509.CertificateSigningRequestBuilder().subject_name(name)
    good = tmp_path / "good.csr"
    good.write_bytes(
        csr.sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()).public_bytes(
            serialization.Encoding.PEM
        )
    )
    fifo = tmp_path / "fifo.csr"
    os.mkfifo(fifo)  # a plain open() waits for a writer forever
    rows: list[dict[str, object]] = [
        {"orgId": "o1", "assetId": "good", "certSn": 1, "csrPath": good},
        {"orgId": "o1", "assetId": "fifo", "certSn": 2, "csrPath": fifo},
        {"orgId": "o1", "assetId": "zero", "certSn": 3, "csrPath": "/dev/zero"},
    ]
    inventory = write_csv(tmp_path / "inv.csv", rows)
    out = tmp_path / "out"
    result = fleet_renew("run", inventory, "--out", out, "--sandbox", "--key-mode", "csr-column")
    assert result.returncode == 1, result.stderr
    by = {r["assetId"]: r for r in read_report(out)}
    assert by["good"]["status"] == "renewed"
    assert (by["fifo"]["status"], by["fifo"]["errorClass"]) == ("invalid", "invalid_input")
    assert "not a regular file (a FIFO)" in by["fifo"]["errorMessage"]
    assert "not a regular file (a character device)" in by["zero"]["errorMessage"]


def test_merge_refuses_the_same_shard_twice_or_a_shard_without_its_report(tmp_path: Path) -> None:
    import shutil

    shards = []
    for i in range(2):
        shard = tmp_path / f"shard-{i}"
        result = fleet_renew("run", SAMPLE, "--out", shard, "--sandbox", "--rate", "100",
                             "--shard", f"{i}/2")  # fmt: skip
        assert result.returncode in (0, 1), result.stderr
        shards.append(shard)
    merged = tmp_path / "merged"
    cases = {
        "given twice": [shards[0], shards[1], shards[0]],
        "given twice (also as": [shards[0], tmp_path / "." / "shard-0", shards[1]],
    }
    copy = shutil.copytree(shards[0], tmp_path / "copy-of-shard-0")
    cases["reported by both"] = [shards[0], shards[1], copy]
    for expected, folders in cases.items():
        result = fleet_renew("merge", *folders, "--out", merged)
        assert result.returncode == 2, (expected, result.stderr)
        assert expected in result.stderr
        assert "Traceback" not in result.stderr
    (copy / "report.csv").unlink()
    result = fleet_renew("merge", shards[1], copy, "--out", merged)
    assert result.returncode == 2, result.stderr
    assert "has no report.csv" in result.stderr and "Traceback" not in result.stderr
    result = fleet_renew("merge", *shards, "--out", shards[0])
    assert result.returncode == 2 and "is one of the shard folders" in result.stderr
    assert not merged.exists()  # every refusal came before anything was written
