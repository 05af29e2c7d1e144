"""The simulator's HTTP face: the aiohttp routes of the token service and the certificate API.

Business calls pass the gateway first (signature, token expiry, per-app rate limit: answers in
the gateway's `{"message": ...}` shape), then the injected faults, then the API itself, which
answers HTTP 200 with the EnOS envelope `{code, msg, requestId, data}`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from batch.simulator.ca import Authority
from batch.simulator.certificates import MSG_INTERNAL, ApiFailure
from batch.simulator.faults import Fate
from batch.simulator.state import Simulator
from batch.simulator.tokens import AuthVerdict, Grant, TokenFailure

TOKEN_PREFIX = "/apim-token-service/v2.0/token"
CERTIFICATES = "/connect-service/v2.0/certificates"
ACTIONS = {"renew": "POST", "apply": "POST", "revoke": "POST", "list": "GET"}

SIMULATOR_KEY = web.AppKey("simulator", Simulator)
API_THREAD_KEY = web.AppKey("api_thread", ThreadPoolExecutor)


def make_app(simulator: Simulator) -> web.Application:
    """The aiohttp application serving `simulator`."""
    app = web.Application()
    app[SIMULATOR_KEY] = simulator
    app.cleanup_ctx.append(_api_thread)
    app.router.add_post(f"{TOKEN_PREFIX}/get", _token_get)
    app.router.add_post(f"{TOKEN_PREFIX}/refresh", _token_refresh)
    app.router.add_route("*", CERTIFICATES, _certificates)
    app.router.add_get("/enos/CA/cacert/{authority}", _ca_cert)
    return app


async def _api_thread(app: web.Application) -> AsyncIterator[None]:
    """One thread runs the certificate API (issuing a certificate is ~1 ms of CPU).

    On the event loop, a burst of issuing held up the requests that had arrived meanwhile, so
    they were counted (and rate-limited) as arriving together, tens of milliseconds late. One
    thread keeps the API's state changes in arrival order, as on the loop.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="enos-api") as pool:
        app[API_THREAD_KEY] = pool
        yield


# -- token service ------------------------------------------------------------------------------


async def _token_get(request: web.Request) -> web.Response:
    return await _token_call(request, "token/get")


async def _token_refresh(request: web.Request) -> web.Response:
    return await _token_call(request, "token/refresh")


async def _token_call(request: web.Request, endpoint: str) -> web.Response:
    sim = request.app[SIMULATOR_KEY]
    sim.stats.arrived(endpoint, business=False)
    body = _json_object(await request.read())
    try:
        if body is None:
            raise TokenFailure(1004, "invalid parameter: the body is not a JSON object")
        service = sim.tokens.get if endpoint == "token/get" else sim.tokens.refresh
        grant: Grant = service(body)
    except TokenFailure as failure:
        return _token_envelope(failure.status, failure.msg, None)
    data = {"accessToken": grant.access_token, "expire": grant.expire}
    return _token_envelope(0, "SUCCESS", data)


def _token_envelope(status: int, msg: str, data: object) -> web.Response:
    body = {"status": status, "msg": msg, "business": "apim-token-service", "data": data}
    return web.json_response(body)


# -- certificate API ----------------------------------------------------------------------------


async def _certificates(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR_KEY]
    action = request.query.get("action", "")
    sim.stats.arrived(action if action in ACTIONS else "other", business=True)
    raw = await request.read()
    refusal = _gateway(sim, request, raw)
    if refusal is not None:
        return refusal
    draw = sim.faults.draw()
    if draw.delay > 0:
        await asyncio.sleep(draw.delay)
    if draw.fate is Fate.DROP:
        sim.stats.faults["drop"] += 1
        return _hang_up(request)
    if draw.fate is Fate.FAIL:
        sim.stats.faults["fail"] += 1
        return _envelope(sim, 99500, MSG_INTERNAL, None)
    call = functools.partial(
        _dispatch,
        sim,
        request.method,
        dict(request.query),
        str(request.url.origin()),
        action,
        raw,
        answer_lost=draw.fate in (Fate.LOST, Fate.FAIL_AFTER),
    )
    response = await asyncio.get_running_loop().run_in_executor(request.app[API_THREAD_KEY], call)
    if draw.fate is Fate.LOST:
        sim.stats.faults["lost"] += 1
        return _hang_up(request)
    if draw.fate is Fate.FAIL_AFTER:
        sim.stats.faults["failAfter"] += 1
        return _envelope(sim, 99500, MSG_INTERNAL, None)
    return response


def _gateway(sim: Simulator, request: web.Request, raw: bytes) -> web.Response | None:
    """What APIM answers before the API sees the call: 401 or 429, or None to let it through."""
    verdict = sim.tokens.verdict(request.headers, dict(request.query), raw)
    if verdict is AuthVerdict.INVALID:
        return web.json_response({"message": "Invalid authentication credentials"}, status=401)
    if verdict is AuthVerdict.EXPIRED:
        return web.json_response({"status": 1203, "msg": "access token has expired"}, status=401)
    if not sim.limiter.admit():
        sim.stats.throttled += 1
        headers = {}
        if sim.config.retry_after is not None:
            headers["Retry-After"] = f"{sim.config.retry_after:g}"
        return web.json_response(
            {"message": "API rate limit exceeded"}, status=429, headers=headers
        )
    return None


def _dispatch(
    sim: Simulator,
    method: str,
    query: dict[str, str],
    base_url: str,
    action: str,
    raw: bytes,
    *,
    answer_lost: bool = False,
) -> web.Response:
    """Run one certificate action and wrap its result or failure in the envelope.

    `answer_lost`: the caller will not pass this answer on (it hangs up, or answers 99500); a
    certificate issued by this call is recorded as never answered.
    """
    body = _json_object(raw)
    if body is None:
        return web.json_response({"message": "Cannot process request body"}, status=400)
    service = sim.certificates
    try:
        if not action:
            raise ApiFailure(99400, "Invalid Argument action:action is missing")
        if ACTIONS.get(action) != method:
            raise ApiFailure(99400, f"Invalid Argument action:action {action} is invalid")
        data: object
        if action in ("renew", "apply"):
            issue = service.renew if action == "renew" else service.apply
            issued = issue(query, body, base_url)
            if answer_lost:
                sim.answer_lost(issued)
            data = issued
        elif action == "revoke":
            service.revoke(query, body)
            data = None
        else:
            data = service.list(query)
    except ApiFailure as failure:
        return _envelope(sim, failure.code, failure.msg, None)
    return _envelope(sim, 0, "OK", data)


def _envelope(sim: Simulator, code: int, msg: str, data: object) -> web.Response:
    request_id = str(uuid.UUID(int=sim.request_ids.getrandbits(128), version=4))
    return web.json_response({"code": code, "msg": msg, "requestId": request_id, "data": data})


def _hang_up(request: web.Request) -> web.Response:
    """Close the connection without an answer; the response returned is never written."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=204)


def _json_object(raw: bytes) -> dict[str, Any] | None:
    """The body as a JSON object ({} when empty); None when it is not one."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


# -- CA certificates (certChainURL) -------------------------------------------------------------


async def _ca_cert(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR_KEY]
    name = request.match_info["authority"].upper()
    if name not in Authority.__members__:
        raise web.HTTPNotFound()
    pem = sim.authorities[Authority(name)].pem
    return web.Response(text=pem + "\n", content_type="application/x-pem-file")
