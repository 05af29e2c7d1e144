"""batch.outputs.report: report.csv as rows finish, report.parquet, summary.json, retry.csv."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch.inventory.read import CANONICAL_COLUMNS, read_inventory
from batch.model import Device, ErrorClass, InvalidRow, Outcome, Resolution, Status, invalid_outcome
from batch.outputs.report import (
    REPORT_COLUMNS,
    REPORT_SCHEMA,
    ReportWriter,
    Summary,
    exit_code_for,
    finish_reports,
    neutralise,
    render_summary,
    report_cells,
    write_retry_csv,
    write_summary,
)

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)

RENEWED = Outcome(
    row=2,
    status=Status.RENEWED,
    org_id="o1",
    asset_id="a1",
    old_cert_sn=52770,
    attempts=2,
    new_cert_sn="52771",
    not_before=T0,
    not_after=T0 + timedelta(days=365, microseconds=250),
    requested_days=365,
    granted_days=365,
    clamped=False,
    key_type="ec256",
    cert_sha256="ab" * 32,
    bundle_path="bundles/o1/a1",
    request_id="req-9",
    duration_ms=57,
    resolution=Resolution.DIRECT,
)
FAILED = Outcome(
    row=3,
    status=Status.FAILED,
    org_id="o1",
    product_key="pk",
    device_key='=HYPERLINK("http://x")',
    old_cert_sn=7,
    error_class=ErrorClass.DEVICE_NOT_FOUND,
    error_code=11404,
    error_message="-device not found, line1\nline2",
    attempts=1,
    clamped=None,
)


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def test_report_has_one_column_per_outcome_field() -> None:
    assert len(REPORT_COLUMNS) == len(fields(Outcome)) == 26
    snake = [
        "".join("_" + c.lower() if c.isupper() else c for c in name) for name in REPORT_COLUMNS
    ]
    assert sorted(snake) == sorted(f.name for f in fields(Outcome))
    assert REPORT_SCHEMA.names == list(REPORT_COLUMNS)


def test_each_text_column_holds_its_own_field() -> None:
    text_fields = [f.name for f in fields(Outcome) if f.type == "str | None"]
    changes: dict[str, Any] = {name: name for name in text_fields}
    outcome = replace(RENEWED, **changes)
    cells = dict(zip(REPORT_COLUMNS, report_cells(outcome), strict=True))
    snake = {name: "".join("_" + c.lower() if c.isupper() else c for c in name) for name in cells}
    shown = {snake[column]: value for column, value in cells.items() if value in text_fields}
    assert len(text_fields) >= 10
    assert shown == {name: name for name in text_fields}


def test_cells_format_times_enums_bools_and_none() -> None:
    cells = dict(zip(REPORT_COLUMNS, report_cells(RENEWED), strict=True))
    assert cells["status"] == "renewed"
    assert cells["resolution"] == "direct"
    assert cells["notBefore"] == "2026-05-01T08:00:00Z"
    assert cells["notAfter"] == "2027-05-01T08:00:00.000250Z"
    assert cells["clamped"] == "false"
    assert cells["oldCertSn"] == "52770"
    assert cells["errorClass"] == "" and cells["note"] == ""


def test_times_in_other_zones_are_written_in_utc() -> None:
    shanghai = datetime(2026, 5, 1, 16, 0, tzinfo=timezone(timedelta(hours=8)))
    outcome = Outcome(row=2, status=Status.RENEWED, not_before=shanghai, clamped=True)
    cells = dict(zip(REPORT_COLUMNS, report_cells(outcome), strict=True))
    assert cells["notBefore"] == "2026-05-01T08:00:00Z"
    assert cells["clamped"] == "true"


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("=1+2", "'=1+2"),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("'already", "''already"),
        ("-1", "-1"),
        ("+42", "+42"),
        ("-3.5", "-3.5"),
        ("a=1", "a=1"),
        ("", ""),
    ],
)
def test_neutralise_prefixes_formula_starts_but_not_plain_numbers(text: str, written: str) -> None:
    assert neutralise(text) == written


def test_only_text_columns_are_neutralised() -> None:
    cells = dict(zip(REPORT_COLUMNS, report_cells(FAILED), strict=True))
    assert cells["deviceKey"] == '\'=HYPERLINK("http://x")'
    assert cells["errorMessage"] == "'-device not found, line1\nline2"
    assert cells["errorCode"] == "11404"
    invalid = Outcome(row=4, status=Status.INVALID, old_cert_sn="-1")
    assert dict(zip(REPORT_COLUMNS, report_cells(invalid), strict=True))["oldCertSn"] == "-1"


def test_writer_creates_the_header_and_flushes_every_row(tmp_path: Path) -> None:
    (tmp_path / "report.csv").write_text("stale rows of an earlier run\n")
    with ReportWriter(tmp_path / "out") as writer:
        path = tmp_path / "out" / "report.csv"
        assert path.read_text().splitlines() == [",".join(REPORT_COLUMNS)]
        writer.write(RENEWED)
        # Read through another handle while the writer is still open: the row is there.
        assert read_csv_rows(path)[0]["newCertSn"] == "52771"
        writer.write(FAILED)
        assert len(read_csv_rows(path)) == 2
    rows = read_csv_rows(path)
    assert rows[1]["errorMessage"] == "'-device not found, line1\nline2"
    assert writer.rows_written == 2


def test_writer_truncates_an_existing_report(tmp_path: Path) -> None:
    (tmp_path / "report.csv").write_text("old header\nold row\n")
    with ReportWriter(tmp_path) as writer:
        writer.write(RENEWED)
    assert [row["row"] for row in read_csv_rows(tmp_path / "report.csv")] == ["2"]


def test_writer_counts_by_status_and_by_class(tmp_path: Path) -> None:
    invalid = invalid_outcome(InvalidRow(row=5, reason="certSn is missing"))
    with ReportWriter(tmp_path) as writer:
        for outcome in (RENEWED, FAILED, FAILED, invalid):
            writer.write(outcome)
    assert writer.counts_by_status == {
        Status.RENEWED: 1,
        Status.FAILED: 2,
        Status.INVALID: 1,
        Status.SKIPPED: 0,
    }
    assert writer.counts_by_class == {
        ErrorClass.DEVICE_NOT_FOUND: 2,
        ErrorClass.INVALID_INPUT: 1,
    }


def test_write_outside_the_with_block_is_a_bug(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        ReportWriter(tmp_path).write(RENEWED)


KILLED_WRITER = """
import os, signal, sys
from batch.model import Outcome, Status
from batch.outputs.report import ReportWriter
with ReportWriter(sys.argv[1]) as writer:
    for row in range(2, 502):
        writer.write(Outcome(row=row, status=Status.RENEWED, org_id="o", asset_id=f"a{row}"))
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_sigkill_loses_no_finished_row(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], check=False)
    assert done.returncode == -signal.SIGKILL
    rows = read_csv_rows(tmp_path / "report.csv")
    assert [int(r["row"]) for r in rows] == list(range(2, 502))


