"""batch.model: Outcome's named constructors and its one serialiser, which every sink follows."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path, PurePosixPath

import pyarrow.parquet as pq
import pytest

from batch.model import (
    OUTCOME_FIELDS,
    Device,
    ErrorClass,
    InvalidRow,
    Outcome,
    Resolution,
    Status,
    json_value,
)
from batch.outputs.report import REPORT_COLUMNS, ReportWriter, finish_reports
from batch.store.journal import Journal, outcome_to_json

SHANGHAI = timezone(timedelta(hours=8))
DEVICE = Device(row=9, org_id="o1", cert_sn=52770, product_key="pk", device_key="dk-9")

# Every field set, a time in a zone other than UTC, no text a spreadsheet would take as a formula.
FULL = Outcome.for_device(
    replace(DEVICE, asset_id="asset-9"),
    Status.FAILED,
    error_class=ErrorClass.VERIFICATION_FAILED,
    error_code=99500,
    error_message="chain does not verify",
    attempts=2,
    new_cert_sn="52771",
    current_cert_sn="52769",
    not_before=datetime(2026, 5, 1, 16, 0, tzinfo=SHANGHAI),
    not_after=datetime(2027, 5, 1, 8, 0, 0, 250, tzinfo=UTC),
    requested_days=365,
    granted_days=300,
    clamped=True,
    key_type="EC-P256",
    cert_sha256="ab" * 32,
    bundle_path="bundles/o1/pk-dk-9",
    request_id="req-9",
    duration_ms=57,
    resolution=Resolution.RECONCILED,
    canary=False,
    note="renewed 52771 again",
)


def test_the_full_outcome_sets_every_field() -> None:
    bare = Outcome(row=0, status=Status.SKIPPED)
    assert [f for f in OUTCOME_FIELDS if getattr(FULL, f) == getattr(bare, f)] == []


async def test_every_sink_writes_an_outcome_as_its_one_serialiser_does(tmp_path: Path) -> None:
    shown = FULL.to_json(utc=True)
    assert shown["not_before"] == "2026-05-01T08:00:00Z"  # reports show UTC
    # report.csv: the serialiser's values as text (booleans lower case).
    with ReportWriter(tmp_path) as writer:
        writer.write(FULL)
    with open(tmp_path / "report.csv", newline="", encoding="utf-8") as stream:
        [row] = list(csv.DictReader(stream))
    expected = [_text(shown[field]) for field in _report_fields()]
    assert [row[column] for column in REPORT_COLUMNS] == expected
    # report.parquet: typed values (text for oldCertSn) the same serialiser renders the same.
    [typed] = pq.read_table(finish_reports(tmp_path)).to_pylist()
    assert [_text(json_value(typed[c], utc=True)) for c in REPORT_COLUMNS] == expected
    assert typed["notBefore"] == FULL.not_before and typed["clamped"] is True
    # The journal: the exact form (offset kept), read back as the same Outcome.
    assert json.loads(outcome_to_json(FULL)) == FULL.to_json()
    assert FULL.to_json()["not_before"] == "2026-05-01T16:00:00+08:00"
    async with await Journal.open(tmp_path / "journal.sqlite") as journal:
        await journal.record_failed("k", outcome=FULL)
        entry = journal.get("k")
    assert entry is not None and entry.outcome == FULL
    assert entry.outcome.not_before is not None
    assert entry.outcome.not_before.utcoffset() == timedelta(hours=8)


def _text(value: object) -> str:
    return "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _report_fields() -> list[str]:
    """Outcome field of each report column (camelCase column, snake_case field)."""
    return ["".join("_" + c.lower() if c.isupper() else c for c in col) for col in REPORT_COLUMNS]


def test_from_json_reads_back_what_to_json_wrote() -> None:
    assert Outcome.from_json(json.loads(json.dumps(FULL.to_json()))) == FULL
    assert Outcome.from_json({"row": 3, "status": "invalid"}) == Outcome(
        row=3, status=Status.INVALID
    )


@pytest.mark.parametrize(
    ("value", "exact", "utc"),
    [
        (None, None, None),
        (True, True, True),
        (7, 7, 7),
        (2**100, 2**100, 2**100),
        ("=1", "=1", "=1"),  # neutralising is the CSV's business, not the serialiser's
        (Status.RENEWED, "renewed", "renewed"),
        (PurePosixPath("/out/x"), "/out/x", "/out/x"),
        (datetime(2026, 1, 2, 3, 4, 5), "2026-01-02T03:04:05", "2026-01-02T03:04:05Z"),
        (
            datetime(2026, 1, 2, 11, 4, 5, tzinfo=SHANGHAI),
            "2026-01-02T11:04:05+08:00",
            "2026-01-02T03:04:05Z",
        ),
    ],
)
def test_json_value_renders_each_kind_of_value(value: object, exact: object, utc: object) -> None:
    assert json_value(value) == exact
    assert json_value(value, utc=True) == utc
    assert type(json_value(value)) is type(exact)  # True stays a bool, an enum becomes text


def test_json_value_refuses_what_is_not_json() -> None:
    with pytest.raises(TypeError, match="object"):
        json_value(object())


def test_named_constructors_carry_the_device_and_their_status() -> None:
    ids = {"row": 9, "org_id": "o1", "asset_id": None, "product_key": "pk", "device_key": "dk-9"}
    made = {
        Status.RENEWED: Outcome.renewed(DEVICE, new_cert_sn="52771"),
        Status.FAILED: Outcome.failed(
            DEVICE, error_class=ErrorClass.TIMEOUT, error_message="no answer", attempts=3
        ),
        Status.SKIPPED: Outcome.skipped(DEVICE, note="not_due"),
        Status.INVALID: Outcome.invalid(
            DEVICE, error_class=ErrorClass.DUPLICATE, error_message="listed again"
        ),
    }
    for status, outcome in made.items():
        assert outcome.status is status
        assert {k: getattr(outcome, k) for k in ids} == ids
        assert outcome.old_cert_sn == 52770
    assert made[Status.FAILED].attempts == 3
    assert made[Status.FAILED].error_class is ErrorClass.TIMEOUT
    assert made[Status.SKIPPED].note == "not_due"
    assert made[Status.INVALID].error_message == "listed again"


def test_an_unreadable_row_is_invalid_with_its_values_as_read() -> None:
    bad = InvalidRow(row=4, reason="certSn is not a number", values={"orgId": "o", "certSn": "x"})
    outcome = Outcome.invalid(bad)
    assert (outcome.row, outcome.status, outcome.org_id, outcome.old_cert_sn) == (
        4,
        Status.INVALID,
        "o",
        "x",
    )
    assert (outcome.error_class, outcome.error_message) == (
        ErrorClass.INVALID_INPUT,
        "certSn is not a number",
    )
