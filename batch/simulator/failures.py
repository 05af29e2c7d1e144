"""The certificate API's documented business errors: their codes and messages (reference §1.7).

An action raises `ApiFailure`; the server answers it as HTTP 200 with that `code` and `msg`.
"""

from __future__ import annotations

MSG_VALIDITY_TOO_LONG = (
    "The specified validity period exceeds the maximum certificate validity period of the "
    "product to which this device belongs."
)
MSG_BAD_IDENTIFIER = "invalid argument: The device identifier is invalid"
MSG_CERT_SN_MISSING = "Invalid Argument certSn:certSn is missing"
MSG_CERT_SN_NEGATIVE = "The serial number of the new certificate is invalid (less than 0)."
MSG_NO_CERT_AUTH = (
    "The product to which the device belongs to is not a product that supports "
    "bi-directional authorization."
)
MSG_REVOKED = "The original certificate has been revoked and cannot be updated."
MSG_EXPIRED = "The original certificate has expired and cannot be updated."
MSG_NOT_IN_LIST = (
    "The certificate list bound to the device does not have the certificate, or the "
    "certificate is bound to other devices."
)
MSG_ORG_MISSING = "Invalid Argument orgId:orgId is missing"
MSG_ORG_UNKNOWN = "Invalid Argument orgId:  orgId does not exist"
MSG_CSR_MISSING = "Invalid Argument csr:csr is missing"
MSG_DEVICE_NOT_FOUND = "Device cannot be found"
MSG_BOUND_ELSEWHERE = "Certificate is already bound to another device."
MSG_INTERNAL = "Internal error of certificate service."


class ApiFailure(Exception):
    """A documented business error: answered as HTTP 200 with `code` != 0."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def invalid(msg: str) -> ApiFailure:
    """The generic "invalid argument" failure (99400) with the documented message."""
    return ApiFailure(99400, msg)


def bad_parameter(name: str, detail: str) -> ApiFailure:
    """99400 for a parameter the certificate service cannot use, in EnOS's wording."""
    return invalid(
        "When calling Certificate Services, the call parameters are invalid."
        f"message: {name} is invalid, detail message: {detail}"
    )
