"""What EnOS answers mean: HTTP status + body bytes -> a value or one of our errors. Pure.

The client reads an answer off the wire and hands it here; nothing in this module does I/O or
reads a clock (`now` is passed in), so each rule can be tested on bytes alone.

    HTTP 200 + {"code": 0, "data": ...}        -> Envelope
    HTTP 200 + {"code": != 0, "msg": ...}      -> ApiError(code, msg, requestId, 200)
    HTTP 401                                   -> AuthError(http_status=401)
    HTTP 429 {"message": "API rate limit ..."}  -> ThrottledError(retry_after from Retry-After)
    any other status                           -> GatewayError(http_status)
    not JSON, or fields missing                -> MalformedResponse
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeGuard

from batch.enos.errors import (
    ApiError,
    AuthError,
    EnosError,
    GatewayError,
    MalformedResponse,
    ThrottledError,
    classify_code,
    classify_http_status,
)
from batch.model import CertRecord, ErrorClass, Issued

TOKEN_EXPIRED = 1203  # the token service's "access token has expired"
CERT_STATUS = {0: "valid", 1: "revoked", 2: "expired"}  # List Certificate's certStatus
# The longest Retry-After obeyed. EnOS throttles per second; the retry budget of one device is
# 300 s (batch.renew.retry.RetryPolicy.budget): a longer wait is a broken or hostile answer.
MAX_RETRY_AFTER_S = 300.0
_MIN_EPOCH_MS = 10**11  # 1973 in ms; smaller numbers are day counts (2.1.0's effetiveDate)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A successful EnOS answer: its `data` and `requestId`."""

    data: object
    request_id: str | None


def decode_json(status: int, body: bytes) -> object:
    """The JSON in an answer body, or MalformedResponse."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        # RecursionError: "[[[[..." nested past the decoder's depth, from a broken or hostile
        # gateway; it must be this answer's failure, not the batch's crash.
        raise MalformedResponse(
            f"EnOS answer is not JSON (HTTP {status})", http_status=status
        ) from exc


def json_object(body: bytes) -> Mapping[str, object]:
    """The JSON object in an (error) answer body, or {} when there is none."""
    try:
        decoded = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return {}
    return decoded if isinstance(decoded, dict) else {}


def says_token_expired(status: int, body: bytes) -> bool:
    """True for HTTP 401 (or an envelope) carrying 1203 "access token has expired"."""
    if status not in (200, 401):
        return False
    if status == 200 and str(TOKEN_EXPIRED).encode() not in body:
        return False  # the usual success: spare a second JSON decode of every answer
    detail = json_object(body)
    return TOKEN_EXPIRED in (detail.get("status"), detail.get("stauts"), detail.get("code"))


def token_refusal(status: int, body: bytes) -> ErrorClass | None:
    """The class of an answer refusing the call's access token (HTTP 401, or 1203 "expired" in
    an envelope), or None for any other answer (`calls.Caller` then gets a fresh token)."""
    if status == 401:
        return classify_http_status(status)
    if says_token_expired(status, body):
        return classify_code(TOKEN_EXPIRED)
    return None


def parse_envelope(status: int, body: bytes, *, retry_after: float | None = None) -> Envelope:
    """The envelope of a business-call answer, or the error the answer stands for."""
    if status != 200:
        raise status_error(status, body, retry_after=retry_after)
    decoded = decode_json(status, body)
    if not isinstance(decoded, Mapping):
        raise MalformedResponse("EnOS answer is not a JSON object", http_status=status)
    code, msg, request_id = decoded.get("code"), decoded.get("msg"), decoded.get("requestId")
    rid = request_id if isinstance(request_id, str) else None
    if not _is_int(code):
        raise MalformedResponse("EnOS answer has no code", http_status=status, request_id=rid)
    if code != 0:
        text = msg if isinstance(msg, str) and msg else f"EnOS error {code}"
        raise ApiError(text, code=code, http_status=status, request_id=rid)
    if "data" not in decoded:
        raise MalformedResponse("EnOS answer has no data", http_status=status, request_id=rid)
    return Envelope(decoded["data"], rid)


def status_error(status: int, body: bytes, *, retry_after: float | None = None) -> EnosError:
    """The error for a non-200 HTTP answer: the gateway's verdict, not an EnOS envelope."""
    detail = json_object(body)
    code = detail.get("code", detail.get("status"))
    message = detail.get("message", detail.get("msg"))
    text = f"HTTP {status}: {message}" if isinstance(message, str) else f"HTTP {status}"
    number = code if _is_int(code) else None
    if status == 401:
        return AuthError(text, code=number, http_status=401)
    if status == 429:
        return ThrottledError(text, retry_after=retry_after)
    return GatewayError(text, code=number, http_status=status)


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP-date), at most
    MAX_RETRY_AFTER_S: one answer pauses the whole batch's limiter, so "inf" or a date next
    year must not stall the run for good. Not a finite number: None (the backoff decides)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError, OverflowError):
            return None
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)


