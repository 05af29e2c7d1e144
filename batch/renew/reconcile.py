"""Resolve an ambiguous renewal: did the request whose answer never came take effect?

The renew call is not idempotent, so after a timeout, a reset or a crash the job must not simply
send it again. List Certificate tells: a *valid* certificate other than the one we renewed, signed
after our first intent (less a clock-skew allowance), whose public key is the one we sent (when
List gives the PEM and we sent a key), is our renewal. Then:
- List gave the PEM and we know the issuing CA (from any earlier answer, or one that arrives
  within CA_WAIT_SECONDS while other devices renew): recovered as is;
- otherwise the caller renews that new certificate once more with the same key to obtain it.
No such certificate: the renewal did not happen and may be retried.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509

from batch.enos.client import EnosClient
from batch.model import CertRecord, Device, Issued, Resolution
from batch.renew.keys import KeyMaterial, public_key_sha256

CLOCK_SKEW = timedelta(minutes=5)  # our clock against EnOS's signDate
CA_WAIT_SECONDS = 30.0  # how long a recovered certificate waits for its CA to be seen


@dataclass(frozen=True, slots=True, kw_only=True)
class Found:
    """A certificate that is this device's renewal; `issued` is None when its PEM is unknown."""

    cert_sn: str
    resolution: Resolution
    issued: Issued | None = None
    signed_at: datetime | None = None


@dataclass(slots=True)
class CaCache:
    """Issuing CA certificates seen in this campaign, by subject: List does not return the CA."""

    by_subject: dict[str, str] = field(default_factory=dict)
    _seen: set[str] = field(default_factory=set)
    _learned: asyncio.Event = field(default_factory=asyncio.Event)

    def remember(self, ca_pem: str) -> None:
        if ca_pem in self._seen:  # every answer carries the CA: parse each one once
            return
        self._seen.add(ca_pem)
        try:
            ca = x509.load_pem_x509_certificate(ca_pem.encode())
        except ValueError:
            return
        self.by_subject.setdefault(ca.subject.rfc4514_string(), ca_pem)
        self._learned.set()  # wake whoever waits for a CA
        self._learned = asyncio.Event()

    def issuer_of(self, cert: x509.Certificate) -> str | None:
        return self.by_subject.get(cert.issuer.rfc4514_string())

    async def wait_for_issuer_of(self, cert: x509.Certificate, timeout: float) -> str | None:
        """The issuer's PEM, waiting up to `timeout` s for another device's answer to show it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (found := self.issuer_of(cert)) is None and loop.time() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._learned.wait(), deadline - loop.time())
        return found


async def reconcile(
    client: EnosClient,
    device: Device,
    material: KeyMaterial | None,
    intent_at: datetime,
    cas: CaCache,
) -> Found | None:
    """The renewal that took effect after `intent_at`, or None. Raises EnosError if List fails."""
    records = await client.list_certificates(device)
    candidate = newest_candidate(records, old_cert_sn=device.cert_sn, since=intent_at - CLOCK_SKEW)
    if candidate is None:
        return None
    found = Found(
        cert_sn=candidate.cert_sn, resolution=Resolution.RECONCILED, signed_at=candidate.sign_date
    )
    if candidate.cert_pem is None:
        return found
    issued = await _recover(candidate, candidate.cert_pem, material, cas)
    if issued is None:
        return found
    return Found(
        cert_sn=candidate.cert_sn,
        resolution=Resolution.RECONCILED,
        issued=issued,
        signed_at=candidate.sign_date,
    )


def newest_candidate(
    records: list[CertRecord], *, old_cert_sn: int, since: datetime
) -> CertRecord | None:
    """The newest valid certificate, other than the old one, signed since `since`."""
    candidates = [
        r
        for r in records
        if r.status == "valid"
        and r.cert_sn != str(old_cert_sn)
        and (r.sign_date is None or r.sign_date >= since)
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda r: (r.sign_date is not None, r.sign_date or since))


async def _recover(
    record: CertRecord, cert_pem: str, material: KeyMaterial | None, cas: CaCache
) -> Issued | None:
    """An Issued from List's PEM, when its key is ours and its CA is known; else None."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError:
        return None
    if material is not None and public_key_sha256(cert.public_key()) != material.public_key_sha256:
        return None
    # After a crash before any answer came, the CA is not known yet: the answers of the other
    # devices renewing meanwhile will show it, which spares this device a second renewal.
    ca_pem = cas.issuer_of(cert) or await cas.wait_for_issuer_of(cert, CA_WAIT_SECONDS)
    if ca_pem is None:
        return None
    return Issued(cert_pem=cert_pem, ca_pem=ca_pem, cert_sn=record.cert_sn)
