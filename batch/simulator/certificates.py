"""The connect-service certificate API: Renew, Apply, Revoke and List, as documented.

Each action validates in the documented order of prerequisites and answers either `data` or an
`ApiFailure` carrying the documented code and message (reference §1.7, §2.1-2.3).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from batch.model import ParamPlacement
from batch.simulator.ca import (
    Authority,
    CertificateAuthority,
    CsrError,
    PublicKey,
    authority_of_key,
    check_csr,
    load_csr,
)
from batch.simulator.config import SimulatorConfig
from batch.simulator.fleet import CertEntry, CertStatus, Fleet, SimDevice

RENEW_PARAMS = ("certSn", "validDay", "issueAuthority")  # the ones whose place varies by page
BODY_INTEGERS = ("certSn", "validDay")  # JSON numbers in the body (Integer on the cloud pages)

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

REVOKE_REASONS = {
    0: "UNSPECIFIED",
    1: "KEY COMPROMISE",
    3: "AFFILIATION CHANGED",
    4: "SUPERSEDED",
    5: "CESSATION OF OPERATION",
    6: "CERTIFICATE HOLD",
    9: "PRIVILEGE WITHDRAWN",
}


class ApiFailure(Exception):
    """A documented business error: answered as HTTP 200 with `code` != 0."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def _invalid(msg: str) -> ApiFailure:
    return ApiFailure(99400, msg)


def _bad_parameter(name: str, detail: str) -> ApiFailure:
    return _invalid(
        "When calling Certificate Services, the call parameters are invalid."
        f"message: {name} is invalid, detail message: {detail}"
    )


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _name_text(name: x509.Name) -> str:
    """A subject/issuer as the List sample prints it: most specific RDN first, ", " between."""
    return name.rfc4514_string().replace(",", ", ")


