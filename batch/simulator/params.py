"""Reading the certificate API's parameters as a strict gateway does (reference §1.4, §2.1).

Each parameter comes from the query or the JSON body; where Renew's varying parameters are
accepted depends on the simulator's `param_placement`. A value EnOS would refuse raises the
documented `ApiFailure`.
"""

from __future__ import annotations

from collections.abc import Mapping

from batch.model import ParamPlacement
from batch.simulator.ca import Authority
from batch.simulator.config import SimulatorConfig
from batch.simulator.failures import (
    MSG_CERT_SN_MISSING,
    MSG_CERT_SN_NEGATIVE,
    MSG_VALIDITY_TOO_LONG,
    bad_parameter,
    invalid,
)

RENEW_PARAMS = ("certSn", "validDay", "issueAuthority")  # the ones whose place varies by page
BODY_INTEGERS = ("certSn", "validDay")  # JSON numbers in the body (Integer on the cloud pages)

REVOKE_REASONS = {
    0: "UNSPECIFIED",
    1: "KEY COMPROMISE",
    3: "AFFILIATION CHANGED",
    4: "SUPERSEDED",
    5: "CESSATION OF OPERATION",
    6: "CERTIFICATE HOLD",
    9: "PRIVILEGE WITHDRAWN",
}


class Params:
    """The parameter rules of one simulator configuration."""

    def __init__(self, config: SimulatorConfig) -> None:
        self._config = config

    def placed(
        self, query: Mapping[str, str], body: Mapping[str, object]
    ) -> tuple[Mapping[str, str], Mapping[str, object]]:
        """Renew's query and body as a strict gateway sees them: RENEW_PARAMS only in their place.

        A cloud gateway (body) never looks at a query certSn; an Edge gateway (query) never
        looks at a body certSn. Reading issueAuthority from the query in query mode is a guess:
        the Edge page does not list it.
        """
        placement = self._config.param_placement
        if placement is ParamPlacement.BODY:
            return {k: v for k, v in query.items() if k not in RENEW_PARAMS}, body
        if placement is ParamPlacement.QUERY:
            return query, {k: v for k, v in body.items() if k not in RENEW_PARAMS}
        return query, body

    @staticmethod
    def cert_sn(query: Mapping[str, str], body: Mapping[str, object]) -> int:
        cert_sn = integer(merged(query, body, "certSn"), "certSn")
        if cert_sn is None:
            raise invalid(MSG_CERT_SN_MISSING)
        if cert_sn < 0:
            raise invalid(MSG_CERT_SN_NEGATIVE)
        return cert_sn

    def valid_days(self, query: Mapping[str, str], body: Mapping[str, object]) -> int:
        """The days to issue for, by the seed page's rules (reference §1.4).

        No validDay: the deployment's default applies, and a default above the product's
        maximum fails exactly like a requested value would (the Edge page: "the specified or
        default (730) value"); nothing is capped silently. The CA's remaining life clamps the
        accepted value later, when the certificate is issued.
        """
        days = integer(merged(query, body, "validDay"), "validDay")
        if days is None:
            days = self._config.default_valid_days
        elif days <= 0:
            raise bad_parameter("validDay", "validDay must be positive")
        if days > self._config.product_max_days:
            raise invalid(self._too_long_message())
        return days

    def _too_long_message(self) -> str:
        if not self._config.validity_error_states_max:
            return MSG_VALIDITY_TOO_LONG
        return f"{MSG_VALIDITY_TOO_LONG} (maximum: {self._config.product_max_days} days)"

    @staticmethod
    def authority(query: Mapping[str, str], body: Mapping[str, object]) -> Authority:
        raw = merged(query, body, "issueAuthority")
        if raw is None or raw == "":
            return Authority.RSA
        text = str(raw).upper()
        if text not in Authority.__members__:
            raise invalid(f"Invalid Argument issueAuthority:issueAuthority {raw} is not RSA or ECC")
        return Authority(text)

    @staticmethod
    def revoke_reason(query: Mapping[str, str], body: Mapping[str, object]) -> str:
        """The documented name of Revoke's `reason` code (0, UNSPECIFIED, when absent)."""
        raw_reason = integer(merged(query, body, "reason"), "reason")
        reason = 0 if raw_reason is None else raw_reason
        if reason not in REVOKE_REASONS:
            raise bad_parameter("reason", f"unknown revocation reason {reason}")
        return REVOKE_REASONS[reason]


def merged(query: Mapping[str, str], body: Mapping[str, object], name: str) -> object:
    """A parameter accepted in the query or the JSON body; the body wins when both have it.

    In the body, the cloud pages type certSn and validDay Integer: a JSON string there is
    refused, so a client that sent "52770" would fail here before it fails on EnOS (a guess
    whether EnOS coerces it; the strict reading is the safe one to test against).
    """
    if name in body and body[name] is not None:
        value = body[name]
        if name in BODY_INTEGERS and isinstance(value, str):
            raise bad_parameter(name, f"{name} must be an integer")
        return value
    return query.get(name)


def integer(raw: object, name: str) -> int | None:
    """An integer parameter sent as a JSON number or a decimal string; None when absent."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise bad_parameter(name, f"{name} must be an integer")
    try:
        return int(raw)
    except ValueError as exc:
        raise bad_parameter(name, f"{name} must be an integer") from exc
