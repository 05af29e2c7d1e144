"""The one place that speaks HTTP to EnOS: the certificate API (Renew, Apply, Revoke, List).

`EnosClient` is an async context manager owning one aiohttp session (`batch.enos.transport`,
the only module that catches aiohttp's exceptions and words them); every call is signed and
its token kept fresh by `batch.enos.calls.Caller`. This module says which call carries what:
the action, the device, and where Renew's parameters go (`ClientConfig.params_in`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

from batch.enos.answers import parse_cert_records, parse_issued
from batch.enos.calls import Caller
from batch.enos.gateway import ClientConfig
from batch.enos.transport import MAX_ANSWER_BYTES, Transport
from batch.model import CertRecord, DeviceRef, Issued, ParamPlacement

__all__ = ["MAX_ANSWER_BYTES", "ClientConfig", "EnosClient"]


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
        self._transport = Transport(config, connector_limit=connector_limit)
        self._caller = Caller(config, self._transport, clock=clock, rng=rng)
        self.tokens = self._caller.tokens

    def __repr__(self) -> str:
        return f"EnosClient(base_url={self._config.base_url!r})"

    async def __aenter__(self) -> Self:
        await self._transport.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._transport.close()

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
        envelope = await self._caller.call("POST", params, body, device)
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
        envelope = await self._caller.call("POST", _device_params("apply", device), body, device)
        return parse_issued(envelope.data, request_id=envelope.request_id)

    async def revoke_certificate(self, device: DeviceRef, *, cert_sn: int, reason: int = 0) -> None:
        """Revoke `cert_sn` of `device` (reason: an RFC 5280 CRLReason number)."""
        body: dict[str, object] = {"certSn": cert_sn, "reason": reason}
        await self._caller.call("POST", _device_params("revoke", device), body, device)

    async def list_certificates(self, device: DeviceRef) -> list[CertRecord]:
        """Every certificate EnOS holds for `device`, whatever its status."""
        envelope = await self._caller.call("GET", _device_params("list", device), None, device)
        return parse_cert_records(envelope.data)


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
