"""The EnOS error tree and the table that classifies every code and status."""

from __future__ import annotations

import pytest

from batch.enos.errors import (
    MAX_MESSAGE,
    POLICY,
    ApiError,
    AuthError,
    EnosError,
    GatewayError,
    MalformedResponse,
    NetworkError,
    RequestTimeout,
    ThrottledError,
    TokenRejected,
    TokenServiceError,
    TransportError,
    abort_reason,
    classify,
    classify_code,
    classify_http_status,
    failed_class,
    follows_current,
    is_retryable,
    may_have_taken_effect,
    redact,
    reruns,
    slows_down,
)
from batch.model import ErrorClass

# What the batch does with each class, written out independently of the table under test.
RETRYABLE = {
    ErrorClass.SERVER_ERROR,
    ErrorClass.THROTTLED,
    ErrorClass.NETWORK,
    ErrorClass.TIMEOUT,
    ErrorClass.MALFORMED_RESPONSE,
    ErrorClass.AMBIGUOUS,
    ErrorClass.TOKEN_SERVICE,
    ErrorClass.TOKEN_REJECTED,
}
# Left open in the journal and listed in retry.csv: what a rerun takes again.
RERUN = RETRYABLE
ABORTS = {ErrorClass.AUTH: "authentication refused by EnOS"}
FOLLOW_CURRENT = {ErrorClass.CERT_REVOKED, ErrorClass.CERT_EXPIRED}
SLOWS_DOWN = {ErrorClass.THROTTLED}


def test_policy_covers_every_error_class() -> None:
    assert set(POLICY) == set(ErrorClass)
    assert all(rule.hint for rule in POLICY.values())
    assert all(rule.aborts is None or rule.aborts for rule in POLICY.values())


@pytest.mark.parametrize("cls", list(ErrorClass))
def test_retryable_classes_are_the_transient_ones(cls: ErrorClass) -> None:
    assert is_retryable(cls) is (cls in RETRYABLE)


@pytest.mark.parametrize("cls", list(ErrorClass))
def test_every_column_of_the_table_says_what_the_batch_does(cls: ErrorClass) -> None:
    assert reruns(cls) is (cls in RERUN)
    assert abort_reason(cls) == ABORTS.get(cls)
    assert follows_current(cls) is (cls in FOLLOW_CURRENT)
    assert slows_down(cls) is (cls in SLOWS_DOWN)


def test_a_failure_without_a_class_is_final() -> None:
    assert reruns(None) is False


@pytest.mark.parametrize("cls", list(ErrorClass))
def test_the_columns_agree_with_each_other(cls: ErrorClass) -> None:
    # What the loops rely on, whatever the table is changed to.
    rule = POLICY[cls]
    if rule.uncertain:  # it may have renewed: never final before List has told
        assert rule.retryable and rule.rerun
    if rule.aborts is not None:  # the run stops at once: no attempt after it
        assert not rule.retryable
    if rule.follow_current:  # List is asked after the refusal stood: not retried blindly
        assert not rule.retryable and not rule.uncertain


def test_a_failure_that_may_have_taken_effect_is_reported_ambiguous() -> None:
    error = RequestTimeout("slow", sent=True)
    assert failed_class(error, ambiguous=True) is ErrorClass.AMBIGUOUS
    assert failed_class(error, ambiguous=False) is ErrorClass.TIMEOUT
    assert reruns(ErrorClass.AMBIGUOUS)  # the next run reconciles it


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (99400, ErrorClass.INVALID_REQUEST),
        (99403, ErrorClass.PERMISSION_DENIED),
        (99404, ErrorClass.NOT_FOUND),
        (99500, ErrorClass.SERVER_ERROR),
        (11404, ErrorClass.DEVICE_NOT_FOUND),
        (11833, ErrorClass.CERT_BOUND_TO_OTHER_DEVICE),
        (1001, ErrorClass.TOKEN_SERVICE),
        (1002, ErrorClass.AUTH),
        (1003, ErrorClass.AUTH),
        (1004, ErrorClass.AUTH),
        (1005, ErrorClass.TOKEN_SERVICE),
        (1202, ErrorClass.AUTH),
        (1203, ErrorClass.AUTH),
        (1204, ErrorClass.AUTH),
        (12345, ErrorClass.UNKNOWN),
        (None, ErrorClass.UNKNOWN),
    ],
)
def test_api_codes_are_classified(code: int | None, expected: ErrorClass) -> None:
    assert classify_code(code) is expected
    error = ApiError("msg", code=code, http_status=200, request_id="r-1")
    assert classify(error) is expected
    assert (error.code, error.http_status, error.request_id) == (code, 200, "r-1")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, ErrorClass.INVALID_REQUEST),
        (401, ErrorClass.AUTH),
        (403, ErrorClass.PERMISSION_DENIED),
        (404, ErrorClass.NOT_FOUND),
        (413, ErrorClass.INVALID_REQUEST),
        (429, ErrorClass.THROTTLED),
        (500, ErrorClass.SERVER_ERROR),
        (502, ErrorClass.SERVER_ERROR),
        (503, ErrorClass.SERVER_ERROR),
        (418, ErrorClass.UNKNOWN),
        (None, ErrorClass.UNKNOWN),
    ],
)
def test_gateway_statuses_are_classified(status: int | None, expected: ErrorClass) -> None:
    assert classify_http_status(status) is expected
    assert classify(GatewayError("HTTP error", http_status=status)) is expected


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "The original certificate has been revoked and cannot be updated.",
            ErrorClass.CERT_REVOKED,
        ),
        ("The original certificate has expired and cannot be updated.", ErrorClass.CERT_EXPIRED),
        ("Invalid Argument certSn:certSn is missing", ErrorClass.INVALID_REQUEST),
        (
            "The specified validity period exceeds the maximum certificate validity period of "
            "the product to which this device belongs.",
            ErrorClass.INVALID_REQUEST,
        ),
    ],
)
def test_documented_99400_messages_refine_the_class(message: str, expected: ErrorClass) -> None:
    assert classify(ApiError(message, code=99400)) is expected


