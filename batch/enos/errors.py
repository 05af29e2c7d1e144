"""Errors raised by the EnOS client, and the one table that says what each one means.

    EnosError                  anything the client could not turn into a result
    ├── ApiError               the envelope said code != 0 (carries code, msg, requestId)
    ├── GatewayError           an HTTP status without an EnOS envelope (APIM/Kong answered)
    │   └── ThrottledError     HTTP 429 "API rate limit exceeded" (carries retry_after)
    ├── AuthError              the token service refused our credentials
    ├── TokenServiceError      the token service failed (down, 5xx, unreadable): nothing sent
    ├── TokenRejected          HTTP 401 on a business call even with a fresh token
    ├── TransportError         no (usable) answer came
    │   ├── NetworkError       refused, reset, dropped connection
    │   └── RequestTimeout     the answer did not come in time
    └── MalformedResponse      an answer came but it is not what the API documents

`classify(exc)` maps any of them to an `ErrorClass`; `POLICY` says what the batch does with that
class: another attempt in this run, List first (a failed Renew that may still have renewed), the
whole run stopped, the device's current certificate followed, a fresh access token, the rate
slowed down, counted by the circuit breaker, left for a rerun (retry.csv). Changing any of these
touches `POLICY` only: the loops and the client ask it through the functions at the end.

`TransportError.sent` tells whether the request may have reached EnOS: a renewal whose request
was sent but whose answer never came is *ambiguous* (the renewal may have taken effect), and so
is one answered 99500 (EnOS may have failed after renewing).

An error's text ends up in the report and the log. Texts taken from an answer (a `msg`, a
`requestId`) may echo what we sent, so the client passes every error through `EnosError.redact`
with the secrets of that exchange before it leaves; texts of library exceptions are never used.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Self

from batch.model import ErrorClass


class EnosError(Exception):
    """Base of every error the EnOS client raises."""

    error_class: ErrorClass = ErrorClass.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        http_status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.http_status = http_status
        self.request_id = request_id

    def __str__(self) -> str:
        return self.message

    def redact(self, secrets: Collection[str]) -> Self:
        """Remove `secrets` from the texts this error carries (in place); return it."""
        self.message = redact(self.message, secrets)
        self.args = (self.message,)
        if self.request_id is not None:
            self.request_id = redact(self.request_id, secrets, limit=MAX_REQUEST_ID)
        return self


REDACTED = "[redacted]"
MAX_MESSAGE = 500  # EnOS messages are one sentence; a longer one is cut, not stored whole
MAX_REQUEST_ID = 100
WHOLE_WORD_BELOW = 8  # secrets shorter than this are redacted only where they stand alone


def redact(text: str, secrets: Collection[str], *, limit: int = MAX_MESSAGE) -> str:
    """`text` without any of `secrets` (longest first), control characters escaped (no
    terminal escape reaches a log), cut to `limit` characters."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= WHOLE_WORD_BELOW:
            text = text.replace(secret, REDACTED)
        elif secret:
            # A short value (a test's app secret "s") occurs inside ordinary words: replacing
            # it everywhere would garble every message, so only where it stands alone.
            alone = rf"(?<![\w-]){re.escape(secret)}(?![\w-])"
            text = re.sub(alone, REDACTED, text)
    if not text.isprintable():
        text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ApiError(EnosError):
    """EnOS answered with an envelope whose `code` is not 0."""

    @property
    def error_class(self) -> ErrorClass:  # type: ignore[override]  # a derived class attribute
        return classify_code(self.code)


class GatewayError(EnosError):
    """The API gateway answered with an HTTP error status and no EnOS envelope."""

    @property
    def error_class(self) -> ErrorClass:  # type: ignore[override]  # a derived class attribute
        return classify_http_status(self.http_status)


