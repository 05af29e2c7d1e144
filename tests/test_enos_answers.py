"""What EnOS answers mean, on bytes alone (batch.enos.answers)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from batch.enos.answers import (
    parse_cert_records,
    parse_envelope,
    parse_issued,
    parse_retry_after,
    says_token_expired,
    status_error,
    token_refusal,
)
from batch.enos.errors import (
    ApiError,
    AuthError,
    GatewayError,
    MalformedResponse,
    ThrottledError,
)
from batch.model import ErrorClass

NOW = 1_700_000_000.0


def body(value: object) -> bytes:
    return json.dumps(value).encode()


def test_envelope_with_code_0_gives_data_and_request_id() -> None:
    envelope = parse_envelope(200, body({"code": 0, "msg": "OK", "requestId": "r", "data": [1]}))
    assert (envelope.data, envelope.request_id) == ([1], "r")


def test_envelope_with_null_data_is_a_result() -> None:
    assert parse_envelope(200, body({"code": 0, "msg": "OK", "data": None})).data is None


def test_envelope_error_carries_code_message_request_id_and_status() -> None:
    answer = {"code": 11404, "msg": "Device cannot be found", "requestId": "r-2", "data": None}
    with pytest.raises(ApiError) as caught:
        parse_envelope(200, body(answer))
    error = caught.value
    assert (error.code, error.message, error.request_id, error.http_status) == (
        11404,
        "Device cannot be found",
        "r-2",
        200,
    )


@pytest.mark.parametrize(
    "raw",
    [b"", b"\xff\xfe", b"<html/>", body([]), body({"code": "0", "data": 1}), body({"code": True})],
)
def test_unusable_envelopes_are_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedResponse):
        parse_envelope(200, raw)


# JSON nested past the decoder's depth: 200,000 brackets, well inside the 1 MiB answer cap.
NESTED = b"[" * 200_000 + b"]" * 200_000


def test_json_nested_past_the_decoders_depth_is_malformed_not_a_crash() -> None:
    with pytest.raises(MalformedResponse):
        parse_envelope(200, NESTED)
    assert says_token_expired(401, b'{"code": 1203, "x": ' + NESTED + b"}") is False
    assert isinstance(status_error(502, NESTED), GatewayError)


def test_status_errors() -> None:
    throttled = status_error(429, body({"message": "API rate limit exceeded"}), retry_after=3.0)
    assert isinstance(throttled, ThrottledError) and throttled.retry_after == 3.0
    auth = status_error(401, body({"status": 1203, "msg": "access token has expired"}))
    assert isinstance(auth, AuthError) and (auth.code, auth.http_status) == (1203, 401)
    gateway = status_error(503, b"Service unavailable")
    assert isinstance(gateway, GatewayError) and gateway.http_status == 503
    assert str(gateway) == "HTTP 503"


@pytest.mark.parametrize(
    ("status", "raw", "expired"),
    [
        (401, body({"status": 1203}), True),
        (401, body({"stauts": 1203}), True),
        (200, body({"code": 1203, "msg": "token expired"}), True),
        (401, body({"message": "Invalid authentication credentials"}), False),
        (401, b"not json", False),
        (500, body({"status": 1203}), False),
        (200, body({"code": 0, "data": None}), False),
    ],
)
def test_token_expired_is_recognised(status: int, raw: bytes, expired: bool) -> None:
    assert says_token_expired(status, raw) is expired


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("2", 2.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        ("Tue, 14 Nov 2023 22:14:00 GMT", 40.0),  # NOW (22:13:20) + 40 s
        ("Tue, 14 Nov 2023 22:00:00 GMT", 0.0),  # in the past
        ("soon", None),
        # Hostile or broken: never a wait past MAX_RETRY_AFTER_S, never an infinite one.
        ("99999999", 300.0),
        ("1e308", 300.0),
        ("inf", None),
        ("nan", None),
        ("Fri, 14 Nov 2098 22:14:00 GMT", 300.0),
    ],
)
def test_retry_after_is_seconds_or_an_http_date(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


def test_issued_accepts_either_serial_spelling() -> None:
    base = {"cert": "C", "caCert": "CA", "certChainURL": "https://x/enos/CA/cacert/RSA"}
    assert parse_issued(base | {"certSN": "52771"}, request_id=None).cert_sn == "52771"
    assert parse_issued(base | {"certSn": 52771}, request_id=None).cert_sn == "52771"
    issued = parse_issued(base | {"certSN": "1", "issueAuthority": "RSA"}, request_id="r")
    assert (issued.cert_chain_url, issued.issue_authority, issued.request_id) == (
        "https://x/enos/CA/cacert/RSA",
        "RSA",
        "r",
    )


@pytest.mark.parametrize("serial", [True, -1, "", None, 1.5])
def test_issued_without_a_usable_serial_is_malformed(serial: object) -> None:
    with pytest.raises(MalformedResponse):
        parse_issued({"cert": "C", "caCert": "CA", "certSN": serial}, request_id="r")


def test_cert_records_from_the_documented_list_sample() -> None:
    sample = {
        "certSN": "52725",
        "cert": "52725",
        "certStatus": 0,
        "issuer": "EMAILADDRESS=ca@eniot.io, CN=EnOS CA, OU=EnOS CA, O=EnOS, C=CN",
        "subject": "EMAILADDRESS=xT7EaR, OU=EnOS, CN=xMen1, O=EnOS, C=CN",
        "signDate": 1581216505000,
        "effetiveDate": 1581216505000,
        "expireDate": 1582080505000,
        "isEnosCert": True,
    }
    [record] = parse_cert_records([sample])
    assert (record.cert_sn, record.status, record.cert_pem) == ("52725", "valid", None)
    assert record.sign_date == datetime(2020, 2, 9, 2, 48, 25, tzinfo=UTC)
    assert record.expire_date == datetime(2020, 2, 19, 2, 48, 25, tzinfo=UTC)
    assert record.subject is not None and "CN=xMen1" in record.subject


@pytest.mark.parametrize(("status", "name"), [(0, "valid"), (1, "revoked"), (2, "expired")])
def test_cert_status_numbers(status: int, name: str) -> None:
    [record] = parse_cert_records([{"certSn": 7, "certStatus": status}])
    assert record.status == name


def test_effective_date_stands_in_for_a_missing_sign_date_but_not_a_day_count() -> None:
    [spelled, days] = parse_cert_records(
        [
            {"certSN": "1", "certStatus": 0, "effectiveDate": 1581216505000},
            {"certSN": "2", "certStatus": 0, "effetiveDate": 10},
        ]
    )
    assert spelled.sign_date == datetime(2020, 2, 9, 2, 48, 25, tzinfo=UTC)
    assert days.sign_date is None


def test_pem_in_list_is_kept() -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    [record] = parse_cert_records([{"certSN": "1", "certStatus": 0, "cert": pem}])
    assert record.cert_pem == pem


@pytest.mark.parametrize(
    "data",
    [{"certSN": "1"}, [1, 2], [{"certStatus": 0}], [{"certSN": "1", "certStatus": True}]],
)
def test_unusable_lists_are_malformed(data: object) -> None:
    with pytest.raises(MalformedResponse):
        parse_cert_records(data)


def test_null_list_is_empty() -> None:
    assert parse_cert_records(None) == []


@pytest.mark.parametrize(
    ("status", "raw", "refused"),
    [
        (401, body({"message": "Invalid authentication credentials"}), True),
        (401, b"not json", True),
        (200, body({"code": 1203, "msg": "token expired"}), True),
        (200, body({"code": 1202, "msg": "token invalid"}), False),  # only 1203 in an envelope
        (403, body({"message": "forbidden"}), False),
        (500, body({"status": 1203}), False),
        (200, body({"code": 0, "data": None}), False),
    ],
)
def test_an_answer_refusing_the_token_is_an_auth_refusal(
    status: int, raw: bytes, refused: bool
) -> None:
    # batch.enos.calls gets a fresh token when this is not None.
    assert token_refusal(status, raw) is (ErrorClass.AUTH if refused else None)
