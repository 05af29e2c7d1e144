"""Shared fixtures. Simulator: a real EnOS simulator on loopback and a raw signed HTTP caller."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import trustme

from batch.enos import sign, token_encryption
from batch.simulator import RunningSimulator, SimulatorConfig, running_simulator

SIM_APP_KEY = "test-app-key"
SIM_APP_SECRET = "test-app-secret"
SIM_ORG = "o-sandbox"
CERTIFICATES_PATH = "/connect-service/v2.0/certificates"

# A small fleet covering every sandbox shape (see batch.simulator.fleet).
SIM_FLEET: list[dict[str, object]] = [
    {"assetId": "asset-1", "certSn": 1001},
    {"productKey": "pk", "deviceKey": "dk-2", "certSn": 1002},
    {"assetId": "asset-expired", "certSn": 1003, "sandbox": "expired"},
    {"assetId": "asset-revoked", "certSn": 1004, "sandbox": "revoked"},
    {"assetId": "asset-flaky", "certSn": 1005, "sandbox": "flaky"},
    {"assetId": "asset-noauth", "certSn": 1006, "sandbox": "no-cert-auth"},
    {"assetId": "asset-absent", "certSn": 1007, "sandbox": "absent"},
    {"assetId": "asset-dup", "certSn": 1001},  # 1001 is asset-1's: this one gets a fresh serial
]


@dataclass
class MovableClock:
    """A wall clock (epoch seconds) that tests move forward by hand."""

    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Answer:
    """An HTTP answer: status, headers and the JSON body."""

    status: int
    headers: Mapping[str, str]
    body: Any


class RawEnos:
    """Talks to the simulator over real HTTP with hand-built signed requests (no client code)."""

    def __init__(self, session: aiohttp.ClientSession, sim: RunningSimulator) -> None:
        self.session = session
        self.sim = sim
        self.token: str | None = None

    def _ms(self) -> int:
        return int(self.sim.simulator.clock() * 1000)

    async def token_call(self, endpoint: str, body: Mapping[str, object]) -> Any:
        url = f"{self.sim.url}/apim-token-service/v2.0/token/{endpoint}"
        async with self.session.post(url, json=dict(body)) as response:
            assert response.status == 200
            return await response.json()

    def token_body(self, **overrides: object) -> dict[str, object]:
        timestamp = self._ms()
        key, secret = self.sim.config.app_key, self.sim.config.app_secret
        body: dict[str, object] = {
            "appKey": key,
            "encryption": token_encryption(key, timestamp, secret),
            "timestamp": timestamp,
        }
        body.update(overrides)
        return body

    async def login(self) -> str:
        answer = await self.token_call("get", self.token_body())
        assert answer["status"] == 0, answer
        self.token = str(answer["data"]["accessToken"])
        return self.token

    async def call(
        self,
        action: str,
        params: Mapping[str, str],
        body: Mapping[str, object] | bytes | None = None,
        *,
        method: str | None = None,
        secret: str | None = None,
        token: str | None = None,
    ) -> Answer:
        """A signed business call; `secret`/`token` override what is signed and sent."""
        query = {"action": action, **params}
        raw = body if isinstance(body, bytes) else json.dumps(body).encode() if body else b""
        token = token if token is not None else self.token or await self.login()
        timestamp = self._ms()
        signature = sign(token, query, raw, timestamp, secret or self.sim.config.app_secret)
        headers = {
            "apim-accesstoken": token,
            "apim-timestamp": str(timestamp),
            "apim-signature": signature,
            "Content-Type": "application/json;charset=UTF-8",
        }
        verb = method or ("GET" if action == "list" else "POST")
        url = f"{self.sim.url}{CERTIFICATES_PATH}"
        async with self.session.request(
            verb, url, params=query, data=raw, headers=headers
        ) as response:
            return Answer(response.status, response.headers, await response.json(content_type=None))

    async def renew(self, device: Mapping[str, str], **body: object) -> Answer:
        return await self.call("renew", {"orgId": SIM_ORG, **device}, body)

    async def certificates(self, device: Mapping[str, str]) -> list[dict[str, Any]]:
        answer = await self.call("list", {"orgId": SIM_ORG, **device})
        assert answer.body["code"] == 0, answer.body
        return list(answer.body["data"])


@pytest.fixture
def sim_config() -> SimulatorConfig:
    """The default simulator settings for tests (override with dataclasses.replace)."""
    return SimulatorConfig(app_key=SIM_APP_KEY, app_secret=SIM_APP_SECRET, org_id=SIM_ORG)


@pytest.fixture
async def simulator(sim_config: SimulatorConfig) -> AsyncIterator[RunningSimulator]:
    """A simulator on loopback seeded with SIM_FLEET."""
    async with running_simulator(sim_config, SIM_FLEET) as sim:
        yield sim


@asynccontextmanager
async def raw_simulator(
    config: SimulatorConfig, *, clock: Callable[[], float] = time.time
) -> AsyncIterator[RawEnos]:
    """A simulator on loopback seeded with SIM_FLEET under `config`, and raw access to it."""
    async with (
        running_simulator(config, SIM_FLEET, clock=clock) as sim,
        aiohttp.ClientSession() as session,
    ):
        yield RawEnos(session, sim)


@pytest.fixture
async def raw_enos(simulator: RunningSimulator) -> AsyncIterator[RawEnos]:
    """Signed raw HTTP access to the `simulator` fixture."""
    async with aiohttp.ClientSession() as session:
        yield RawEnos(session, simulator)


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    """A throwaway CA for loopback HTTPS servers (clients trust it via a CA bundle)."""
    return trustme.CA()


@pytest.fixture
def server_tls(tls_ca: trustme.CA) -> ssl.SSLContext:
    """A server TLS context for 127.0.0.1, signed by `tls_ca`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1").configure_cert(context)
    return context
