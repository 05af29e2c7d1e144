"""notify(): a real loopback receiver (HTTP and HTTPS) gets the summary; failures return False."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web

from batch.model import ErrorClass, Status
from batch.outputs.notify import notification_text, notify
from batch.outputs.report import Summary, write_summary

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SECRET_PATH = "/services/T000/B000/hook-secret-XYZ"  # Slack webhooks carry their secret here


def summary(**overrides: Any) -> Summary:
    started = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    values: dict[str, Any] = {
        "counts_by_status": {Status.RENEWED: 97, Status.FAILED: 2, Status.INVALID: 1},
        "counts_by_class": {ErrorClass.DEVICE_NOT_FOUND: 2, ErrorClass.INVALID_INPUT: 1},
        "devices": 100,
        "requests": 104,
        "started": started,
        "finished": started + timedelta(seconds=41.6),
        "configured_rate": 5.0,
        "exit_code": 1,
        "extra": {"throttled": 3, "stoppedBy": None},
    }
    values.update(overrides)
    return Summary(**values)


class Receiver:
    """What a loopback webhook saw: method, path, content type and body of every request."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str, bytes]] = []
        self.release = asyncio.Event()  # lets a delayed answer go early, once the test is done

    def answering(self, status: int, *, delay: float = 0.0) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            self.seen.append((request.method, request.path, request.content_type, body))
            if delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.release.wait(), delay)
            return web.Response(status=status, text="ok")

        return handle


@asynccontextmanager
async def serve(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """Run `handler` for every path on 127.0.0.1 (a free port); yield the base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_receiver_gets_the_summary_json_with_a_slack_text_line() -> None:
    receiver = Receiver()
    run = summary()
    async with serve(receiver.answering(200)) as base:
        assert await notify(base + SECRET_PATH, run) is True
    [(method, path, content_type, raw)] = receiver.seen
    assert (method, path, content_type) == ("POST", SECRET_PATH, "application/json")
    body = json.loads(raw)
    text = body.pop("text")
    assert body == json.loads(json.dumps(run.to_json()))
    assert body["counts_by_status"] == {"renewed": 97, "failed": 2, "invalid": 1}
    assert text == (
        "fleet-renew: 97 renewed, 2 failed, 1 invalid, 0 skipped of 100 devices in 42 s;"
        " exit 1 (some devices failed)"
    )


async def test_the_body_renders_extra_values_as_summary_json_does(tmp_path: Path) -> None:
    # Times in another zone, an enum and a path: the body must be summary.json's document.
    shanghai = datetime(2026, 3, 1, 20, 0, tzinfo=timezone(timedelta(hours=8)))
    run = summary(extra={"when": shanghai, "status": Status.FAILED, "out": tmp_path})
    receiver = Receiver()
    async with serve(receiver.answering(200)) as base:
        assert await notify(base + "/hook", run) is True
    [(_, _, _, raw)] = receiver.seen
    body = json.loads(raw)
    del body["text"]
    assert body == json.loads(write_summary(tmp_path, run).read_text())
    assert body["extra"]["when"] == "2026-03-01T12:00:00Z"


async def test_any_2xx_answer_counts_as_delivered() -> None:
    receiver = Receiver()
    async with serve(receiver.answering(204)) as base:
        assert await notify(base + "/hook", summary()) is True
    assert len(receiver.seen) == 1


@pytest.mark.parametrize("status", [500, 404, 302])
async def test_a_non_2xx_answer_returns_false_and_logs_a_warning_without_the_secret(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = Receiver()
    caplog.set_level(logging.WARNING, logger="batch.outputs.notify")
    async with serve(receiver.answering(status)) as base:
        assert await notify(base + SECRET_PATH, summary()) is False
    assert len(receiver.seen) == 1  # sent once; a 302 is not followed
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert f"HTTP {status}" in record.getMessage()
    assert "hook-secret-XYZ" not in caplog.text


async def test_a_refused_connection_returns_false(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="batch.outputs.notify")
    url = f"http://127.0.0.1:{free_port()}{SECRET_PATH}"
    assert await notify(url, summary()) is False
    assert "ClientConnectorError" in caplog.text
    assert "hook-secret-XYZ" not in caplog.text


async def test_a_receiver_slower_than_the_timeout_returns_false() -> None:
    receiver = Receiver()
    loop = asyncio.get_running_loop()
    async with serve(receiver.answering(200, delay=5.0)) as base:
        started = loop.time()
        assert await notify(base + "/hook", summary(), timeout_s=0.3) is False
        assert loop.time() - started < 3.0
        receiver.release.set()
    assert len(receiver.seen) == 1


@pytest.mark.parametrize("url", ["not a url", "ftp://127.0.0.1/hook", "http://"])
async def test_a_malformed_url_returns_false(url: str) -> None:
    assert await notify(url, summary()) is False


async def test_tls_is_verified_an_unknown_ca_is_refused(server_tls: ssl.SSLContext) -> None:
    receiver = Receiver()
    async with serve(receiver.answering(200), tls=server_tls) as base:
        assert await notify(base + "/hook", summary()) is False
    assert receiver.seen == []  # nothing was sent over the unverified connection


async def test_tls_with_the_receivers_ca_bundle_delivers(
    tls_ca: trustme.CA, server_tls: ssl.SSLContext, tmp_path: Path
) -> None:
    bundle = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(bundle))
    receiver = Receiver()
    async with serve(receiver.answering(200), tls=server_tls) as base:
        assert await notify(base + "/hook", summary(), ca_bundle=bundle) is True
    assert json.loads(receiver.seen[0][3])["devices"] == 100


def test_text_is_one_slack_safe_line_and_names_an_abort() -> None:
    run = summary(exit_code=3, aborted_reason="circuit breaker:\n 5 x <server_error> & more")
    text = notification_text(run)
    assert "\n" not in text
    assert text.endswith(
        "exit 3 (aborted); aborted: circuit breaker: 5 x &lt;server_error&gt; &amp; more"
    )


def test_text_says_sandbox() -> None:
    assert notification_text(summary(sandbox=True, exit_code=0)).startswith(
        "fleet-renew (sandbox): "
    )