def test_refinement_only_applies_to_invalid_requests() -> None:
    # The same words under another code keep that code's class.
    error = ApiError("The original certificate has expired", code=99500)
    assert classify(error) is ErrorClass.SERVER_ERROR


def test_throttled_is_a_gateway_error_with_retry_after() -> None:
    error = ThrottledError("API rate limit exceeded", retry_after=2.5)
    assert isinstance(error, GatewayError)
    assert (error.http_status, error.retry_after) == (429, 2.5)
    assert classify(error) is ErrorClass.THROTTLED
    assert ThrottledError("x").retry_after is None


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (AuthError("refused", code=1002), ErrorClass.AUTH),
        (AuthError("HTTP 401", http_status=401), ErrorClass.AUTH),
        (TokenServiceError("token service: HTTP 502", http_status=502), ErrorClass.TOKEN_SERVICE),
        (TokenRejected("HTTP 401", http_status=401), ErrorClass.TOKEN_REJECTED),
        (NetworkError("reset", sent=True), ErrorClass.NETWORK),
        (RequestTimeout("slow", sent=False), ErrorClass.TIMEOUT),
        (MalformedResponse("not JSON", http_status=200), ErrorClass.MALFORMED_RESPONSE),
        (EnosError("something else"), ErrorClass.UNKNOWN),
    ],
)
def test_every_error_type_has_its_class(error: EnosError, expected: ErrorClass) -> None:
    assert classify(error) is expected
    assert isinstance(error, EnosError)


@pytest.mark.parametrize("sent", [True, False])
def test_transport_errors_say_whether_the_request_left(sent: bool) -> None:
    for error in (NetworkError("x", sent=sent), RequestTimeout("x", sent=sent)):
        assert isinstance(error, TransportError)
        assert error.sent is sent


def test_errors_carry_their_data_and_print_their_message() -> None:
    error = GatewayError("HTTP 502: bad gateway", code=7, http_status=502, request_id="rid")
    assert str(error) == "HTTP 502: bad gateway" == error.message
    assert (error.code, error.http_status, error.request_id) == (7, 502, "rid")


@pytest.mark.parametrize(
    ("error", "uncertain"),
    [
        # EnOS's internal error may come after the renewal took effect: List tells first
        (ApiError(" Internal Server Error", code=99500), True),
        (GatewayError("HTTP 502", http_status=502), True),
        (MalformedResponse("not JSON", http_status=200), True),
        (NetworkError("reset", sent=True), True),
        (RequestTimeout("slow", sent=True), True),
        (NetworkError("refused", sent=False), False),
        (RequestTimeout("connect", sent=False), False),
        (ApiError("Invalid Argument certSn:certSn is missing", code=99400), False),
        (ThrottledError("API rate limit exceeded"), False),
        (AuthError("appKey does not exist", code=1002), False),
        (TokenServiceError("token service: HTTP 502", http_status=502), False),
        (TokenRejected("HTTP 401", http_status=401), False),
    ],
)
def test_the_table_says_which_failed_renewals_may_have_taken_effect(
    error: EnosError, uncertain: bool
) -> None:
    assert may_have_taken_effect(error) is uncertain


def test_redact_removes_secrets_longest_first_escapes_controls_and_cuts() -> None:
    secrets = {"tok-123", "tok-123-long", ""}
    assert redact("a tok-123-long b tok-123 c", secrets) == "a [redacted] b [redacted] c"
    assert redact("red\x1b[31m\nline", set()) == "red\\x1b[31m\\nline"
    cut = redact("x" * 2000, set())
    assert len(cut) == MAX_MESSAGE and cut.endswith("...")


def test_a_short_secret_is_redacted_where_it_stands_alone_not_inside_words() -> None:
    message = "token service: cannot connect to /apim-token-service (secret s rejected: s)"
    assert redact(message, {"s"}) == (
        "token service: cannot connect to /apim-token-service (secret [redacted] rejected: "
        "[redacted])"
    )


def test_an_error_redacts_its_message_args_and_request_id() -> None:
    error = ApiError("bad token tok-9e1f77 in tok-9e1f77", code=99400, request_id="rid-tok-9e1f77")
    assert error.redact({"tok-9e1f77"}) is error
    assert str(error) == "bad token [redacted] in [redacted]" and error.args == (str(error),)
    assert error.request_id == "rid-[redacted]"
    assert classify(error) is ErrorClass.INVALID_REQUEST
