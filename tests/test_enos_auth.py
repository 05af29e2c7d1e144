"""The token manager: answer parsing, refresh before expiry, one token request at a time.

The token service is stood in for by `TokenDesk`, a few lines acting as EnOS's token endpoint
behind the `post` seam the client injects; the clock is a fake that tests move by hand. The
same behaviour over real HTTP against the simulator is in test_enos_client.py.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping

import pytest

from batch.enos import Token, TokenManager, token_encryption
from batch.enos.auth import GET_PATH, REFRESH_JITTER, REFRESH_PATH, parse_token_answer
from batch.enos.errors import (
    AuthError,
    GatewayError,
    MalformedResponse,
    TokenServiceError,
    classify,
)
from batch.model import ErrorClass

APP_KEY, APP_SECRET = "app-key", "app-secret"


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class TokenDesk:
    """Answers token get/refresh like the EnOS token service; records what it was asked."""

    def __init__(self, *, expire: int = 7200, delay: float = 0.0) -> None:
        self.expire = expire
        self.delay = delay
        self.calls: list[tuple[str, dict[str, object]]] = []
        self.refuse: dict[str, int] = {}  # path -> status to answer instead of a token
        self.issued = 0

    async def post(self, path: str, payload: Mapping[str, object]) -> object:
        self.calls.append((path, dict(payload)))
        await asyncio.sleep(self.delay)
        if path in self.refuse:
            return {"status": self.refuse[path], "msg": "refused", "data": None}
        self.issued += 1
        data = {"accessToken": f"token-{self.issued}", "expire": self.expire}
        return {"status": 0, "msg": "SUCCESS", "business": "apim-token-service", "data": data}

    def paths(self) -> list[str]:
        return [path for path, _ in self.calls]


class NoJitter(random.Random):
    """An RNG whose every draw is 0: refresh margins exactly as the rule states them."""

    def random(self) -> float:
        return 0.0


def manager(desk: TokenDesk, clock: FakeClock) -> TokenManager:
    return TokenManager(
        desk.post, app_key=APP_KEY, app_secret=APP_SECRET, clock=clock, rng=NoJitter()
    )


# -- answers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status_field", ["status", "stauts"])
def test_token_answer_is_read_with_either_status_spelling(status_field: str) -> None:
    answer = {status_field: 0, "msg": "SUCCESS", "data": {"accessToken": "abc", "expire": 7200}}
    token = parse_token_answer(answer, issued_at=1000.0)
    assert (token.value, token.lifetime_s, token.expires_at) == ("abc", 7200.0, 8200.0)


@pytest.mark.parametrize("status", [1002, 1003, 1004, 1202, 1204])
@pytest.mark.parametrize("status_field", ["status", "stauts"])
def test_token_service_refusals_are_auth_errors_with_the_code(
    status: int, status_field: str
) -> None:
    with pytest.raises(AuthError) as caught:
        parse_token_answer({status_field: status, "msg": "appKey does not exist"}, issued_at=0)
    assert caught.value.code == status
    assert "appKey does not exist" in str(caught.value)


@pytest.mark.parametrize("status", [1001, 1005, 4242])
def test_token_service_failures_are_not_refused_credentials(status: int) -> None:
    """A replayed encryption (two processes in one millisecond), an internal error, a status
    nobody documented: the service failed, our credentials were not refused."""
    with pytest.raises(TokenServiceError) as caught:
        parse_token_answer({"status": status, "msg": "internal service exception"}, issued_at=0)
    assert caught.value.code == status
    assert classify(caught.value) is ErrorClass.TOKEN_SERVICE


@pytest.mark.parametrize(
    "answer",
    [
        [],
        {"msg": "no status"},
        {"status": "0", "data": {"accessToken": "a", "expire": 1}},
        {"status": 0},
        {"status": 0, "data": {"expire": 7200}},
        {"status": 0, "data": {"accessToken": "", "expire": 7200}},
        {"status": 0, "data": {"accessToken": "a", "expire": 0}},
        {"status": 0, "data": {"accessToken": "a", "expire": "7200"}},
        {"status": 0, "data": {"accessToken": "a", "expire": True}},
    ],
)
def test_unusable_token_answers_are_malformed(answer: object) -> None:
    with pytest.raises(MalformedResponse):
        parse_token_answer(answer, issued_at=0)


def test_token_repr_hides_the_token() -> None:
    token = Token(value="very-secret-token", lifetime_s=10, expires_at=20)
    assert "very-secret-token" not in repr(token)


@pytest.mark.parametrize(("jitter", "margin"), [(0.0, 100.0), (0.5, 125.0), (0.999, 149.95)])
def test_the_refresh_margin_is_stretched_by_the_token_jitter(jitter: float, margin: float) -> None:
    token = Token(value="t", lifetime_s=1000.0, expires_at=50_000.0, jitter=jitter)
    assert token.refresh_at() == pytest.approx(50_000.0 - margin)


async def test_each_token_draws_its_jitter_from_the_injected_rng() -> None:
    desk, clock = TokenDesk(expire=1000), FakeClock()
    draws = random.Random(7)
    expected = random.Random(7).random()
    tokens = TokenManager(desk.post, app_key=APP_KEY, app_secret=APP_SECRET, clock=clock, rng=draws)
    await tokens.token()
    # refresh due at 100 * (1 + 0.5 * draw) s before expiry: not a moment before
    due = 1000 - 100 * (1 + REFRESH_JITTER * expected)
    clock.now += due - 0.01
    assert await tokens.token() == "token-1"
    clock.now += 0.02
    assert await tokens.token() == "token-2"
    assert desk.paths() == [GET_PATH, REFRESH_PATH]


@pytest.mark.parametrize(
    ("lifetime", "refresh_before_expiry"),
    [(7200.0, 300.0), (3600.0, 300.0), (1000.0, 100.0), (10.0, 1.0)],
)
def test_refresh_is_due_at_the_smaller_of_ten_percent_and_five_minutes(
    lifetime: float, refresh_before_expiry: float
) -> None:
    token = Token(value="t", lifetime_s=lifetime, expires_at=50_000.0)
    assert token.refresh_at() == pytest.approx(50_000.0 - refresh_before_expiry)


# -- the manager --------------------------------------------------------------------------------


async def test_first_use_gets_a_token_with_a_valid_encryption() -> None:
    desk, clock = TokenDesk(), FakeClock(1_700_000_000.5)
    assert await manager(desk, clock).token() == "token-1"
    [(path, payload)] = desk.calls
    assert path == GET_PATH
    assert payload["appKey"] == APP_KEY
    assert payload["timestamp"] == 1_700_000_000_500
    assert payload["encryption"] == token_encryption(APP_KEY, 1_700_000_000_500, APP_SECRET)


async def test_cached_token_is_reused_until_refresh_is_due() -> None:
    desk, clock = TokenDesk(expire=1000), FakeClock()
    tokens = manager(desk, clock)
    assert await tokens.token() == "token-1"
    clock.now += 899  # 101 s left: more than 10 % of the lifetime
    assert await tokens.token() == "token-1"
    assert desk.paths() == [GET_PATH]


async def test_token_is_refreshed_shortly_before_it_expires() -> None:
    desk, clock = TokenDesk(expire=1000), FakeClock()
    tokens = manager(desk, clock)
    await tokens.token()
    clock.now += 901  # 99 s left: inside the 100 s margin
    assert await tokens.token() == "token-2"
    assert desk.paths() == [GET_PATH, REFRESH_PATH]
    assert desk.calls[1][1]["accessToken"] == "token-1"
    clock.now += 899  # the refreshed token's lifetime counts from the refresh
    assert await tokens.token() == "token-2"


async def test_an_expired_token_is_replaced_by_a_new_get() -> None:
    desk, clock = TokenDesk(expire=100), FakeClock()
    tokens = manager(desk, clock)
    await tokens.token()
    clock.now += 100
    assert await tokens.token() == "token-2"
    assert desk.paths() == [GET_PATH, GET_PATH]


async def test_one_token_request_in_flight_however_many_workers_wait() -> None:
    desk, clock = TokenDesk(delay=0.01), FakeClock()
    tokens = manager(desk, clock)
    first = await asyncio.gather(*(tokens.token() for _ in range(50)))
    assert set(first) == {"token-1"}
    clock.now += 7000  # refresh due
    second = await asyncio.gather(*(tokens.token() for _ in range(50)))
    assert set(second) == {"token-2"}
    assert desk.paths() == [GET_PATH, REFRESH_PATH]
    assert tokens.requests == 2


async def test_expired_verdict_refreshes_once_for_all_workers_holding_the_stale_token() -> None:
    desk, clock = TokenDesk(delay=0.01), FakeClock()
    tokens = manager(desk, clock)
    stale = await tokens.token()
    fresh = await asyncio.gather(*(tokens.expired(stale) for _ in range(20)))
    assert set(fresh) == {"token-2"}
    assert desk.paths() == [GET_PATH, REFRESH_PATH]
    assert await tokens.token() == "token-2"


async def test_a_rejected_token_is_replaced_by_one_get_for_all_workers_holding_it() -> None:
    desk, clock = TokenDesk(delay=0.01), FakeClock()
    tokens = manager(desk, clock)
    stale = await tokens.token()
    fresh = await asyncio.gather(*(tokens.rejected(stale) for _ in range(20)))
    assert set(fresh) == {"token-2"}
    assert desk.paths() == [GET_PATH, GET_PATH]  # a get: a replaced token cannot be refreshed
    assert await tokens.rejected(stale) == "token-2"  # late news of the stale one: no new call
    assert desk.paths() == [GET_PATH, GET_PATH]


async def test_a_failing_token_service_is_a_token_service_error() -> None:
    async def broken(path: str, payload: Mapping[str, object]) -> object:
        raise GatewayError("HTTP 502: Bad Gateway", http_status=502)

    tokens = TokenManager(broken, app_key=APP_KEY, app_secret=APP_SECRET, clock=FakeClock())
    with pytest.raises(TokenServiceError) as caught:
        await tokens.token()
    assert caught.value.http_status == 502 and "Bad Gateway" in caught.value.message
    assert classify(caught.value) is ErrorClass.TOKEN_SERVICE


async def test_refused_refresh_falls_back_to_a_new_token() -> None:
    desk, clock = TokenDesk(), FakeClock()
    tokens = manager(desk, clock)
    stale = await tokens.token()
    desk.refuse[REFRESH_PATH] = 1204
    assert await tokens.expired(stale) == "token-2"
    assert desk.paths() == [GET_PATH, REFRESH_PATH, GET_PATH]


async def test_refused_get_raises_auth_error_and_caches_nothing() -> None:
    desk, clock = TokenDesk(), FakeClock()
    desk.refuse[GET_PATH] = 1002
    tokens = manager(desk, clock)
    with pytest.raises(AuthError) as caught:
        await tokens.token()
    assert caught.value.code == 1002
    del desk.refuse[GET_PATH]
    assert await tokens.token() == "token-1"  # the next call asks again


async def test_manager_repr_hides_token_and_secret() -> None:
    desk, clock = TokenDesk(), FakeClock()
    tokens = manager(desk, clock)
    value = await tokens.token()
    assert value not in repr(tokens)
    assert APP_SECRET not in repr(tokens)
