"""batch.inventory.read: row validation, CSV/Parquet streaming, file errors, round trip."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch.errors import InventoryError
from batch.inventory.read import (
    CANONICAL_COLUMNS,
    canonical_column,
    count_rows,
    inventory_fingerprint,
    parse_row,
    read_inventory,
    write_inventory_csv,
)
from batch.model import Device, InvalidRow


def parse(**values: object) -> Device | InvalidRow:
    return parse_row(values, row=7, default_org=None)


def device(**values: object) -> Device:
    result = parse(**values)
    assert isinstance(result, Device), result
    return result


def invalid(**values: object) -> InvalidRow:
    result = parse(**values)
    assert isinstance(result, InvalidRow), result
    return result


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- parse_row --------------------------------------------------------------------------------


def test_asset_row_becomes_device_with_every_field() -> None:
    got = device(
        orgId="o1",
        assetId="a1",
        certSn="52770",
        validDay="365",
        issueAuthority="ecc",
        csrPath="csr/a1.pem",
        subject="CN=a1",
        notAfter="2027-01-01",
    )
    assert got == Device(
        row=7,
        org_id="o1",
        asset_id="a1",
        cert_sn=52770,
        valid_day=365,
        issue_authority="ECC",
        csr_path="csr/a1.pem",
        subject="CN=a1",
        not_after=datetime(2027, 1, 1, tzinfo=UTC),
    )


def test_product_and_device_key_pair_identifies_device() -> None:
    got = device(orgId="o1", productKey="pk", deviceKey="dk", certSn=1)
    assert (got.product_key, got.device_key, got.asset_id) == ("pk", "dk", None)
    assert got.identity == "pk/dk"


def test_whitespace_is_stripped_and_blank_means_missing() -> None:
    got = device(orgId=" o1 ", assetId="\ta1 ", certSn=" 5 ", validDay="  ", subject="")
    assert (got.org_id, got.asset_id, got.cert_sn, got.valid_day, got.subject) == (
        "o1",
        "a1",
        5,
        None,
        None,
    )


def test_default_org_fills_a_missing_org() -> None:
    got = parse_row({"assetId": "a1", "certSn": "1"}, row=2, default_org="o-default")
    assert isinstance(got, Device)
    assert got.org_id == "o-default"


def test_org_in_row_wins_over_default_org() -> None:
    got = parse_row({"orgId": "o1", "assetId": "a", "certSn": "1"}, row=2, default_org="other")
    assert isinstance(got, Device)
    assert got.org_id == "o1"


def test_missing_org_without_default_is_invalid() -> None:
    bad = invalid(assetId="a1", certSn="1")
    assert "orgId" in bad.reason
    assert bad.row == 7


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"productKey": "pk"}, "deviceKey"),
        ({"deviceKey": "dk"}, "productKey"),
        ({}, "assetId"),
        ({"productKey": "  ", "deviceKey": ""}, "assetId"),
    ],
)
def test_incomplete_identity_is_invalid(values: dict[str, object], needle: str) -> None:
    bad = invalid(orgId="o1", certSn="1", **values)
    assert needle in bad.reason


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("42", 42), (42, 42), (42.0, 42), (" 42 ", 42), ("0", 0), (Decimal("42"), 42)],
)
def test_cert_sn_accepts_non_negative_integers(raw: object, expected: int) -> None:
    assert device(orgId="o", assetId="a", certSn=raw).cert_sn == expected


def test_cert_sn_keeps_big_decimal_serials_exact() -> None:
    serial = "123456789012345678901234567890"
    assert device(orgId="o", assetId="a", certSn=serial).cert_sn == int(serial)


@pytest.mark.parametrize(
    "raw", ["4x", "-1", "1.5", "", None, "1e3", "+5", "٤٢", "1_000", 1.5, -3, True, 2.0**60]
)
def test_cert_sn_rejects_anything_but_a_non_negative_integer(raw: object) -> None:
    bad = invalid(orgId="o", assetId="a", certSn=raw)
    assert bad.reason.startswith("certSn")


def test_nan_cert_sn_from_a_parquet_float_column_is_missing() -> None:
    assert invalid(orgId="o", assetId="a", certSn=float("nan")).reason == "certSn is missing"


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", 1), ("36500", 36500), (730.0, 730), ("", None)]
)
def test_valid_day_accepts_1_to_36500_or_missing(raw: object, expected: int | None) -> None:
    assert device(orgId="o", assetId="a", certSn=1, validDay=raw).valid_day == expected


@pytest.mark.parametrize("raw", ["0", "-5", "36501", "abc", "1.5"])
def test_valid_day_outside_range_or_not_integer_is_invalid(raw: str) -> None:
    bad = invalid(orgId="o", assetId="a", certSn=1, validDay=raw)
    assert "validDay" in bad.reason
    assert raw in bad.reason


@pytest.mark.parametrize(("raw", "expected"), [("rsa", "RSA"), ("Ecc", "ECC"), (" ", None)])
def test_issue_authority_is_normalised_to_upper_case(raw: str, expected: str | None) -> None:
    assert device(orgId="o", assetId="a", certSn=1, issueAuthority=raw).issue_authority == expected


def test_unknown_issue_authority_is_invalid() -> None:
    assert (
        "issueAuthority 'DSA'"
        in invalid(orgId="o", assetId="a", certSn=1, issueAuthority="DSA").reason
    )


NOON_UTC = datetime(2027, 1, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    "raw",
    [
        "2027-01-01T12:00:00Z",
        "2027-01-01T12:00:00z",
        "2027-01-01T20:00:00+08:00",
        "2027-01-01 12:00:00",  # naive: taken as UTC
        str(int(NOON_UTC.timestamp() * 1000)),  # epoch ms
        int(NOON_UTC.timestamp() * 1000),
        datetime(2027, 1, 1, 12),
        datetime(2027, 1, 1, 7, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_not_after_reads_iso_dates_and_epoch_ms_as_aware_utc(raw: object) -> None:
    got = device(orgId="o", assetId="a", certSn=1, notAfter=raw).not_after
    assert got == NOON_UTC
    assert got is not None and got.utcoffset() == timedelta(0)


def test_not_after_date_only_is_midnight_utc() -> None:
    for raw in ("2027-03-04", date(2027, 3, 4)):
        got = device(orgId="o", assetId="a", certSn=1, notAfter=raw).not_after
        assert got == datetime(2027, 3, 4, tzinfo=UTC)


@pytest.mark.parametrize("raw", ["tomorrow", "2027-13-01", "99999999999999999999", "-5"])
def test_bad_not_after_is_invalid(raw: str) -> None:
    assert invalid(orgId="o", assetId="a", certSn=1, notAfter=raw).reason.startswith("notAfter")


def test_snake_case_upper_case_and_expire_date_aliases_are_accepted() -> None:
    got = parse_row(
        {"ORG_ID": "o", "asset_id": "a", "Cert_Sn": "3", "expire_date": "2027-01-01", "x": "y"},
        row=2,
        default_org=None,
    )
    assert isinstance(got, Device)
    assert (got.org_id, got.asset_id, got.cert_sn) == ("o", "a", 3)
    assert got.not_after == datetime(2027, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("orgId", "orgId"),
        ("org_id", "orgId"),
        ("ORGID", "orgId"),
        ("valid_day", "validDay"),
        ("issue_authority", "issueAuthority"),
        ("csr_path", "csrPath"),
        ("not_after", "notAfter"),
        ("expireDate", "notAfter"),
        ("sandbox", None),
    ],
)
def test_canonical_column_folds_case_and_underscores(header: str, expected: str | None) -> None:
    assert canonical_column(header) == expected


def test_invalid_row_keeps_identifying_columns_as_read() -> None:
    bad = parse_row(
        {"assetId": " a1 ", "productKey": "pk", "certSn": "4x", "subject": "CN=secretish"},
        row=3,
        default_org="o-def",
    )
    assert isinstance(bad, InvalidRow)
    assert bad.values == {"orgId": "o-def", "assetId": "a1", "productKey": "pk", "certSn": "4x"}
    assert bad.reason == "certSn '4x' is not an integer"


def test_reason_quotes_long_or_control_values_safely() -> None:
    long_reason = invalid(orgId="o", assetId="a", certSn="9" * 500 + "x").reason
    assert len(long_reason) < 80 and long_reason.startswith("certSn '999")
    assert "'...'" not in long_reason and "...'" in long_reason
    assert "\x1b" not in invalid(orgId="o", assetId="a", certSn=1, validDay="\x1b[2J").reason


@pytest.mark.parametrize("column", ["orgId", "assetId", "productKey", "deviceKey", "certSn"])
@pytest.mark.parametrize("bad", ["\x00", "\x1b[2J", "\x7f", "\u202e", "\n", "\x1f", "\u2028"])
def test_control_characters_in_an_identifier_make_the_row_invalid(column: str, bad: str) -> None:
    values: dict[str, object] = {
        "orgId": "o-1", "productKey": "pk", "deviceKey": "dk", "certSn": "12",
    }  # fmt: skip
    values[column] = f"{bad}12" if column == "certSn" else f"x{bad}7"
    row = invalid(**values)
    assert row.reason.startswith(f"{column} ") and "control or non-printable" in row.reason
    assert bad not in row.reason
    assert all(value.isprintable() for value in row.values.values())  # never written raw


def test_spaces_and_tabs_around_an_identifier_are_still_fine() -> None:
    assert device(orgId="\to-1 ", assetId=" a-1\t", certSn=" 12\t").asset_id == "a-1"


def test_invalid_row_shows_float_cert_sn_without_a_fraction() -> None:
    bad = invalid(orgId="o", certSn=12.0)
    assert bad.values["certSn"] == "12"


cells = st.one_of(
    st.none(),
    st.text(max_size=12),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.datetimes(),
    st.dates(),
)


@given(st.dictionaries(st.sampled_from([*CANONICAL_COLUMNS, "expireDate", "junk"]), cells))
@settings(max_examples=300)
def test_parse_row_turns_any_cells_into_a_value_never_an_exception(
    values: dict[str, object],
) -> None:
    result = parse_row(values, row=9, default_org=None)
    assert isinstance(result, Device | InvalidRow)
    assert result.row == 9
    if isinstance(result, Device):
        assert result.cert_sn >= 0
        assert result.asset_id or (result.product_key and result.device_key)
    else:
        assert result.reason


# --- reading files ----------------------------------------------------------------------------


def test_csv_rows_are_numbered_by_line_with_the_header_as_line_1(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "inv.csv",
        "orgId,assetId,certSn\no,a1,1\no,a2,bad\n\no,a4,4\n",
    )
    rows = list(read_inventory(path))
    assert [(r.row, type(r).__name__) for r in rows] == [
        (2, "Device"),
        (3, "InvalidRow"),
        (5, "Device"),  # the blank line 4 is skipped but counted
    ]


def test_csv_headers_are_matched_loosely_and_unknown_columns_ignored(tmp_path: Path) -> None:
    path = tmp_path / "inv.csv"
    path.write_bytes(
        b"\xef\xbb\xbfORG_ID,product_key,Device_Key,cert_sn,sandbox,Expire_Date\n"
        b"o,pk,dk,10,fault=drop,2027-01-01\n"
    )
    (row,) = read_inventory(path)
    assert row == Device(
        row=2,
        org_id="o",
        product_key="pk",
        device_key="dk",
        cert_sn=10,
        not_after=datetime(2027, 1, 1, tzinfo=UTC),
    )


def test_chunk_size_does_not_change_rows_or_numbers(tmp_path: Path) -> None:
    lines = ["orgId,assetId,certSn"] + [
        f"o,a{i},{i if i % 7 else 'x'}" if i % 5 else "" for i in range(40)
    ]
    path = write_csv(tmp_path / "inv.csv", "\n".join(lines) + "\n")
    whole = list(read_inventory(path, chunk_rows=1000))
    assert list(read_inventory(path, chunk_rows=3)) == whole
    assert len(whole) == 32  # 8 of the 40 lines are blank
    assert whole[-1].row == 41


def test_csv_is_read_lazily_in_chunks(tmp_path: Path) -> None:
    """Rows come out before a corrupt line far down the file is reached: proof of streaming."""
    good = "".join(f"o,a{i},{i}\n" for i in range(5000))
    path = write_csv(tmp_path / "inv.csv", "orgId,assetId,certSn\n" + good + "o,x,1,extra\n")
    rows = read_inventory(path, chunk_rows=100)
    first = [next(rows) for _ in range(100)]
    assert [r.row for r in first] == list(range(2, 102))
    with pytest.raises(InventoryError, match="line 5002"):
        list(rows)


def test_fmt_overrides_the_extension(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "inventory.txt", "orgId,assetId,certSn\no,a,1\n")
    with pytest.raises(InventoryError, match="unknown extension"):
        read_inventory(path)
    assert [r.row for r in read_inventory(path, fmt="csv")] == [2]


def write_parquet(path: Path, table: pa.Table, *, row_group_size: int | None = None) -> Path:
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def test_parquet_typed_columns_are_read_and_rows_numbered_from_1(tmp_path: Path) -> None:
    table = pa.table(
        {
            "org_id": ["o", "o", "o"],
            "assetId": ["a1", "a2", "a3"],
            "certSn": pa.array([1.0, None, 2.5], pa.float64()),
            "validDay": pa.array([365, None, 10], pa.int64()),
            "notAfter": pa.array(
                [datetime(2027, 1, 1), None, None], pa.timestamp("ms", tz="Asia/Shanghai")
            ),
        }
    )
    first, second, third = read_inventory(write_parquet(tmp_path / "inv.parquet", table))
    assert first == Device(
        row=1,
        org_id="o",
        asset_id="a1",
        cert_sn=1,
        valid_day=365,
        not_after=datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert isinstance(second, InvalidRow) and second.reason == "certSn is missing"
    assert isinstance(third, InvalidRow) and "2.5" in third.reason
    assert (second.row, third.row) == (2, 3)


def test_parquet_is_streamed_by_batches_with_stable_numbers(tmp_path: Path) -> None:
    n = 2500
    table = pa.table(
        {"orgId": ["o"] * n, "assetId": [f"a{i}" for i in range(n)], "certSn": list(range(n))}
    )
    path = write_parquet(tmp_path / "inv.pq", table, row_group_size=1000)
    rows = list(read_inventory(path, chunk_rows=300))
    assert [r.row for r in rows] == list(range(1, n + 1))
    assert all(isinstance(r, Device) and r.cert_sn == r.row - 1 for r in rows)


def test_parquet_empty_table_has_no_data_rows(tmp_path: Path) -> None:
    table = pa.table({"orgId": pa.array([], pa.string()), "assetId": [], "certSn": []})
    with pytest.raises(InventoryError, match="no data rows"):
        read_inventory(write_parquet(tmp_path / "inv.parquet", table))


def test_parquet_missing_required_columns_is_refused(tmp_path: Path) -> None:
    table = pa.table({"orgId": ["o"], "productKey": ["pk"], "certSn": [1]})
    with pytest.raises(InventoryError, match=r"assetId \(or productKey and deviceKey\)"):
        read_inventory(write_parquet(tmp_path / "inv.parquet", table))


def test_corrupt_parquet_is_an_inventory_error(tmp_path: Path) -> None:
    path = tmp_path / "inv.parquet"
    path.write_bytes(b"PAR1" + b"\x00garbage" * 50)
    with pytest.raises(InventoryError, match="not a readable Parquet"):
        read_inventory(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("orgId,assetId,certSn\n", "no data rows"),
        ("orgId,assetId,certSn\n\n\n", "no data rows"),
        ("orgId,assetId\no,a\n", "required columns missing: certSn"),
        ("assetId,certSn\na,1\n", r"orgId \(or a default org\)"),
        ("orgId,deviceKey,certSn\no,d,1\n", r"assetId \(or productKey and deviceKey\)"),
        ("orgId,org_id,assetId,certSn\no,o,a,1\n", "'orgId' and 'org_id' both mean orgId"),
        ("orgId,assetId,certSn\no,a,1,2\n", "line 2 has 4 fields but the header has 3"),
        ("orgId,assetId,certSn\no,a,1\no,b,2,3\n", "line 3, saw 4"),
    ],
)
def test_bad_csv_file_stops_before_any_row(tmp_path: Path, text: str, message: str) -> None:
    path = write_csv(tmp_path / "inv.csv", text)
    with pytest.raises(InventoryError, match=message) as caught:
        read_inventory(path)  # raised by the call itself, not on first iteration
    assert caught.value.exit_code == 2


def test_default_org_makes_the_org_column_optional(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "inv.csv", "assetId,certSn\na,1\n")
    (row,) = read_inventory(path, default_org="o-cli")
    assert isinstance(row, Device) and row.org_id == "o-cli"


def test_missing_file_and_non_utf8_csv_are_inventory_errors(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="does not exist"):
        read_inventory(tmp_path / "nope.csv")
    with pytest.raises(InventoryError, match="does not exist"):
        read_inventory(tmp_path)  # a folder is not an inventory
    path = tmp_path / "latin1.csv"
    path.write_bytes("orgId,assetId,certSn\no,caf\xe9,1\n".encode("latin-1"))
    with pytest.raises(InventoryError, match="not a readable CSV"):
        read_inventory(path)


# --- fingerprint and writing ------------------------------------------------------------------


def test_count_rows_counts_data_rows_of_csv_and_parquet(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "inv.csv", "orgId,assetId,certSn\no,a,1\n\no,b,x\r\no,c,3")
    assert count_rows(path) == 3 == len(list(read_inventory(path)))
    assert count_rows(write_csv(tmp_path / "h.csv", "orgId,assetId,certSn\n")) == 0
    table = pa.table({"orgId": ["o"] * 7, "assetId": list("abcdefg"), "certSn": range(7)})
    assert count_rows(write_parquet(tmp_path / "inv.parquet", table)) == 7
    with pytest.raises(InventoryError, match="does not exist"):
        count_rows(tmp_path / "missing.csv")
    (tmp_path / "bad.pq").write_bytes(b"not parquet at all")
    with pytest.raises(InventoryError, match="not a readable Parquet"):
        count_rows(tmp_path / "bad.pq")


def test_fingerprint_is_the_sha256_of_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "inv.csv"
    data = b"orgId,assetId,certSn\n" + b"o,a,1\n" * 300_000  # several read blocks
    path.write_bytes(data)
    assert inventory_fingerprint(path) == hashlib.sha256(data).hexdigest()
    path.write_bytes(data + b"o,b,2\n")
    assert inventory_fingerprint(path) != hashlib.sha256(data).hexdigest()


def renumbered(devices: Iterable[Device]) -> list[Device]:
    """The devices as a fresh inventory numbers them: line 2 onwards."""
    return [replace(item, row=number) for number, item in enumerate(devices, start=2)]


def test_written_inventory_reads_back_to_the_same_devices(tmp_path: Path) -> None:
    devices = [
        Device(
            row=2,
            org_id="o1",
            asset_id="a,1",
            cert_sn=52770,
            valid_day=365,
            issue_authority="ECC",
            csr_path="csr/a 1.pem",
            subject='CN="quoted", O=Acme\\, Inc',
            not_after=datetime(2027, 1, 1, 8, 30, tzinfo=UTC),
        ),
        Device(row=3, org_id="o2", product_key="pk", device_key="=cmd", cert_sn=0),
    ]
    path = tmp_path / "retry.csv"
    assert write_inventory_csv(path, iter(devices)) == 2
    assert list(read_inventory(path)) == devices
    assert path.read_text().splitlines()[0] == ",".join(CANONICAL_COLUMNS)
    assert [p.name for p in tmp_path.iterdir()] == ["retry.csv"]  # no temp file left


def test_writing_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "retry.csv"
    path.write_text("old content that is much longer than the new one\n" * 100)
    assert write_inventory_csv(path, []) == 0
    assert path.read_bytes() == ",".join(CANONICAL_COLUMNS).encode() + b"\r\n"


# Any text a cell can hold once stripped (the reader strips cells); control characters too.
safe_text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=20).filter(
    lambda text: text == text.strip() and "\x00" not in text
)
# Identifiers must be printable (a control character makes the row invalid).
_NON_PRINTABLE = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs")
identifier_text = st.text(
    st.characters(codec="utf-8", exclude_categories=_NON_PRINTABLE), min_size=1, max_size=20
)


@given(
    st.lists(
        st.builds(
            Device,
            row=st.just(0),
            org_id=identifier_text,
            asset_id=st.one_of(st.none(), identifier_text),
            product_key=identifier_text,
            device_key=identifier_text,
            cert_sn=st.integers(min_value=0, max_value=10**30),
            valid_day=st.one_of(st.none(), st.integers(1, 36500)),
            issue_authority=st.sampled_from([None, "RSA", "ECC"]),
            subject=st.one_of(st.none(), safe_text),
            not_after=st.one_of(
                st.none(),
                st.datetimes(
                    min_value=datetime(1971, 1, 1),
                    max_value=datetime(9000, 1, 1),
                    timezones=st.just(UTC),
                ),
            ),
        ),
        min_size=1,
        max_size=5,
    )
)
@settings(max_examples=60, deadline=None)
def test_any_devices_survive_a_write_read_round_trip(devices: list[Device]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "inv.csv"
        write_inventory_csv(path, devices)
        assert list(read_inventory(path)) == renumbered(devices)


# --- the CSV reader (the csv module, no pandas) -------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        'orgId,assetId,certSn\no,"a,1\no,b,2\n',  # the rest of the file would be one cell
        'orgId,assetId,certSn\no,a,1\no,b,"',  # a lone quote, and the file ends
        'orgId,assetId,"certSn\no,a,1\n',  # in the header
    ],
)
def test_a_quote_left_open_at_the_end_is_a_damaged_file(tmp_path: Path, text: str) -> None:
    path = write_csv(tmp_path / "inv.csv", text)
    with pytest.raises(InventoryError, match="is never closed"):
        list(read_inventory(path))


def test_quoted_cells_spanning_lines_and_a_missing_last_newline_read_as_before(
    tmp_path: Path,
) -> None:
    path = write_csv(
        tmp_path / "inv.csv", 'orgId,assetId,certSn,subject\no,a,1,"CN=x\nO=y"\no,"b ""c""",2'
    )
    first, second = read_inventory(path)
    assert isinstance(first, Device) and first.subject == "CN=x\nO=y"
    assert second == Device(row=3, org_id="o", asset_id='b "c"', cert_sn=2)


def test_a_short_record_is_padded_and_a_repeated_header_reads_its_first_column(
    tmp_path: Path,
) -> None:
    path = write_csv(tmp_path / "inv.csv", "orgId,assetId,certSn,orgId\no,a,1,other\no,b\n")
    first, second = read_inventory(path)
    assert isinstance(first, Device) and first.org_id == "o"
    assert isinstance(second, InvalidRow) and second.reason == "certSn is missing"


def test_reading_a_csv_inventory_imports_no_pandas(tmp_path: Path) -> None:
    """pandas cost a run ~0.15 s of start-up to read a CSV (issue 13): the csv module reads it."""
    path = write_csv(tmp_path / "inv.csv", "orgId,assetId,certSn\no,a,1\n")
    code = (
        "import sys\n"
        "from batch.inventory import read_inventory\n"
        f"assert len(list(read_inventory({str(path)!r}))) == 1\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'pandas'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


def test_a_cell_over_128_kib_is_a_damaged_file(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "inv.csv", f"orgId,assetId,certSn,subject\no,a,1,{'x' * 140_000}\n")
    with pytest.raises(InventoryError, match="line 2: field larger than field limit"):
        read_inventory(path)