class ThrottledError(GatewayError):
    """HTTP 429: the app is over its rate limit."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, http_status=429, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class AuthError(EnosError):
    """Credentials refused: the token service said so (1002, 1003, ...)."""

    error_class = ErrorClass.AUTH


class TokenServiceError(EnosError):
    """The token service could not give a token (unreachable, 5xx, unreadable answer, 1005).

    Raised before any business request left, so no renewal can have happened.
    """

    error_class = ErrorClass.TOKEN_SERVICE


class TokenRejected(EnosError):
    """HTTP 401 on a business call, and again with a token the token service had just granted.

    The token service vouched for the credentials by granting it; a gateway refusing it at once
    most likely means another process holding the same app key replaced it (a gateway keeping
    one token per app). The gateway refused before the API saw the call: nothing took effect.
    """

    error_class = ErrorClass.TOKEN_REJECTED


class TransportError(EnosError):
    """No usable answer; `sent` is True when the request may have reached EnOS."""

    def __init__(self, message: str, *, sent: bool, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.sent = sent


class NetworkError(TransportError):
    error_class = ErrorClass.NETWORK


class RequestTimeout(TransportError):
    error_class = ErrorClass.TIMEOUT


class MalformedResponse(EnosError):
    error_class = ErrorClass.MALFORMED_RESPONSE


@dataclass(frozen=True, slots=True)
class Rule:
    """What a failure of one class means for the device and for the batch."""

    retryable: bool  # another attempt in this run (within the device's budget)
    hint: str
    # A failed Renew of this class may have renewed all the same: List resolves it before any
    # retry (for a transport error, only when the request had left: `TransportError.sent`).
    uncertain: bool = False
    # A later run takes the device again: its journal entry stays open (else it is a final
    # failure, retried only with --retry-failed) and it is listed in retry.csv.
    rerun: bool = False
    # The whole run stops (exit 3) with this reason: the next device would meet the same refusal.
    aborts: str | None = None
    # EnOS says the certificate named is no longer valid: List finds the device's current one,
    # which is renewed (or skipped) instead; only without one does the refusal stand.
    follow_current: bool = False
    # The shared rate limiter slows down (and honours the answer's Retry-After as a floor).
    slows_down: bool = False


# Policy: what each class means for the batch. The loops obey this table and nothing else.
POLICY: dict[ErrorClass, Rule] = {
    ErrorClass.INVALID_REQUEST: Rule(False, "fix the request (validDay, CSR, certSn)"),
    ErrorClass.DEVICE_NOT_FOUND: Rule(False, "check the device identifier and orgId"),
    ErrorClass.CERT_BOUND_TO_OTHER_DEVICE: Rule(False, "the certificate belongs to another device"),
    ErrorClass.SERVER_ERROR: Rule(
        True, "EnOS internal error; resolved with List, then retried", uncertain=True, rerun=True
    ),
    ErrorClass.PERMISSION_DENIED: Rule(False, "grant the app the certificate permission"),
    ErrorClass.NOT_FOUND: Rule(False, "the object does not exist"),
    ErrorClass.THROTTLED: Rule(
        True, "over the app's rate limit; slowed down and retried", rerun=True, slows_down=True
    ),
    ErrorClass.NETWORK: Rule(True, "connection failed; retried", uncertain=True, rerun=True),
    ErrorClass.TIMEOUT: Rule(True, "no answer in time; retried", uncertain=True, rerun=True),
    ErrorClass.AUTH: Rule(
        False,
        "check ENOS_APP_KEY / ENOS_APP_SECRET",
        aborts="authentication refused by EnOS",
    ),
    ErrorClass.TOKEN_SERVICE: Rule(
        True, "the token service failed; no renewal sent; retried", rerun=True
    ),
    ErrorClass.TOKEN_REJECTED: Rule(
        True,
        "a fresh token was refused: another process on this app key replaced it? retried",
        rerun=True,
    ),
    ErrorClass.MALFORMED_RESPONSE: Rule(
        True, "unexpected answer; retried", uncertain=True, rerun=True
    ),
    ErrorClass.UNKNOWN: Rule(False, "unknown error code; see errorMessage"),
    ErrorClass.VERIFICATION_FAILED: Rule(False, "issued certificate kept but failed checks"),
    ErrorClass.CERT_EXPIRED: Rule(
        False, "expired certificates cannot be renewed: use Apply", follow_current=True
    ),
    ErrorClass.CERT_REVOKED: Rule(
        False, "revoked certificates cannot be renewed: use Apply", follow_current=True
    ),
    ErrorClass.AMBIGUOUS: Rule(True, "renewal may have happened; rerun to reconcile", rerun=True),
    ErrorClass.INVALID_INPUT: Rule(False, "fix the inventory row"),
    ErrorClass.DUPLICATE: Rule(False, "the device is listed more than once; renewed once"),
    ErrorClass.BUNDLE_REFUSED: Rule(
        False, "renewed, but a link sits on its bundle's path: remove it and rerun"
    ),
}

# EnOS business codes (JSON envelope `code`).
_CODES: dict[int, ErrorClass] = {
    99400: ErrorClass.INVALID_REQUEST,
    99403: ErrorClass.PERMISSION_DENIED,
    99404: ErrorClass.NOT_FOUND,
    99500: ErrorClass.SERVER_ERROR,
    11404: ErrorClass.DEVICE_NOT_FOUND,
    11833: ErrorClass.CERT_BOUND_TO_OTHER_DEVICE,
    # Token-service statuses: refusals of our credentials or request are AUTH (a retry cannot
    # cure them); a replayed encryption (1001: two processes in one millisecond) or the
    # service's internal error (1005) are the token service's failures.
    1001: ErrorClass.TOKEN_SERVICE,
    1002: ErrorClass.AUTH,
    1003: ErrorClass.AUTH,
    1004: ErrorClass.AUTH,
    1005: ErrorClass.TOKEN_SERVICE,
    1202: ErrorClass.AUTH,
    1203: ErrorClass.AUTH,
    1204: ErrorClass.AUTH,
}

# Gateway HTTP statuses (no envelope).
_HTTP: dict[int, ErrorClass] = {
    400: ErrorClass.INVALID_REQUEST,
    401: ErrorClass.AUTH,
    403: ErrorClass.PERMISSION_DENIED,
    404: ErrorClass.NOT_FOUND,
    413: ErrorClass.INVALID_REQUEST,
    429: ErrorClass.THROTTLED,
}

# 99400 messages that mean something more precise than "invalid request".
_MESSAGES: tuple[tuple[str, ErrorClass], ...] = (
    ("original certificate has been revoked", ErrorClass.CERT_REVOKED),
    ("original certificate has expired", ErrorClass.CERT_EXPIRED),
)


def classify_code(code: int | None) -> ErrorClass:
    return _CODES.get(code, ErrorClass.UNKNOWN) if code is not None else ErrorClass.UNKNOWN


def classify_http_status(status: int | None) -> ErrorClass:
    if status is None:
        return ErrorClass.UNKNOWN
    if status >= 500:
        return ErrorClass.SERVER_ERROR
    return _HTTP.get(status, ErrorClass.UNKNOWN)


def classify(exc: EnosError) -> ErrorClass:
    """The class of an error, refined by the documented 99400 messages."""
    cls = exc.error_class
    if cls is ErrorClass.INVALID_REQUEST:
        text = exc.message.lower()
        for fragment, refined in _MESSAGES:
            if fragment in text:
                return refined
    return cls


# -- the questions the loops ask the table ----------------------------------------------------


def is_retryable(cls: ErrorClass) -> bool:
    """Whether another attempt in this run may succeed."""
    return POLICY[cls].retryable


def reruns(cls: ErrorClass | None) -> bool:
    """Whether a later run takes a device that failed with `cls` again (journal entry left
    open, row in retry.csv); a failure without a class is final."""
    return cls is not None and POLICY[cls].rerun


def abort_reason(cls: ErrorClass) -> str | None:
    """Why a failure of `cls` stops the whole run (exit 3), or None when it is the device's."""
    return POLICY[cls].aborts


def follows_current(cls: ErrorClass) -> bool:
    """Whether a refused Renew of `cls` looks for the device's current certificate."""
    return POLICY[cls].follow_current


def slows_down(cls: ErrorClass) -> bool:
    """Whether a failure of `cls` makes the shared rate limiter slow down."""
    return POLICY[cls].slows_down


def failed_class(exc: EnosError, *, ambiguous: bool) -> ErrorClass:
    """The class a device's last failure is reported with: AMBIGUOUS while the renewal may
    have taken effect unseen (List has not said otherwise), so the next run reconciles it."""
    return ErrorClass.AMBIGUOUS if ambiguous else classify(exc)


def may_have_taken_effect(exc: EnosError) -> bool:
    """Whether a failed Renew may still have renewed: then List must tell before a retry.

    The table decides by class (no answer, an unreadable one, a proxy's 5xx, EnOS's 99500);
    a transport error whose request never left cannot have renewed.
    """
    if isinstance(exc, TransportError) and not exc.sent:
        return False
    return POLICY[classify(exc)].uncertain
