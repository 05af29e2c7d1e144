"""The connect-service certificate API: Renew, Apply, Revoke and List, as documented.

Each action validates in the documented order of prerequisites and answers either `data` or an
`ApiFailure` carrying the documented code and message (reference §1.7, §2.1-2.3). Parameters
are read by `batch.simulator.params`, certificates signed and shaped by
`batch.simulator.issuing`; this module holds the actions and the device's prerequisites.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from cryptography import x509
from cryptography.x509.oid import NameOID

from batch.simulator.ca import Authority, CertificateAuthority, authority_of_key
from batch.simulator.config import SimulatorConfig
from batch.simulator.failures import (
    MSG_BAD_IDENTIFIER,
    MSG_BOUND_ELSEWHERE,
    MSG_CSR_MISSING,
    MSG_DEVICE_NOT_FOUND,
    MSG_EXPIRED,
    MSG_INTERNAL,
    MSG_NO_CERT_AUTH,
    MSG_NOT_IN_LIST,
    MSG_ORG_MISSING,
    MSG_ORG_UNKNOWN,
    MSG_REVOKED,
    MSG_VALIDITY_TOO_LONG,
    ApiFailure,
    invalid,
)
from batch.simulator.fleet import CertEntry, CertStatus, Fleet, SimDevice
from batch.simulator.issuing import Issuer
from batch.simulator.params import Params

# ApiFailure and the messages others compare answers with are re-exported from here.
__all__ = ["MSG_INTERNAL", "MSG_VALIDITY_TOO_LONG", "ApiFailure", "CertificateService"]


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
        self._clock = clock
        self._params = Params(config)
        self._issuer = Issuer(
            fleet, authorities, clock=clock, list_includes_pem=config.list_includes_pem
        )

    # -- the four actions -------------------------------------------------------------------

    def renew(
        self, query: Mapping[str, str], body: Mapping[str, object], base_url: str
    ) -> dict[str, object]:
        """Issue a new certificate for the device and supersede the one named by certSn."""
        query, body = self._params.placed(query, body)
        cert_sn = self._params.cert_sn(query, body)
        days = self._params.valid_days(query, body)
        requested = self._params.authority(query, body)
        device = self._device(query)
        self._check_cert_auth(device)
        if device.flaky_renewals > 0:
            device.flaky_renewals -= 1
            raise ApiFailure(99500, MSG_INTERNAL)
        old = self._valid_owned_cert(device, cert_sn)
        csr_pem = body.get("csr")
        if csr_pem:
            subject, key, authority = self._issuer.from_csr(csr_pem, requested)
        else:  # EnOS re-issues from the previous request data; the CA follows the key type
            key = old.materialised_key()
            subject, authority = old.subject_name(), authority_of_key(key)
        entry = self._issuer.issue(device, subject=subject, key=key, authority=authority, days=days)
        old.status, old.revoke_reason = CertStatus.REVOKED, "SUPERSEDED"
        device.renewals += 1
        if device.fail_after_renewals > 0:  # the renewal stands; only its answer is lost
            device.fail_after_renewals -= 1
            device.lost_answers.append(entry.serial)
            raise ApiFailure(99500, MSG_INTERNAL)
        return self._issuer.issued_answer(entry, base_url)

    def apply(
        self, query: Mapping[str, str], body: Mapping[str, object], base_url: str
    ) -> dict[str, object]:
        """Issue a certificate for the device from a mandatory CSR."""
        csr_pem = body.get("csr")
        days = self._params.valid_days(query, body)
        requested = self._params.authority(query, body)
        device = self._device(query)
        if not csr_pem:
            raise invalid(MSG_CSR_MISSING)
        self._check_cert_auth(device)
        subject, key, authority = self._issuer.from_csr(csr_pem, requested)
        self._check_unique_subject(device, subject)
        entry = self._issuer.issue(device, subject=subject, key=key, authority=authority, days=days)
        return self._issuer.issued_answer(entry, base_url)

    def revoke(self, query: Mapping[str, str], body: Mapping[str, object]) -> None:
        """Revoke one valid certificate bound to the device."""
        cert_sn = self._params.cert_sn(query, body)
        reason = self._params.revoke_reason(query, body)
        device = self._device(query)
        entry = self._valid_owned_cert(device, cert_sn)
        entry.status, entry.revoke_reason = CertStatus.REVOKED, reason

    def list(self, query: Mapping[str, str]) -> list[dict[str, object]]:
        """Every certificate bound to the device, in the documented DeviceCertDetailInfo shape."""
        device = self._device(query)
        now = self._clock()
        return [self._issuer.detail(entry, now) for entry in device.certificates]

    # -- prerequisites ------------------------------------------------------------------------

    def _device(self, query: Mapping[str, str]) -> SimDevice:
        org_id = query.get("orgId")
        if not org_id:
            raise invalid(MSG_ORG_MISSING)
        asset, pk, dk = (query.get(k) or None for k in ("assetId", "productKey", "deviceKey"))
        if not asset and not (pk and dk):
            raise invalid(MSG_BAD_IDENTIFIER)
        if org_id not in self._fleet.orgs:
            raise invalid(MSG_ORG_UNKNOWN)
        device = self._fleet.find(org_id, asset, pk, dk)
        if device is None:
            raise ApiFailure(11404, MSG_DEVICE_NOT_FOUND)
        return device

    @staticmethod
    def _check_cert_auth(device: SimDevice) -> None:
        if not device.cert_auth:
            raise invalid(MSG_NO_CERT_AUTH)

    def _owned_cert(self, device: SimDevice, cert_sn: int) -> CertEntry:
        owner = self._fleet.owners.get(cert_sn)
        if owner is None:
            raise invalid(MSG_NOT_IN_LIST)
        if owner is not device:
            raise ApiFailure(11833, MSG_BOUND_ELSEWHERE)
        return next(entry for entry in device.certificates if entry.serial == cert_sn)

    def _valid_owned_cert(self, device: SimDevice, cert_sn: int) -> CertEntry:
        """The device's own certificate `cert_sn`, refused if it is revoked or expired."""
        entry = self._owned_cert(device, cert_sn)
        status = entry.status_at(self._clock())
        if status is CertStatus.REVOKED:
            raise invalid(MSG_REVOKED)
        if status is CertStatus.EXPIRED:
            raise invalid(MSG_EXPIRED)
        return entry

    def _check_unique_subject(self, device: SimDevice, subject: x509.Name) -> None:
        names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        owner = self._fleet.cn_owner(str(names[0].value)) if names else None
        if owner is not None and owner is not device:
            raise invalid(
                "Duplicate subject by certificate request!message: the common name is used by "
                "another device, detail message: duplicate subject"
            )
