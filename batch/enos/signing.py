"""The EnOS request-signing rules (token service and business calls). Pure functions."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping


def sign(
    access_token: str,
    params: Mapping[str, object],
    body: bytes,
    timestamp_ms: int,
    app_secret: str,
) -> str:
    """The `apim-signature` of a business call.

    lowercase hex SHA-256 of: token + query parameters sorted by name, each as name+value with no
    separator + the raw body bytes + timestamp (ms) + app secret. Values are signed raw, as
    EnOS's own clients do, not URL-encoded.
    """
    params_data = "".join(f"{name}{params[name]}" for name in sorted(params))
    digest = hashlib.sha256()
    digest.update(f"{access_token}{params_data}".encode())
    digest.update(body)
    digest.update(f"{timestamp_ms}{app_secret}".encode())
    return digest.hexdigest()


def token_encryption(app_key: str, timestamp_ms: int, app_secret: str) -> str:
    """The `encryption` field of token get/refresh: SHA-256 of appKey + timestamp + appSecret."""
    return hashlib.sha256(f"{app_key}{timestamp_ms}{app_secret}".encode()).hexdigest()
