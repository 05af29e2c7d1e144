"""The EnOS side of the wire: signing, token service, the certificate API client."""

from batch.enos.auth import Token, TokenManager
from batch.enos.client import ClientConfig, EnosClient
from batch.enos.signing import sign, token_encryption

__all__ = ["ClientConfig", "EnosClient", "Token", "TokenManager", "sign", "token_encryption"]
