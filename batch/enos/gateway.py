"""How to reach one EnOS API gateway as one app: `ClientConfig`, validated on construction."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from yarl import URL

from batch.errors import UsageError
from batch.model import ParamPlacement


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
