"""The one place that speaks HTTP to EnOS: signed certificate API calls over aiohttp.

`EnosClient` is an async context manager owning one `aiohttp.ClientSession`. Every business call
is signed (`batch.enos.signing.sign`) over the exact bytes sent; an HTTP 401 is answered by one
fresh token (a refresh when it says the token expired, 1203; else a get) and one retry. Every
aiohttp exception, and the bare `TimeoutError` aiohttp raises when the total timeout runs out,
is translated here and only here into the `batch.enos.errors` tree, chained with `from exc`,
with a text of our own: a library's text holds the URL and the request headers (access token,
signature). Errors built from an answer are redacted of what the call sent; an answer is read up
to `MAX_ANSWER_BYTES` only.

`TransportError.sent` is decided by whether the request headers had started going out (an
aiohttp trace signal), so a timeout while waiting for a pooled connection or connecting is
`sent=False`, while a reset or timeout after that is `sent=True` (the renewal may have happened).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import random
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace, TracebackType
from typing import Self

import aiohttp
from yarl import URL

from batch.enos import answers
from batch.enos.answers import Envelope, parse_cert_records, parse_issued
from batch.enos.auth import TokenManager
from batch.enos.errors import (
    MAX_REQUEST_ID,
    WHOLE_WORD_BELOW,
    EnosError,
    MalformedResponse,
    NetworkError,
    RequestTimeout,
    TokenRejected,
    redact,
    wants_fresh_token,
)
from batch.enos.signing import sign
from batch.errors import UsageError
from batch.model import CertRecord, DeviceRef, Issued, ParamPlacement, device_identity

logger = logging.getLogger(__name__)

CERT_PATH = "/connect-service/v2.0/certificates"
JSON_TYPE = "application/json;charset=UTF-8"
# The largest answer read. A Renew answer is two PEM certificates (~3 KiB); a List answer holds
# a few records per device. 1 MiB is far above any real answer and bounds the memory a broken
# or hostile gateway can make us spend (workers x 1 MiB).
MAX_ANSWER_BYTES = 1 << 20
_READ_CHUNK = 1 << 16
_TOKEN_SECRETS = ("encryption", "accessToken")  # token-service request fields never repeated


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    """How to reach one EnOS API gateway as one app. Validated on construction."""

    base_url: str
    app_key: str
    app_secret: str = field(repr=False)  # never in reprs or logs
    params_in: ParamPlacement = ParamPlacement.BOTH  # where Renew's certSn/validDay/... go
    timeout_s: float = 30.0
    connect_timeout_s: float = 10.0
    ca_bundle: str | None = None  # extra CA file for private gateways; verification stays on

    def __post_init__(self) -> None:
        url = URL(self.base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise UsageError(f"EnOS base URL must be http(s)://host[:port]: {self.base_url!r}")
        if url.user is not None or url.password is not None:
            # A password in a URL ends up in argv, shell history and logs: secrets come from
            # the environment only.
            raise UsageError("EnOS base URL must not carry a user or password")
        if url.query_string or url.fragment:
            raise UsageError(f"EnOS base URL must not carry a query or fragment: {url}")
        object.__setattr__(self, "base_url", str(url).rstrip("/"))
        if not self.app_key or not self.app_secret:
            raise UsageError("EnOS app key and app secret must not be empty")
        if self.params_in not in tuple(ParamPlacement):
            raise UsageError(f"params_in must be query, body or both, not {self.params_in!r}")
        object.__setattr__(self, "params_in", ParamPlacement(self.params_in))
        if not self.timeout_s > 0 or not self.connect_timeout_s > 0:
            raise UsageError("EnOS timeouts must be positive")
        if self.ca_bundle is not None and not os.path.isfile(self.ca_bundle):
            raise UsageError(f"CA bundle not found: {self.ca_bundle}")

    @property
    def is_plain_http_remote(self) -> bool:
        """True when tokens would cross a network in clear text (http:// to a non-loopback host)."""
        url = URL(self.base_url)
        return url.scheme == "http" and not _is_loopback(url.host or "")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class _Answer:
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


class EnosClient:
    """Signed calls to the EnOS certificate API (Renew, Apply, Revoke, List)."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        clock: Callable[[], float] = time.time,
        connector_limit: int = 100,
        rng: random.Random | None = None,  # jitter of the token refresh
    ) -> None:
        self._config = config
        self._clock = clock
        self._connector_limit = connector_limit
        self._session: aiohttp.ClientSession | None = None
        self.tokens = TokenManager(
            self._post_token,
            app_key=config.app_key,
            app_secret=config.app_secret,
            clock=clock,
            rng=rng,
        )

    def __repr__(self) -> str:
        return f"EnosClient(base_url={self._config.base_url!r})"

    async def __aenter__(self) -> Self:
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
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _ssl_context(self) -> ssl.SSLContext:
        # The system trust store plus the private gateway's CA: verification is never turned off.
        context = ssl.create_default_context()
        if self._config.ca_bundle is not None:
            context.load_verify_locations(cafile=self._config.ca_bundle)
        return context

    # -- the certificate API ------------------------------------------------------------------

    async def renew_certificate(
        self,
        device: DeviceRef,
        *,
        cert_sn: int,
        csr: str | None = None,
        valid_day: int | None = None,
        issue_authority: str | None = None,
    ) -> Issued:
        """Renew `cert_sn` of `device`; without a CSR EnOS re-issues from the old request data.

        certSn/validDay/issueAuthority go where `params_in` says: the cloud pages read them from
        the JSON body, the Edge page from the query; `both` (the default) suits either gateway.
        Whatever the place, the signature covers the query and the body bytes exactly as sent.
        """
        options = _present(certSn=cert_sn, validDay=valid_day, issueAuthority=issue_authority)
        params = _device_params("renew", device)
        body: dict[str, object] = {} if csr is None else {"csr": csr}
        if self._config.params_in is not ParamPlacement.BODY:
            params.update({name: str(value) for name, value in options.items()})
        if self._config.params_in is not ParamPlacement.QUERY:
            body.update(options)
        envelope = await self._call("POST", params, body, device)
        return parse_issued(envelope.data, request_id=envelope.request_id)

    async def apply_certificate(
        self,
        device: DeviceRef,
        *,
        csr: str,
        valid_day: int | None = None,
        issue_authority: str | None = None,
    ) -> Issued:
        """Apply for a new certificate for `device` from `csr`."""
        body = {"csr": csr, **_present(validDay=valid_day, issueAuthority=issue_authority)}
        envelope = await self._call("POST", _device_params("apply", device), body, device)
        return parse_issued(envelope.data, request_id=envelope.request_id)

    async def revoke_certificate(self, device: DeviceRef, *, cert_sn: int, reason: int = 0) -> None:
        """Revoke `cert_sn` of `device` (reason: an RFC 5280 CRLReason number)."""
        body: dict[str, object] = {"certSn": cert_sn, "reason": reason}
        await self._call("POST", _device_params("revoke", device), body, device)

    async def list_certificates(self, device: DeviceRef) -> list[CertRecord]:
        """Every certificate EnOS holds for `device`, whatever its status."""
        envelope = await self._call("GET", _device_params("list", device), None, device)
        return parse_cert_records(envelope.data)

    # -- signed business calls ----------------------------------------------------------------

    async def _call(
        self,
        method: str,
        params: Mapping[str, str],
        payload: Mapping[str, object] | None,
        device: DeviceRef,
    ) -> Envelope:
        """One signed call; a refused token gets one fresh token and one retry.

        Expired (1203): refreshed. Any other HTTP 401: another process on this app key may have
        replaced the token, so a new one is got. Refused again with that fresh token: raised as
        TokenRejected (the gateway refused the call: it had no effect).

        Every error leaves redacted of the secrets this call sent (token, signature, the app
        secret, the query naming the device): a hostile or broken gateway may echo them back.
        """
        body = b"" if payload is None else _encode(payload)
        secrets: set[str] = {self._config.app_secret}
        started = self._clock()
        try:
            token = await self.tokens.token()
            answer = await self._signed(method, params, body, token, secrets)
            refusal = answers.token_refusal(answer.status, answer.body)
            if refusal is not None and wants_fresh_token(refusal):
                answer = await self._with_fresh_token(method, params, body, token, answer, secrets)
            logger.debug(
                "%s %s: HTTP %s in %.0f ms",
                params["action"],
                device_identity(device),
                answer.status,
                (self._clock() - started) * 1000,
            )
            envelope = answers.parse_envelope(
                answer.status, answer.body, retry_after=self._retry_after(answer)
            )
            _refuse_echoed_secrets(answer.body, secrets)
        except EnosError as exc:
            exc.redact(secrets)
            raise
        if envelope.request_id is None:
            return envelope
        return Envelope(envelope.data, redact(envelope.request_id, secrets, limit=MAX_REQUEST_ID))

    async def _with_fresh_token(
        self,
        method: str,
        params: Mapping[str, str],
        body: bytes,
        token: str,
        refused: _Answer,
        secrets: set[str],
    ) -> _Answer:
        """The one retry of a call whose token the gateway refused, with a fresh token."""
        expired = answers.says_token_expired(refused.status, refused.body)
        logger.info("access token refused (HTTP %s); fresh token, one retry", refused.status)
        token = await (self.tokens.expired if expired else self.tokens.rejected)(token)
        answer = await self._signed(method, params, body, token, secrets)
        if answers.token_refusal(answer.status, answer.body) is not None:
            error = answers.status_error(401, answer.body)
            raise TokenRejected(
                f"{error.message} (again with a fresh token)",
                code=error.code,
                http_status=answer.status,
            )
        return answer

    async def _signed(
        self, method: str, params: Mapping[str, str], body: bytes, token: str, secrets: set[str]
    ) -> _Answer:
        timestamp_ms = int(self._clock() * 1000)
        signature = sign(token, params, body, timestamp_ms, self._config.app_secret)
        url = URL(f"{self._config.base_url}{CERT_PATH}").with_query(params)
        secrets.update((token, signature, url.raw_query_string, url.query_string))
        headers = {
            "apim-accesstoken": token,
            "apim-timestamp": str(timestamp_ms),
            "apim-signature": signature,
        }
        if method != "GET":
            headers["Content-Type"] = JSON_TYPE
        data = body if method != "GET" else None
        return await self._exchange(method, url, data, headers, business=True)

    def _retry_after(self, answer: _Answer) -> float | None:
        return answers.parse_retry_after(answer.retry_after, now=self._clock())

    # -- token service ------------------------------------------------------------------------

    async def _post_token(self, path: str, payload: Mapping[str, object]) -> object:
        """POST to the token service and return its decoded JSON answer (TokenManager judges it).

        The answer's `msg` becomes an error text in TokenManager: it leaves here redacted of
        what this request sent (the encryption, an old token, the app secret).
        """
        secrets = {self._config.app_secret}
        secrets.update(str(payload[name]) for name in _TOKEN_SECRETS if name in payload)
        headers = {"Content-Type": JSON_TYPE}
        url = URL(f"{self._config.base_url}{path}")
        try:
            answer = await self._exchange("POST", url, _encode(payload), headers, business=False)
            if answer.status == 200:
                return _redact_msg(answers.decode_json(answer.status, answer.body), secrets)
            detail = answers.json_object(answer.body)
            if answer.status not in (401, 429) and ("status" in detail or "stauts" in detail):
                return _redact_msg(detail, secrets)  # a token-service verdict on an error status
            raise answers.status_error(
                answer.status, answer.body, retry_after=self._retry_after(answer)
            )
        except EnosError as exc:
            exc.redact(secrets)
            raise

    # -- the aiohttp boundary -----------------------------------------------------------------

    async def _exchange(
        self,
        method: str,
        url: URL,
        data: bytes | None,
        headers: Mapping[str, str],
        *,
        business: bool,
    ) -> _Answer:
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
                return _Answer(response.status, body, response.headers.get("Retry-After"))
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


def _refuse_echoed_secrets(body: bytes, secrets: set[str]) -> None:
    """A success answer that repeats this call's token or signature is a broken or hostile
    gateway's: its data (a certificate, a serial) would carry the secret into the journal,
    the bundle and the report, so none of it is kept."""
    for secret in secrets:
        if len(secret) >= WHOLE_WORD_BELOW and secret.encode() in body:
            raise MalformedResponse("the answer repeats this call's credentials; none of it kept")


def _redact_msg(answer: object, secrets: set[str]) -> object:
    """A token-service answer whose `msg` (the only text TokenManager repeats) is redacted."""
    if isinstance(answer, dict) and isinstance(answer.get("msg"), str):
        return {**answer, "msg": redact(answer["msg"], secrets)}
    return answer


def _device_params(action: str, device: DeviceRef) -> dict[str, str]:
    """Query parameters naming the action and the device (assetId, else productKey+deviceKey).

    Identifiers are passed as given, so a device without one gets EnOS's own 99400 answer.
    """
    params = {"action": action, "orgId": device.org_id}
    if device.asset_id:
        params["assetId"] = device.asset_id
        return params
    if device.product_key is not None:
        params["productKey"] = device.product_key
    if device.device_key is not None:
        params["deviceKey"] = device.device_key
    return params


def _present(**values: object) -> dict[str, object]:
    return {name: value for name, value in values.items() if value is not None}


def _encode(payload: Mapping[str, object]) -> bytes:
    # Serialised once: these exact bytes are both signed and sent.
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
