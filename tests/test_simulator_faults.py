"""The simulator's injected faults and its per-app rate limit, seen from a raw HTTP client."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections import Counter

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from batch.simulator import SimulatorConfig
from batch.simulator.faults import WINDOW, Fate, FaultPlan, SlidingWindow
from tests.conftest import SIM_ORG, raw_simulator

ASSET_1 = {"assetId": "asset-1"}
LIST_PARAMS = {"orgId": SIM_ORG, **ASSET_1}


# -- the sliding window, with an injected clock -------------------------------------------------


@given(
    limit=st.integers(min_value=1, max_value=20),
    gaps=st.lists(st.floats(min_value=0.0, max_value=0.3), min_size=1, max_size=200),
)
def test_the_limiter_never_admits_more_than_its_limit_in_any_window(
    limit: int, gaps: list[float]
) -> None:
    now = [0.0]
    window = SlidingWindow(limit, lambda: now[0])
    admitted: list[float] = []
    for gap in gaps:
        now[0] += gap
        if window.admit():
            admitted.append(now[0])
    for i, start in enumerate(admitted):
        in_window = [t for t in admitted[i:] if t - start < WINDOW]
        assert len(in_window) <= limit
    assert window.peak <= limit


def test_the_limiter_admits_again_once_the_window_has_slid() -> None:
    now = [100.0]
    window = SlidingWindow(2, lambda: now[0])
    assert [window.admit() for _ in range(3)] == [True, True, False]
    now[0] += 0.999
    assert not window.admit()
    now[0] += 0.001
    assert window.admit()


def test_an_unlimited_window_reports_its_busiest_second() -> None:
    now = [0.0]
    window = SlidingWindow(None, lambda: now[0])
    for step in [0.125] * 15 + [2.0] + [0.01] * 4:  # binary-exact steps: 8 per second
        now[0] += step
        assert window.admit()
    assert window.peak == 8


# -- fault draws --------------------------------------------------------------------------------


def _fates(config: SimulatorConfig, n: int) -> list[Fate]:
    plan = FaultPlan(config, random.Random(config.seed))
    return [plan.draw().fate for _ in range(n)]


def test_fault_draws_are_reproducible_per_seed(sim_config: SimulatorConfig) -> None:
    config = dataclasses.replace(sim_config, fail_rate=0.2, drop_rate=0.2, lost_rate=0.2, seed=7)
    assert _fates(config, 200) == _fates(config, 200)
    assert _fates(config, 200) != _fates(dataclasses.replace(config, seed=8), 200)
    counts = Counter(_fates(config, 5000))
    for fate in (Fate.FAIL, Fate.DROP, Fate.LOST, Fate.NORMAL):
        assert 0.15 < counts[fate] / 5000 < 0.45


def test_latency_stays_within_the_jitter(sim_config: SimulatorConfig) -> None:
    config = dataclasses.replace(sim_config, latency_ms=100, jitter_ms=30)
    plan = FaultPlan(config, random.Random(0))
    delays = [plan.draw().delay for _ in range(500)]
    assert all(0.07 <= d <= 0.13 for d in delays)
    assert max(delays) - min(delays) > 0.04  # it does vary


# -- over the wire ------------------------------------------------------------------------------


async def test_429_beyond_the_rate_limit_then_recovery(sim_config: SimulatorConfig) -> None:
    async with raw_simulator(dataclasses.replace(sim_config, rate_limit=5)) as raw:
        await raw.login()
        answers = await asyncio.gather(*(raw.call("list", LIST_PARAMS) for _ in range(20)))
        statuses = Counter(a.status for a in answers)
        assert statuses == {200: 5, 429: 15}
        refused = next(a for a in answers if a.status == 429)
        assert refused.body == {"message": "API rate limit exceeded"}
        assert "Retry-After" not in refused.headers
        await asyncio.sleep(WINDOW + 0.05)
        assert (await raw.call("list", LIST_PARAMS)).status == 200
        stats = raw.sim.state_dict()["stats"]
        assert stats["throttled"] == 15
        assert stats["maxInOneSecond"] == 20  # counted before the limit
        assert stats["requests"]["token/get"] == 1  # the token service is not limited


async def test_steady_traffic_above_the_limit_is_held_to_the_limit(
    sim_config: SimulatorConfig,
) -> None:
    async with raw_simulator(dataclasses.replace(sim_config, rate_limit=10)) as raw:
        await raw.login()
        accepted: list[float] = []
        started = time.monotonic()
        while time.monotonic() - started < 2.0:  # ~40 requests/s offered
            if (await raw.call("list", LIST_PARAMS)).status == 200:
                accepted.append(time.monotonic())
            await asyncio.sleep(0.025)
        elapsed = time.monotonic() - started
        # The exact any-window guarantee is proven above with an injected clock; over the
        # wire, client-side times jitter, so check the total the windows allow.
        assert 18 <= len(accepted) <= 10 * (int(elapsed / WINDOW) + 1)
        assert raw.sim.stats.throttled > 20


async def test_429_carries_retry_after_when_configured(sim_config: SimulatorConfig) -> None:
    async with raw_simulator(dataclasses.replace(sim_config, rate_limit=1, retry_after=2)) as raw:
        await raw.login()
        assert (await raw.call("list", LIST_PARAMS)).status == 200
        refused = await raw.call("list", LIST_PARAMS)
        assert refused.status == 429 and refused.headers["Retry-After"] == "2"


async def test_fail_rate_answers_99500_with_no_effect(sim_config: SimulatorConfig) -> None:
    async with raw_simulator(dataclasses.replace(sim_config, fail_rate=1.0)) as raw:
        answer = await raw.renew(ASSET_1, certSn=1001)
        assert answer.status == 200
        assert answer.body["code"] == 99500 and answer.body["data"] is None
        state = raw.sim.state_dict()
        assert state["devices"]["asset-1"]["renewals"] == 0
        assert state["devices"]["asset-1"]["certificates"][0]["status"] == "valid"
        assert state["stats"]["faults"] == {"fail": 1, "drop": 0, "lost": 0, "failAfter": 0}


async def test_drop_rate_closes_the_connection_with_no_effect(sim_config: SimulatorConfig) -> None:
    async with raw_simulator(dataclasses.replace(sim_config, drop_rate=1.0)) as raw:
        await raw.login()  # the token service is never faulty
        with pytest.raises(aiohttp.ClientConnectionError):
            await raw.renew(ASSET_1, certSn=1001)
        assert raw.sim.device("asset-1").renewals == 0
        assert raw.sim.stats.faults["drop"] == 1


async def test_lost_answer_renews_but_never_replies(sim_config: SimulatorConfig) -> None:
    async with raw_simulator(dataclasses.replace(sim_config, lost_rate=1.0)) as raw:
        with pytest.raises(aiohttp.ClientConnectionError):
            await raw.renew(ASSET_1, certSn=1001)
        device = raw.sim.state_dict()["devices"]["asset-1"]
        assert device["renewals"] == 1
        assert [c["status"] for c in device["certificates"]] == ["revoked", "valid"]
        assert raw.sim.stats.faults["lost"] == 1
        # The state file names the renewal whose answer was lost, and only renewals that took
        # effect: a lost List, or a lost refusal (certSn 1001 is superseded now), adds nothing.
        assert device["lostAnswers"] == [device["certificates"][1]["serial"]]
        with pytest.raises(aiohttp.ClientConnectionError):
            await raw.call("list", LIST_PARAMS)
        with pytest.raises(aiohttp.ClientConnectionError):
            await raw.renew(ASSET_1, certSn=1001)
        device = raw.sim.state_dict()["devices"]["asset-1"]
        assert device["renewals"] == 1 and len(device["lostAnswers"]) == 1
        assert raw.sim.stats.faults["lost"] >= 3  # aiohttp may send the GET again


async def test_an_answered_renewal_is_not_recorded_as_lost(sim_config: SimulatorConfig) -> None:
    async with raw_simulator(sim_config) as raw:
        answer = await raw.renew(ASSET_1, certSn=1001)
        assert answer.body["code"] == 0
        device = raw.sim.state_dict()["devices"]["asset-1"]
        assert device["renewals"] == 1 and device["lostAnswers"] == []


async def test_fail_after_rate_renews_then_answers_99500(sim_config: SimulatorConfig) -> None:
    async with raw_simulator(dataclasses.replace(sim_config, fail_after_rate=1.0)) as raw:
        answer = await raw.renew(ASSET_1, certSn=1001)
        assert answer.status == 200
        assert answer.body["code"] == 99500 and answer.body["data"] is None
        device = raw.sim.state_dict()["devices"]["asset-1"]
        assert device["renewals"] == 1
        assert [c["status"] for c in device["certificates"]] == ["revoked", "valid"]
        assert raw.sim.stats.faults["failAfter"] == 1
        assert device["lostAnswers"] == [device["certificates"][1]["serial"]]


async def test_a_flaky_after_device_renews_then_answers_99500_once(
    sim_config: SimulatorConfig,
) -> None:
    async with raw_simulator(sim_config) as raw:
        raw.sim.fleet.add_device(asset_id="late-news", cert_sn=4001, sandbox="flaky-after")
        first = await raw.renew({"assetId": "late-news"}, certSn=4001)
        assert first.body["code"] == 99500
        listed = await raw.certificates({"assetId": "late-news"})
        assert [c["certStatus"] for c in listed] == [1, 0]  # superseded, and the new one
        again = await raw.renew({"assetId": "late-news"}, certSn=int(listed[1]["certSN"]))
        assert again.body["code"] == 0
        assert raw.sim.device("late-news").renewals == 2
        assert raw.sim.device("late-news").lost_answers == [int(listed[1]["certSN"])]


async def test_latency_delays_business_calls(sim_config: SimulatorConfig) -> None:
    async with raw_simulator(dataclasses.replace(sim_config, latency_ms=250)) as raw:
        await raw.login()
        started = time.monotonic()
        assert (await raw.call("list", LIST_PARAMS)).body["code"] == 0
        assert time.monotonic() - started >= 0.25