def test_invalid_outcome_carries_the_row_values_and_reason() -> None:
    bad = InvalidRow(
        row=9,
        reason="certSn '4x' is not an integer",
        values={"orgId": "o", "productKey": "pk", "deviceKey": "dk", "certSn": "4x"},
    )
    outcome = invalid_outcome(bad)
    assert outcome == Outcome(
        row=9,
        status=Status.INVALID,
        org_id="o",
        product_key="pk",
        device_key="dk",
        old_cert_sn="4x",
        error_class=ErrorClass.INVALID_INPUT,
        error_message="certSn '4x' is not an integer",
    )


# --- parquet ----------------------------------------------------------------------------------


def test_parquet_is_typed_and_restores_neutralised_text(tmp_path: Path) -> None:
    with ReportWriter(tmp_path) as writer:
        writer.write(RENEWED)
        writer.write(FAILED)
    path = finish_reports(tmp_path)
    assert path == tmp_path / "report.parquet"
    table = pq.read_table(path)
    assert table.schema.equals(REPORT_SCHEMA)
    renewed, failed = table.to_pylist()
    assert renewed["row"] == 2 and renewed["attempts"] == 2 and renewed["durationMs"] == 57
    assert renewed["notAfter"] == RENEWED.not_after
    assert renewed["clamped"] is False
    assert renewed["oldCertSn"] == "52770"
    assert failed["deviceKey"] == FAILED.device_key
    assert failed["errorMessage"] == FAILED.error_message
    assert failed["clamped"] is None and failed["notBefore"] is None and failed["note"] is None
    assert failed["errorCode"] == 11404