class CertificateService:
    """The certificate actions over one fleet and one CA per issue authority."""

    def __init__(
        self,
        fleet: Fleet,
        authorities: Mapping[Authority, CertificateAuthority],
        config: SimulatorConfig,
        clock: Callable[[], datetime],
    ) -> None:
        self._fleet = fleet
        self._cas = authorities
        self._config = config
        self._clock = clock

    # -- the four actions -------------------------------------------------------------------

    def renew(
        self, query: Mapping[str, str], body: Mapping[str, object], base_url: str
    ) -> dict[str, object]:
        """Issue a new certificate for the device and supersede the one named by certSn."""
        query, body = self._placed(query, body)
        cert_sn = self._cert_sn(query, body)
        days = self._valid_days(query, body)
        requested = self._authority(query, body)
        device = self._device(query)
        self._check_cert_auth(device)
        if device.flaky_renewals > 0:
            device.flaky_renewals -= 1
            raise ApiFailure(99500, MSG_INTERNAL)
        old = self._valid_owned_cert(device, cert_sn)
        csr_pem = body.get("csr")
        if csr_pem:
            subject, key, authority = self._from_csr(csr_pem, requested)
        else:  # EnOS re-issues from the previous request data; the CA follows the key type
            key = old.materialised_key()
            subject, authority = old.subject_name(), authority_of_key(key)
        entry = self._issue(device, subject=subject, key=key, authority=authority, days=days)
        old.status, old.revoke_reason = CertStatus.REVOKED, "SUPERSEDED"
        device.renewals += 1
        if device.fail_after_renewals > 0:  # the renewal stands; only its answer is lost
            device.fail_after_renewals -= 1
            device.lost_answers.append(entry.serial)
            raise ApiFailure(99500, MSG_INTERNAL)
        return self._issued_answer(entry, base_url)

    def apply(
        self, query: Mapping[str, str], body: Mapping[str, object], base_url: str
    ) -> dict[str, object]:
        """Issue a certificate for the device from a mandatory CSR."""
        csr_pem = body.get("csr")
        days = self._valid_days(query, body)
        requested = self._authority(query, body)
        device = self._device(query)
        if not csr_pem:
            raise _invalid(MSG_CSR_MISSING)
        self._check_cert_auth(device)
        subject, key, authority = self._from_csr(csr_pem, requested)
        self._check_unique_subject(device, subject)
        entry = self._issue(device, subject=subject, key=key, authority=authority, days=days)
        return self._issued_answer(entry, base_url)

    def revoke(self, query: Mapping[str, str], body: Mapping[str, object]) -> None:
        """Revoke one valid certificate bound to the device."""
        cert_sn = self._cert_sn(query, body)
        raw_reason = _integer(_merged(query, body, "reason"), "reason")
        reason = 0 if raw_reason is None else raw_reason
        if reason not in REVOKE_REASONS:
            raise _bad_parameter("reason", f"unknown revocation reason {reason}")
        device = self._device(query)
        entry = self._valid_owned_cert(device, cert_sn)
        entry.status, entry.revoke_reason = CertStatus.REVOKED, REVOKE_REASONS[reason]

    def list(self, query: Mapping[str, str]) -> list[dict[str, object]]:
        """Every certificate bound to the device, in the documented DeviceCertDetailInfo shape."""
        device = self._device(query)
        now = self._clock()
        return [self._detail(entry, now) for entry in device.certificates]

    # -- parameters ---------------------------------------------------------------------------

    def _placed(
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

    def _cert_sn(self, query: Mapping[str, str], body: Mapping[str, object]) -> int:
        cert_sn = _integer(_merged(query, body, "certSn"), "certSn")
        if cert_sn is None:
            raise _invalid(MSG_CERT_SN_MISSING)
        if cert_sn < 0:
            raise _invalid(MSG_CERT_SN_NEGATIVE)
        return cert_sn

    def _valid_days(self, query: Mapping[str, str], body: Mapping[str, object]) -> int:
        """The days to issue for, by the seed page's rules (reference §1.4).

        No validDay: the deployment's default applies, and a default above the product's
        maximum fails exactly like a requested value would (the Edge page: "the specified or
        default (730) value"); nothing is capped silently. The CA's remaining life clamps the
        accepted value later, in `_issue`.
        """
        days = _integer(_merged(query, body, "validDay"), "validDay")
        if days is None:
            days = self._config.default_valid_days
        elif days <= 0:
            raise _bad_parameter("validDay", "validDay must be positive")
        if days > self._config.product_max_days:
            raise _invalid(self._too_long_message())
        return days

    def _too_long_message(self) -> str:
        if not self._config.validity_error_states_max:
            return MSG_VALIDITY_TOO_LONG
        return f"{MSG_VALIDITY_TOO_LONG} (maximum: {self._config.product_max_days} days)"

    def _authority(self, query: Mapping[str, str], body: Mapping[str, object]) -> Authority:
        raw = _merged(query, body, "issueAuthority")
        if raw is None or raw == "":
            return Authority.RSA
        text = str(raw).upper()
        if text not in Authority.__members__:
            raise _invalid(
                f"Invalid Argument issueAuthority:issueAuthority {raw} is not RSA or ECC"
            )
        return Authority(text)

    # -- prerequisites ------------------------------------------------------------------------

    def _device(self, query: Mapping[str, str]) -> SimDevice:
        org_id = query.get("orgId")
        if not org_id:
            raise _invalid(MSG_ORG_MISSING)
        asset, pk, dk = (query.get(k) or None for k in ("assetId", "productKey", "deviceKey"))
        if not asset and not (pk and dk):
            raise _invalid(MSG_BAD_IDENTIFIER)
        if org_id not in self._fleet.orgs:
            raise _invalid(MSG_ORG_UNKNOWN)
        device = self._fleet.find(org_id, asset, pk, dk)
        if device is None:
            raise ApiFailure(11404, MSG_DEVICE_NOT_FOUND)
        return device

    @staticmethod
    def _check_cert_auth(device: SimDevice) -> None:
        if not device.cert_auth:
            raise _invalid(MSG_NO_CERT_AUTH)

    def _owned_cert(self, device: SimDevice, cert_sn: int) -> CertEntry:
        owner = self._fleet.owners.get(cert_sn)
        if owner is None:
            raise _invalid(MSG_NOT_IN_LIST)
        if owner is not device:
            raise ApiFailure(11833, MSG_BOUND_ELSEWHERE)
        return next(entry for entry in device.certificates if entry.serial == cert_sn)

    def _valid_owned_cert(self, device: SimDevice, cert_sn: int) -> CertEntry:
        """The device's own certificate `cert_sn`, refused if it is revoked or expired."""
        entry = self._owned_cert(device, cert_sn)
        status = entry.status_at(self._clock())
        if status is CertStatus.REVOKED:
            raise _invalid(MSG_REVOKED)
        if status is CertStatus.EXPIRED:
            raise _invalid(MSG_EXPIRED)
        return entry

    def _check_unique_subject(self, device: SimDevice, subject: x509.Name) -> None:
        names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        owner = self._fleet.cn_owner(str(names[0].value)) if names else None
        if owner is not None and owner is not device:
            raise _invalid(
                "Duplicate subject by certificate request!message: the common name is used by "
                "another device, detail message: duplicate subject"
            )

    # -- issuing ------------------------------------------------------------------------------

    @staticmethod
    def _from_csr(csr_pem: object, authority: Authority) -> tuple[x509.Name, PublicKey, Authority]:
        try:
            if not isinstance(csr_pem, str):
                raise CsrError("csr must be a PEM string", type(csr_pem).__name__)
            csr = load_csr(csr_pem)
            key = check_csr(csr, authority)
        except CsrError as exc:
            raise _invalid(str(exc)) from exc
        return csr.subject, key, authority

    def _issue(
        self,
        device: SimDevice,
        *,
        subject: x509.Name,
        key: PublicKey,
        authority: Authority,
        days: int,
    ) -> CertEntry:
        ca = self._cas[authority]
        now = self._clock().replace(microsecond=0)  # X.509 times have whole seconds
        not_after = min(now + timedelta(days=days), ca.not_after)
        serial = self._fleet.new_serial()
        cert = ca.issue(
            subject=subject,
            public_key=key,
            serial=serial,
            not_before=now,
            not_after=not_after,
        )
        names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        entry = CertEntry(
            serial=serial,
            common_name=str(names[0].value) if names else "",
            not_before=now,
            not_after=not_after,
            authority=authority,
            subject=subject,
            public_key=key,
            pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
        )
        self._fleet.bind(device, entry)
        return entry

    def _issued_answer(self, entry: CertEntry, base_url: str) -> dict[str, object]:
        ca = self._cas[entry.authority]
        return {
            "certChainURL": f"{base_url}/enos/CA/cacert/{entry.authority}",
            "cert": entry.pem,
            "certSN": str(entry.serial),
            "caCert": ca.pem,
            "issueAuthority": str(entry.authority),
        }

    def _detail(self, entry: CertEntry, now: datetime) -> dict[str, object]:
        ca = self._cas[entry.authority]
        status = entry.status_at(now)
        detail: dict[str, object] = {
            "certSN": str(entry.serial),
            "cert": self._pem_of(entry) if self._config.list_includes_pem else str(entry.serial),
            "certStatus": int(status),
            "issuer": ca.issuer_text,
            "subject": _name_text(entry.subject_name()),
            "signDate": _ms(entry.not_before),
            "effectiveDate": _ms(entry.not_before),
            "expireDate": _ms(entry.not_after),
            "issueAuthority": str(entry.authority),
            "isEnosCert": True,
        }
        if status is CertStatus.REVOKED:
            detail["revoker"] = "IoT_Hub"
            detail["revokerReason"] = entry.revoke_reason or "UNSPECIFIED"
        return detail

    def _pem_of(self, entry: CertEntry) -> str:
        """The entry's PEM, signing a real certificate for a seeded record on first need."""
        if entry.pem is None:
            cert = self._cas[entry.authority].issue(
                subject=entry.subject_name(),
                public_key=entry.materialised_key(),
                serial=entry.serial,
                not_before=entry.not_before.replace(microsecond=0),
                not_after=entry.not_after.replace(microsecond=0),
            )
            entry.pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        return entry.pem


def _merged(query: Mapping[str, str], body: Mapping[str, object], name: str) -> object:
    """A parameter accepted in the query or the JSON body; the body wins when both have it.

    In the body, the cloud pages type certSn and validDay Integer: a JSON string there is
    refused, so a client that sent "52770" would fail here before it fails on EnOS (a guess
    whether EnOS coerces it; the strict reading is the safe one to test against).
    """
    if name in body and body[name] is not None:
        value = body[name]
        if name in BODY_INTEGERS and isinstance(value, str):
            raise _bad_parameter(name, f"{name} must be an integer")
        return value
    return query.get(name)


def _integer(raw: object, name: str) -> int | None:
    """An integer parameter sent as a JSON number or a decimal string; None when absent."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise _bad_parameter(name, f"{name} must be an integer")
    try:
        return int(raw)
    except ValueError as exc:
        raise _bad_parameter(name, f"{name} must be an integer") from exc
