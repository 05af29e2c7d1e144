"""The EnOS token service: get an access token, keep it fresh, one request at a time.

`TokenManager` does not speak HTTP itself: the client hands it a `post` callable (the client is
the one module that talks to aiohttp), so the token rules here stay plain logic over an injected
clock.

A token is refreshed before it runs out: once less than the smaller of 10 % of its lifetime and
five minutes is left, that margin stretched by a random share of up to half (drawn from the
injected RNG per token), so processes sharing one app key do not all refresh at one moment.
However many workers ask at once, at most one get/refresh is in flight; the others wait on the
lock and reuse its result.

Another process on the same app key can make our token stop working (its refresh replaces the
token; on some gateways even its get does): `rejected` then gets a fresh one. A failure of the
token service itself (unreachable, 5xx, an unreadable answer) is a `TokenServiceError`: no
business request was sent. Only a refusal of our credentials is an `AuthError`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from batch.enos.errors import (
    AuthError,
    EnosError,
    MalformedResponse,
    TokenServiceError,
    classify_code,
)
from batch.enos.signing import token_encryption
from batch.model import ErrorClass

logger = logging.getLogger(__name__)

GET_PATH = "/apim-token-service/v2.0/token/get"
REFRESH_PATH = "/apim-token-service/v2.0/token/refresh"

REFRESH_MARGIN_FRACTION = 0.1
REFRESH_MARGIN_MAX_S = 300.0
REFRESH_JITTER = 0.5  # the margin grows by up to this share, at random per token
REPLAYED = 1001  # token-service status: this encryption was seen before
REPLAY_TRIES = 3

# POST a JSON object to a token-service path and return the decoded JSON answer.
TokenPost = Callable[[str, Mapping[str, object]], Awaitable[object]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Token:
    """An access token and when (on the injected clock, seconds) it stops being used."""

    value: str = field(repr=False)  # a credential: kept out of reprs, tracebacks and logs
    lifetime_s: float
    expires_at: float
    jitter: float = 0.0  # in [0, 1): how much of REFRESH_JITTER stretches this token's margin

    def refresh_at(self) -> float:
        """The moment after which the token should be replaced rather than used."""
        margin = min(self.lifetime_s * REFRESH_MARGIN_FRACTION, REFRESH_MARGIN_MAX_S)
        return self.expires_at - margin * (1 + REFRESH_JITTER * self.jitter)


def parse_token_answer(answer: object, *, issued_at: float, jitter: float = 0.0) -> Token:
    """The token in a token-service answer, or the error it reports.

    The documented get sample spells the status field `stauts`; both spellings are accepted.
    A refusal of our credentials or request is an AuthError; the service's own failure (1005,
    or a replayed encryption 1001) a TokenServiceError.
    """
    if not isinstance(answer, Mapping):
        raise MalformedResponse("token service answer is not a JSON object")
    status = answer.get("status", answer.get("stauts"))
    if not isinstance(status, int) or isinstance(status, bool):
        raise MalformedResponse("token service answer has no status")
    if status != 0:
        msg = answer.get("msg")
        text = msg if isinstance(msg, str) and msg else "token service refused the request"
        error = AuthError if classify_code(status) is ErrorClass.AUTH else TokenServiceError
        raise error(f"token service: {text} (status {status})", code=status)
    data = answer.get("data")
    if not isinstance(data, Mapping):
        raise MalformedResponse("token service answer has no data")
    value, expire = data.get("accessToken"), data.get("expire")
    if not isinstance(value, str) or not value:
        raise MalformedResponse("token service answer has no accessToken")
    if not isinstance(expire, int | float) or isinstance(expire, bool) or expire <= 0:
        raise MalformedResponse("token service answer has no valid expire")
    lifetime = float(expire)
    return Token(value=value, lifetime_s=lifetime, expires_at=issued_at + lifetime, jitter=jitter)


class TokenManager:
    """Gets, caches and refreshes the app's access token; one token request at a time."""

    def __init__(
        self,
        post: TokenPost,
        *,
        app_key: str,
        app_secret: str,
        clock: Callable[[], float],
        rng: random.Random | None = None,
    ) -> None:
        self._post = post
        self._app_key = app_key
        self._app_secret = app_secret
        self._clock = clock
        self._rng = rng or random.Random()
        self._token: Token | None = None
        self._lock = asyncio.Lock()
        self.requests = 0  # token-service calls made (gets + refreshes), for observability
        self.replays = 0  # of which refused as replays (1001) and asked again

    def __repr__(self) -> str:
        return f"TokenManager(app_key={self._app_key!r}, token={self._token!r})"

    async def token(self) -> str:
        """A token good to use now: the cached one, refreshed or fetched when due."""
        current = self._token
        if current is not None and self._clock() < current.refresh_at():
            return current.value
        async with self._lock:
            current = self._token  # another worker may have replaced it while we waited
            now = self._clock()
            if current is not None and now < current.refresh_at():
                return current.value
            if current is not None and now < current.expires_at:
                self._token = await self._replace(current.value)
            else:
                self._token = await self._get()
            return self._token.value

    async def expired(self, stale: str) -> str:
        """A new token after EnOS said `stale` has expired (1203).

        When another worker already replaced `stale`, its replacement is returned as it is.
        """
        async with self._lock:
            current = self._token
            if current is not None and current.value != stale:
                return current.value
            self._token = await self._replace(stale)
            return self._token.value

    async def rejected(self, stale: str) -> str:
        """A new token after the gateway refused `stale` outright (HTTP 401, no 1203).

        Another process on the same app key replaced it; `stale` cannot be refreshed, so this
        gets a new one, unless another worker of this process already did.
        """
        async with self._lock:
            current = self._token
            if current is not None and current.value != stale:
                return current.value
            self._token = await self._get()
            return self._token.value

    async def _replace(self, old: str) -> Token:
        """Refresh `old`; when the service will not refresh it, get a new token instead."""
        try:
            return await self._request(REFRESH_PATH, {"accessToken": old})
        except AuthError as exc:  # an expired or unknown token: start afresh
            logger.info("token refresh refused (status %s); getting a new token", exc.code)
            return await self._get()

    async def _get(self) -> Token:
        return await self._request(GET_PATH, {})

    async def _request(self, path: str, extra: Mapping[str, object]) -> Token:
        """One token call; a replayed `encryption` (1001) is asked again with a new timestamp.

        The encryption hashes only appKey, timestamp and secret, so two processes on one app
        key asking in the same millisecond send the same value and the second is refused as a
        replay: a later timestamp (a few random milliseconds on) is a new request.
        """
        offset_ms = 0
        for _ in range(REPLAY_TRIES - 1):
            try:
                return await self._request_at(path, extra, offset_ms)
            except TokenServiceError as exc:
                if exc.code != REPLAYED:
                    raise
                self.replays += 1
                offset_ms += self._rng.randint(1, 50)
        return await self._request_at(path, extra, offset_ms)

    async def _request_at(self, path: str, extra: Mapping[str, object], offset_ms: int) -> Token:
        now = self._clock()
        timestamp_ms = int(now * 1000) + offset_ms
        payload: dict[str, object] = {
            "appKey": self._app_key,
            "encryption": token_encryption(self._app_key, timestamp_ms, self._app_secret),
            "timestamp": timestamp_ms,
            **extra,
        }
        self.requests += 1
        try:
            answer = await self._post(path, payload)
            token = parse_token_answer(answer, issued_at=now, jitter=self._rng.random())
        except (AuthError, TokenServiceError):
            raise
        except EnosError as exc:  # unreachable, 5xx, throttled, unreadable: not our credentials
            raise TokenServiceError(
                f"token service: {exc.message}", code=exc.code, http_status=exc.http_status
            ) from exc
        logger.debug("token from %s, valid %.0f s", path.rsplit("/", 1)[-1], token.lifetime_s)
        return token
