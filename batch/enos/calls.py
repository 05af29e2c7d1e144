"""Signed business calls and token-service requests, over one `Transport`.

Every business call is signed (`batch.enos.signing.sign`) over the exact bytes sent; a call
refused for its access token gets one fresh token (a refresh
when it says the token expired, 1203; else a get) and one retry. Errors built from an answer are
redacted of what the call sent: a hostile or broken gateway may echo it back.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Mapping

from yarl import URL

from batch.enos import answers
from batch.enos.answers import Envelope
from batch.enos.auth import TokenManager
from batch.enos.errors import (
    MAX_REQUEST_ID,
    WHOLE_WORD_BELOW,
    EnosError,
    MalformedResponse,
    TokenRejected,
    redact,
)
from batch.enos.gateway import ClientConfig
from batch.enos.signing import sign
from batch.enos.transport import Answer, Transport
from batch.model import DeviceRef, device_identity

logger = logging.getLogger(__name__)

CERT_PATH = "/connect-service/v2.0/certificates"
JSON_TYPE = "application/json;charset=UTF-8"
_TOKEN_SECRETS = ("encryption", "accessToken")  # token-service request fields never repeated


class Caller:
    """Signed calls to the certificate API, with the app's access token kept by `tokens`."""

    def __init__(
        self,
        config: ClientConfig,
        transport: Transport,
        *,
        clock: Callable[[], float],
        rng: random.Random | None = None,  # jitter of the token refresh
    ) -> None:
        self._config = config
        self._transport = transport
        self._clock = clock
        self.tokens = TokenManager(
            self._post_token,
            app_key=config.app_key,
            app_secret=config.app_secret,
            clock=clock,
            rng=rng,
        )

    async def call(
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
            if refusal is not None:
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
        refused: Answer,
        secrets: set[str],
    ) -> Answer:
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
    ) -> Answer:
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
        return await self._transport.exchange(method, url, data, headers, business=True)

    def _retry_after(self, answer: Answer) -> float | None:
        return answers.parse_retry_after(answer.retry_after, now=self._clock())

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
            answer = await self._transport.exchange(
                "POST", url, _encode(payload), headers, business=False
            )
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


def _encode(payload: Mapping[str, object]) -> bytes:
    # Serialised once: these exact bytes are both signed and sent.
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
