"""The EnOS side of the wire: signing, token service, the certificate API client, its errors."""

from batch.enos.auth import Token, TokenManager
from batch.enos.client import ClientConfig, EnosClient
from batch.enos.errors import (
    POLICY,
    ApiError,
    AuthError,
    EnosError,
    GatewayError,
    MalformedResponse,
    NetworkError,
    RequestTimeout,
    Rule,
    ThrottledError,
    TokenRejected,
    TokenServiceError,
    TransportError,
    classify,
)
from batch.enos.signing import sign, token_encryption

__all__ = [
    "POLICY",
    "ApiError",
    "AuthError",
    "ClientConfig",
    "EnosClient",
    "EnosError",
    "GatewayError",
    "MalformedResponse",
    "NetworkError",
    "RequestTimeout",
    "Rule",
    "ThrottledError",
    "Token",
    "TokenManager",
    "TokenRejected",
    "TokenServiceError",
    "TransportError",
    "classify",
    "sign",
    "token_encryption",
]
