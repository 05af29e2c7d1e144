"""The EnOS side of the wire: signing, token service, the certificate API client."""

from batch.enos.signing import sign, token_encryption

__all__ = ["sign", "token_encryption"]
