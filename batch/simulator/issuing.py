"""Issuing certificates for the certificate API, and the shapes in which it answers them.

The CA behind each issue authority signs real certificates; a certificate's validity is what
was accepted, clamped by the CA's own remaining life (reference §1.4). Answers follow the
documented Renew/Apply `data` and List's DeviceCertDetailInfo (reference §2.1-2.3).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from batch.simulator.ca import (
    Authority,
    CertificateAuthority,
    CsrError,
    PublicKey,
    check_csr,
    load_csr,
)
from batch.simulator.failures import invalid
from batch.simulator.fleet import CertEntry, CertStatus, Fleet, SimDevice


class Issuer:
    """Signs certificates with the CA of each issue authority and binds them to the fleet."""

    def __init__(
        self,
        fleet: Fleet,
        cas: Mapping[Authority, CertificateAuthority],
        *,
        clock: Callable[[], datetime],
        list_includes_pem: bool,
    ) -> None:
        self._fleet, self._cas, self._clock = fleet, cas, clock
        self._list_includes_pem = list_includes_pem  # List with PEMs (the documented: serials)

    @staticmethod
    def from_csr(csr_pem: object, authority: Authority) -> tuple[x509.Name, PublicKey, Authority]:
        """The subject and key of a CSR EnOS would accept for `authority`, else ApiFailure."""
        try:
            if not isinstance(csr_pem, str):
                raise CsrError("csr must be a PEM string", type(csr_pem).__name__)
            csr = load_csr(csr_pem)
            key = check_csr(csr, authority)
        except CsrError as exc:
            raise invalid(str(exc)) from exc
        return csr.subject, key, authority

    def issue(
        self,
        device: SimDevice,
        *,
        subject: x509.Name,
        key: PublicKey,
        authority: Authority,
        days: int,
    ) -> CertEntry:
        """Sign a certificate for `days` (or the CA's remaining life) and bind it to `device`."""
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

    def issued_answer(self, entry: CertEntry, base_url: str) -> dict[str, object]:
        """Renew's and Apply's `data` for a certificate just issued."""
        ca = self._cas[entry.authority]
        return {
            "certChainURL": f"{base_url}/enos/CA/cacert/{entry.authority}",
            "cert": entry.pem,
            "certSN": str(entry.serial),
            "caCert": ca.pem,
            "issueAuthority": str(entry.authority),
        }

    def detail(self, entry: CertEntry, now: datetime) -> dict[str, object]:
        """One List record (DeviceCertDetailInfo) for `entry` as of `now`."""
        ca = self._cas[entry.authority]
        status = entry.status_at(now)
        detail: dict[str, object] = {
            "certSN": str(entry.serial),
            "cert": self._pem_of(entry) if self._list_includes_pem else str(entry.serial),
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


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _name_text(name: x509.Name) -> str:
    """A subject/issuer as the List sample prints it: most specific RDN first, ", " between."""
    return name.rfc4514_string().replace(",", ", ")
