"""The simulated APIM token service and the check of every business call's credentials.

One token per appKey: `get` returns the current token while it is valid (documented); `refresh`
replaces it (the old one stops working at once). With `single_token`, every `get` mints a new
token and the previous one stops working: a guess, the docs are silent on it, made so that
processes sharing one app key can be tested against the harsher of the two possibilities.
Business calls carry the token, a timestamp and a signature (`batch.enos.sign`); a wrong one is
HTTP 401, an expired token is HTTP 401 with the token service's code 1203 (its HTTP status and
body shape are a guess: the docs are silent).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from batch.enos.signing import sign, token_encryption

SKEW_MS = 5 * 60 * 1000  # how far a token request's timestamp may be from our clock


class TokenFailure(Exception):
    """A token-service refusal: `status` and `msg` of its envelope."""

    def __init__(self, status: int, msg: str) -> None:
        super().__init__(msg)
        self.status = status
        self.msg = msg


class AuthVerdict(enum.Enum):
    """What the gateway decides about a business call's credentials."""

    OK = "ok"
    INVALID = "invalid"  # missing/unknown token or bad signature
    EXPIRED = "expired"


@dataclass(slots=True)
class _Token:
    value: str
    expires_at: float  # epoch seconds


@dataclass(frozen=True, slots=True)
class Grant:
    """A token handed out, and how many seconds it has left."""

    access_token: str
    expire: int


class TokenService:
    """Issues, refreshes and checks access tokens for the one configured application."""

    def __init__(
        self,
        app_key: str,
        app_secret: str,
        *,
        ttl: float,
        clock: Callable[[], float],
        rng: random.Random,
        single_token: bool = False,
    ) -> None:
        self._app_key = app_key
        self._single_token = single_token
        self._app_secret = app_secret
        self._ttl = ttl
        self._clock = clock
        self._rng = rng
        self._current: _Token | None = None
        self._seen: dict[str, float] = {}  # encryption -> when it was used (replay guard)

    def get(self, body: Mapping[str, object]) -> Grant:
        """`token/get`: the current token, or a new one if there is none or it expired.

        In single-token mode always a new one, which invalidates the previous one.
        """
        self._check_request(body)
        now = self._clock()
        if self._single_token or self._current is None or now >= self._current.expires_at:
            self._current = self._mint(now)
        return Grant(self._current.value, int(self._current.expires_at - now))

    def refresh(self, body: Mapping[str, object]) -> Grant:
        """`token/refresh`: replace the given token (even an expired one) with a new one."""
        self._check_request(body)
        token = body.get("accessToken")
        if not token:
            raise TokenFailure(1202, "parameter is empty: accessToken")
        if self._current is None or token != self._current.value:
            raise TokenFailure(1204, "failed to refresh access token")
        now = self._clock()
        self._current = self._mint(now)
        return Grant(self._current.value, int(self._ttl))

    def verdict(
        self,
        headers: Mapping[str, str],
        params: Mapping[str, str],
        body: bytes,
    ) -> AuthVerdict:
        """Check a business call's `apim-*` headers against the current token and the secret."""
        token = headers.get("apim-accesstoken", "")
        signature = headers.get("apim-signature", "")
        try:
            timestamp = int(headers.get("apim-timestamp", ""))
        except ValueError:
            return AuthVerdict.INVALID
        if self._current is None or not token or token != self._current.value:
            return AuthVerdict.INVALID
        if signature != sign(token, params, body, timestamp, self._app_secret):
            return AuthVerdict.INVALID
        if self._clock() >= self._current.expires_at:
            return AuthVerdict.EXPIRED
        return AuthVerdict.OK

    def expire_now(self) -> None:
        """Make the current token expire (for tests of the 1203 path)."""
        if self._current is not None:
            self._current.expires_at = self._clock()

    def _check_request(self, body: Mapping[str, object]) -> None:
        app_key, encryption, raw_ts = (body.get(k) for k in ("appKey", "encryption", "timestamp"))
        if not app_key or not encryption or raw_ts in (None, ""):
            raise TokenFailure(1202, "parameter is empty")
        if not isinstance(app_key, str) or not isinstance(encryption, str):
            raise TokenFailure(1004, "invalid parameter")
        timestamp = _timestamp(raw_ts)
        if app_key != self._app_key:
            raise TokenFailure(1002, "appKey does not exist")
        now_ms = self._clock() * 1000
        if abs(now_ms - timestamp) > SKEW_MS:
            raise TokenFailure(1003, "encryption is not valid: timestamp out of range")
        if encryption != token_encryption(app_key, timestamp, self._app_secret):
            raise TokenFailure(1003, "encryption is not valid")
        self._forget_old(now_ms)
        if encryption in self._seen:
            raise TokenFailure(1001, "repeated request")
        self._seen[encryption] = now_ms

    def _forget_old(self, now_ms: float) -> None:
        # A replayed encryption older than the skew window fails the timestamp check anyway.
        for old in [e for e, at in self._seen.items() if now_ms - at > 2 * SKEW_MS]:
            del self._seen[old]

    def _mint(self, now: float) -> _Token:
        return _Token(f"{self._rng.getrandbits(128):032x}", now + self._ttl)


def _timestamp(raw: object) -> int:
    """Epoch milliseconds sent as a JSON number or a string (Envision's Go client)."""
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise TokenFailure(1004, "invalid parameter: timestamp")
    try:
        return int(raw)
    except ValueError as exc:
        raise TokenFailure(1004, "invalid parameter: timestamp") from exc
