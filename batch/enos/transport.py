"""The aiohttp boundary: one session to one gateway; every aiohttp failure becomes ours here.

`Transport` owns the `aiohttp.ClientSession` (TLS verification always on, redirects never
followed: a redirect would carry the token's headers elsewhere). Every aiohttp exception, and
the bare `TimeoutError` aiohttp raises when the total timeout runs out, is translated here and
only here into the `batch.enos.errors` tree, chained with `from exc`, with a text of our own: a
library's text holds the URL and the request headers (access token, signature). An answer is
read up to `MAX_ANSWER_BYTES` only.

`TransportError.sent` is decided by whether the request headers had started going out (an
aiohttp trace signal), so a timeout while waiting for a pooled connection or connecting is
`sent=False`, while a reset or timeout after that is `sent=True` (the renewal may have happened).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace

import aiohttp
from yarl import URL

from batch.enos.errors import MalformedResponse, NetworkError, RequestTimeout
from batch.enos.gateway import ClientConfig

logger = logging.getLogger(__name__)

# The largest answer read. A Renew answer is two PEM certificates (~3 KiB); a List answer holds
# a few records per device. 1 MiB is far above any real answer and bounds the memory a broken
# or hostile gateway can make us spend (workers x 1 MiB).
MAX_ANSWER_BYTES = 1 << 20
_READ_CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer, read in full (up to MAX_ANSWER_BYTES)."""

    status: int
    body: bytes
    retry_after: str | None


@dataclass(slots=True)
class _Progress:
    """Per-request flag set by aiohttp's trace once the request headers go out."""

    sent: bool = False


async def _on_headers_sent(
    session: aiohttp.ClientSession,
    ctx: SimpleNamespace,
    params: aiohttp.TraceRequestHeadersSentParams,
) -> None:
    """Mark the request as sent: from here on, EnOS may act on it."""
    progress = ctx.trace_request_ctx
    if isinstance(progress, _Progress):
        progress.sent = True


class Transport:
    """Sends requests to one gateway and reads their answers; `open` before, `close` after."""

    def __init__(self, config: ClientConfig, *, connector_limit: int = 100) -> None:
        self._config = config
        self._connector_limit = connector_limit
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        if self._config.is_plain_http_remote:
            logger.warning(
                "EnOS gateway %s is plain http:// on a non-loopback host: tokens and "
                "certificates cross the network unencrypted",
                self._config.base_url,
            )
        trace = aiohttp.TraceConfig()
        trace.on_request_headers_sent.append(_on_headers_sent)
        # Loading the system trust store costs ~25 ms: only for a gateway that speaks TLS (a
        # plain http:// one never uses the context; True is aiohttp's verifying default).
        https = URL(self._config.base_url).scheme == "https"
        tls: ssl.SSLContext | bool = self._ssl_context() if https else True
        connector = aiohttp.TCPConnector(limit=self._connector_limit, ssl=tls)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=self._config.timeout_s, sock_connect=self._config.connect_timeout_s
            ),
            trace_configs=[trace],
            headers={"User-Agent": "fleet-renew"},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _ssl_context(self) -> ssl.SSLContext:
        # The system trust store plus the private gateway's CA: verification is never turned off.
        context = ssl.create_default_context()
        if self._config.ca_bundle is not None:
            context.load_verify_locations(cafile=self._config.ca_bundle)
        return context

    async def exchange(
        self,
        method: str,
        url: URL,
        data: bytes | None,
        headers: Mapping[str, str],
        *,
        business: bool,
    ) -> Answer:
        """Send one request and read its answer (at most MAX_ANSWER_BYTES); aiohttp errors
        become ours here, worded by us: a library's text carries the URL and request headers.

        `business=False` (token calls) always reports `sent=False`: the business request that
        needed the token has not left.
        """
        if self._session is None:
            raise RuntimeError("EnosClient used outside `async with`")
        progress = _Progress()
        where = f"{url.origin()}{url.path}"  # never the query, nor user info in the URL
        try:
            async with self._session.request(
                method,
                url,
                data=data,
                headers=headers,
                trace_request_ctx=progress,
                allow_redirects=False,  # a redirect would carry the token's headers elsewhere
            ) as response:
                body = await _read_bounded(response, where)
                return Answer(response.status, body, response.headers.get("Retry-After"))
        except aiohttp.ClientConnectorCertificateError as exc:
            raise NetworkError(f"TLS verification failed for {where}", sent=False) from exc
        except aiohttp.ClientConnectorError as exc:
            reason = exc.os_error.strerror or type(exc.os_error).__name__
            raise NetworkError(f"cannot connect to {where}: {reason}", sent=False) from exc
        except aiohttp.ConnectionTimeoutError as exc:
            raise RequestTimeout(f"connecting to {where} timed out", sent=False) from exc
        except TimeoutError as exc:  # SocketTimeoutError, or the total timeout (bare)
            sent = business and progress.sent
            raise RequestTimeout(f"no answer from {where} in time", sent=sent) from exc
        except aiohttp.ClientError as exc:  # reset, disconnected, payload, bad HTTP
            sent = business and progress.sent
            raise NetworkError(f"{where}: {_failure_text(exc)}", sent=sent) from exc


# What an aiohttp failure means, by type (first match). Its own text is never shown: it holds
# the request's URL and headers, access token and signature included.
_FAILURES: tuple[tuple[type[aiohttp.ClientError], str], ...] = (
    (aiohttp.ServerDisconnectedError, "the server closed the connection without an answer"),
    (aiohttp.ClientPayloadError, "the answer body was cut short or badly encoded"),
    (aiohttp.ClientResponseError, "the answer is not valid HTTP"),
    (aiohttp.ClientConnectionResetError, "the connection was reset"),
    (aiohttp.ClientOSError, "the connection failed"),
    (aiohttp.ClientError, "the HTTP exchange failed"),
)


def _failure_text(exc: aiohttp.ClientError) -> str:
    text = next(text for kind, text in _FAILURES if isinstance(exc, kind))
    return f"{text} ({type(exc).__name__})"


async def _read_bounded(response: aiohttp.ClientResponse, where: str) -> bytes:
    """The answer body, or MalformedResponse once it passes MAX_ANSWER_BYTES (not read further:
    the connection is closed, so a 100 MB answer costs 1 MiB, not 100 MB, of memory)."""
    declared = response.content_length
    body = bytearray()
    if declared is None or declared <= MAX_ANSWER_BYTES:
        async for chunk in response.content.iter_chunked(_READ_CHUNK):
            body += chunk
            if len(body) > MAX_ANSWER_BYTES:
                break
        else:
            return bytes(body)
    response.close()
    raise MalformedResponse(
        f"answer from {where} is larger than {MAX_ANSWER_BYTES} bytes (HTTP {response.status})",
        http_status=response.status,
    )