def test_parquet_of_an_empty_report_has_the_schema_and_no_rows(tmp_path: Path) -> None:
    with ReportWriter(tmp_path):
        pass
    table = pq.read_table(finish_reports(tmp_path))
    assert table.num_rows == 0
    assert table.schema.equals(REPORT_SCHEMA)


def test_parquet_is_converted_in_several_batches(tmp_path: Path) -> None:
    with ReportWriter(tmp_path) as writer:
        for row in range(2, 3002):
            writer.write(Outcome(row=row, status=Status.SKIPPED, org_id="o", asset_id=f"a{row}"))
    path = finish_reports(tmp_path, block_size=16_384)
    parquet = pq.ParquetFile(path)
    assert parquet.metadata.num_row_groups > 1
    assert parquet.read().column("row").to_pylist() == list(range(2, 3002))
    assert sorted(os.listdir(tmp_path)) == ["report.csv", "report.parquet"]


text_values = st.text(st.characters(codec="utf-8"), min_size=1, max_size=30)  # no surrogates


@pytest.mark.parametrize("text", ["NA", "null", "NaN", "#N/A", "true", "\r", "'", "x\r\ny"])
def test_text_that_looks_special_is_kept_as_text_in_parquet(tmp_path: Path, text: str) -> None:
    with ReportWriter(tmp_path) as writer:
        writer.write(Outcome(row=2, status=Status.FAILED, note=text))
    (row,) = pq.read_table(finish_reports(tmp_path)).to_pylist()
    assert row["note"] == text


@given(device_key=text_values, message=text_values, note=text_values)
@settings(max_examples=150, deadline=None)
def test_any_text_survives_csv_and_comes_back_exact_in_parquet(
    device_key: str, message: str, note: str
) -> None:
    outcome = Outcome(
        row=2,
        status=Status.FAILED,
        device_key=device_key,
        error_message=message,
        note=note,
    )
    with tempfile.TemporaryDirectory() as folder:
        with ReportWriter(folder) as writer:
            writer.write(outcome)
        (row,) = pq.read_table(finish_reports(folder)).to_pylist()
    assert (row["deviceKey"], row["errorMessage"], row["note"]) == (device_key, message, note)


# --- summary, exit code, retry ----------------------------------------------------------------


BASE = Summary(
    counts_by_status={Status.RENEWED: 90, Status.FAILED: 6, Status.INVALID: 4},
    counts_by_class={ErrorClass.DEVICE_NOT_FOUND: 5, ErrorClass.TIMEOUT: 1},
    devices=100,
    requests=120,
    started=T0,
    finished=T0 + timedelta(seconds=60),
    configured_rate=2.5,
    exit_code=1,
)


def summary(**overrides: Any) -> Summary:
    return replace(BASE, **overrides)