def parse_issued(data: object, *, request_id: str | None) -> Issued:
    """The `data` of a Renew/Apply answer as an `Issued` (serial as `certSN` or `certSn`)."""
    if not isinstance(data, Mapping):
        raise MalformedResponse("certificate answer has no data object", request_id=request_id)
    cert, ca_cert, serial = _text(data.get("cert")), _text(data.get("caCert")), _serial(data)
    if cert is None or ca_cert is None:
        raise MalformedResponse("certificate answer lacks cert or caCert", request_id=request_id)
    if serial is None:
        raise MalformedResponse("certificate answer lacks certSN", request_id=request_id)
    return Issued(
        cert_pem=cert,
        ca_pem=ca_cert,
        cert_sn=serial,
        cert_chain_url=_text(data.get("certChainURL")),
        issue_authority=_text(data.get("issueAuthority")),
        request_id=request_id,
    )


def parse_cert_records(data: object) -> list[CertRecord]:
    """The `data` of a List Certificate answer as `CertRecord`s."""
    if data is None:
        return []
    if not isinstance(data, list) or not all(isinstance(item, Mapping) for item in data):
        raise MalformedResponse("certificate list is not a list of objects")
    return [_cert_record(item) for item in data]


def _cert_record(item: Mapping[str, object]) -> CertRecord:
    serial, status = _serial(item), item.get("certStatus")
    if serial is None:
        raise MalformedResponse("certificate list entry lacks certSN")
    if not _is_int(status) or status not in CERT_STATUS:
        raise MalformedResponse(f"certificate {serial} has an unknown certStatus {status!r}")
    cert = item.get("cert")
    effective = item.get("effectiveDate", item.get("effetiveDate"))
    return CertRecord(
        cert_sn=serial,
        status=CERT_STATUS[status],
        # effectiveDate (2.1.0: effetiveDate) stands in for a missing signDate: the documented
        # samples hold the same epoch-ms value in both.
        sign_date=_epoch_ms(item.get("signDate")) or _epoch_ms(effective),
        expire_date=_epoch_ms(item.get("expireDate")),
        subject=_text(item.get("subject")),
        issuer=_text(item.get("issuer")),
        # The documented sample puts the serial in `cert`: keep it only when it is a PEM.
        cert_pem=cert if isinstance(cert, str) and "-----BEGIN" in cert else None,
    )


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


MAX_SERIAL_DIGITS = 64  # an X.509 serial is at most 20 bytes: 49 decimal digits


def _serial(data: Mapping[str, object]) -> str | None:
    value = data.get("certSN", data.get("certSn"))
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    # A serial is a decimal number: any other text (a gateway echoing our token) is refused,
    # since the serial is written to the report.
    text = _text(value)
    if text is None or not (text.isascii() and text.isdecimal()) or len(text) > MAX_SERIAL_DIGITS:
        return None
    return text


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _epoch_ms(value: object) -> datetime | None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value < _MIN_EPOCH_MS:
        return None
    return datetime.fromtimestamp(value / 1000, tz=UTC)