def test_summary_json_holds_counts_rates_and_times(tmp_path: Path) -> None:
    path = write_summary(
        tmp_path, summary(sandbox=True, extra={"shard": "1/4", "when": T0, "out": tmp_path})
    )
    data = json.loads(path.read_text())
    assert data["counts_by_status"] == {"renewed": 90, "failed": 6, "invalid": 4}
    assert data["counts_by_class"] == {"device_not_found": 5, "timeout": 1}
    assert data["duration_s"] == 60.0
    assert data["achieved_rate"] == 2.0
    assert data["configured_rate"] == 2.5
    assert data["started"] == "2026-05-01T08:00:00Z"
    assert data["finished"] == "2026-05-01T08:01:00Z"
    assert (data["exit_code"], data["aborted_reason"], data["sandbox"]) == (1, None, True)
    assert data["extra"] == {"shard": "1/4", "when": "2026-05-01T08:00:00Z", "out": str(tmp_path)}
    assert sorted(os.listdir(tmp_path)) == ["summary.json"]


def test_summary_json_reads_back_as_the_summary_merge_needs(tmp_path: Path) -> None:
    run = summary(
        aborted_reason="breaker",
        request_span_s=12.5,
        extra={"campaign": {"renewed": 3}, "caChanges": 1},
    )
    document = json.loads(write_summary(tmp_path, run).read_text())
    back = Summary.from_json(document)
    assert back == run
    assert back.to_json() == document


def test_summary_refuses_extra_values_that_are_not_json(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="object"):
        write_summary(tmp_path, summary(extra={"x": object()}))


def test_achieved_rate_of_an_instant_run_is_zero() -> None:
    assert summary(finished=T0).achieved_rate == 0.0


def test_achieved_rate_is_taken_between_the_first_and_last_request() -> None:
    # 100 requests started over 40 s of a 60 s run: set-up and report writing do not count.
    timed = summary(requests=100, request_span_s=39.6)
    assert timed.achieved_rate == pytest.approx(2.5)
    assert summary(requests=100).achieved_rate == pytest.approx(100 / 60)  # no span: whole run


def test_render_summary_shows_counts_classes_rate_and_abort() -> None:
    text = render_summary(summary(aborted_reason="authentication refused", exit_code=3))
    assert "finished in 60.0 s" in text
    assert "renewed" in text and "90" in text
    assert text.index("device_not_found") < text.index("timeout")  # most frequent first
    assert "2.0 requests/s achieved, 2.5 configured" in text
    assert "ABORTED: authentication refused" in text
    assert text.rstrip().endswith("exit code 3")
    assert len(text.splitlines()) <= 24  # one screen
    assert "sandbox" in render_summary(summary(sandbox=True))


@pytest.mark.parametrize(
    ("counts", "aborted", "code"),
    [
        ({Status.RENEWED: 5, Status.SKIPPED: 2}, False, 0),
        ({}, False, 0),
        ({Status.RENEWED: 5, Status.FAILED: 1}, False, 1),
        ({Status.RENEWED: 5, Status.INVALID: 1}, False, 1),
        ({Status.RENEWED: 5, Status.FAILED: 0, Status.INVALID: 0}, False, 0),
        ({Status.RENEWED: 5}, True, 3),
        ({Status.FAILED: 5}, True, 3),
    ],
)
def test_exit_code_for(counts: dict[Status, int], aborted: bool, code: int) -> None:
    assert exit_code_for(counts, aborted) == code


def test_retry_csv_is_written_even_when_empty(tmp_path: Path) -> None:
    assert write_retry_csv(tmp_path, []) == 0
    assert (tmp_path / "retry.csv").read_text().splitlines() == [",".join(CANONICAL_COLUMNS)]


def test_retry_csv_reads_back_as_an_inventory(tmp_path: Path) -> None:
    devices = [
        Device(row=17, org_id="o", asset_id="a1", cert_sn=3, valid_day=30),
        Device(row=40, org_id="o", product_key="pk", device_key="dk", cert_sn=4),
    ]
    assert write_retry_csv(tmp_path, devices) == 2
    again = list(read_inventory(tmp_path / "retry.csv"))
    assert [(d.row, d.identity, d.cert_sn) for d in again if isinstance(d, Device)] == [
        (2, "a1", 3),
        (3, "pk/dk", 4),
    ]
