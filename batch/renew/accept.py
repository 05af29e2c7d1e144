"""A certificate came back: verify it, note a new CA, build its outcome, hand it to the store.

CAs: with `pinned_cas` (--pin-ca), a certificate that does not chain to one of them fails
verification (it is kept, as every issued certificate is). Without pins, the first issuing CA
of a campaign is taken as its CA; a certificate from a CA not seen before in the campaign is
still accepted (EnOS may rotate its CA) but its report row says so, and `CampaignCas.changes`
counts it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography import x509

from batch.enos.errors import redact
from batch.model import ErrorClass, Issued, Outcome, Resolution, Status
from batch.renew.attempt import Attempt, elapsed_ms
from batch.renew.keep import Keeper
from batch.renew.reconcile import CaCache, Found
from batch.renew.tick import TickBatcher
from batch.renew.verify import Verified, verify_issued
from batch.store import rescue

log = logging.getLogger(__name__)


@dataclass(slots=True)
class CampaignCas:
    """The issuing CAs seen in the campaign (SHA-256), and how often a new one appeared."""

    seen: set[str] = field(default_factory=set)
    changes: int = 0  # certificates from a CA first seen after the campaign's first CA

    def note_for(self, verified: Verified) -> str | None:
        """A note when the issuing CA was not seen before in this campaign (not for the first)."""
        fingerprint = verified.ca_sha256
        if fingerprint is None or fingerprint in self.seen:
            return None
        first = not self.seen
        self.seen.add(fingerprint)
        if first:
            return None
        self.changes += 1
        subject = redact(verified.ca_subject or "", ())  # the answer's text: escape controls
        note = f"issued by a CA not seen before in this campaign: {subject} (sha256 {fingerprint})"
        log.warning("%s", note)
        return note


@dataclass(slots=True)
class Acceptor:
    """Verifies what came back and hands the certificate, with its outcome, to the `Keeper`."""

    keeper: Keeper
    checks: TickBatcher  # verifications: one check_pool hand-off per tick
    ca_cache: CaCache
    clock: Callable[[], float]
    pinned_cas: tuple[x509.Certificate, ...] = ()  # --pin-ca: issued certificates chain to one
    cas: CampaignCas = field(default_factory=CampaignCas)

    async def accept(self, a: Attempt, found: Found) -> Outcome:
        assert found.issued is not None
        issued = found.issued
        self.ca_cache.remember(issued.ca_pem)
        now = found.signed_at or datetime.now(UTC)
        check = functools.partial(
            verify_issued,
            issued,
            expected_public_key_sha256=a.material.public_key_sha256 if a.material else None,
            requested_days=a.requested_days,
            now=now,
            pinned=self.pinned_cas,
        )
        # Signature checks release the GIL: in the pool they overlap with the event loop; the
        # answers that arrived in one tick are checked in one hand-off (batch.renew.tick).
        try:
            verified = await self.checks.run(check)
        except BaseException:
            # Stopped (the grace period ran out) or a bug while the certificate exists only
            # here: the journal still says INTENT, and a List without PEM would make the next
            # run renew again. Keep it first, unverified (the next run rewrites its bundle).
            unverified = Outcome.renewed(
                a.device,
                new_cert_sn=issued.cert_sn,
                note="kept before its verification finished (the run stopped)",
            )
            self.keeper.put_aside(
                rescue.Kept(
                    key=a.device.key,
                    outcome=unverified,
                    cert_pem=issued.cert_pem,
                    ca_pem=issued.ca_pem,
                )
            )
            raise
        if (ca_note := self.cas.note_for(verified)) is not None:
            a.note = "; ".join(n for n in (a.note, ca_note) if n)
        outcome = self._renewed_outcome(a, issued, verified, found.resolution)
        await self.keeper.keep(
            rescue.Kept(
                key=a.device.key, outcome=outcome, cert_pem=issued.cert_pem, ca_pem=issued.ca_pem
            )
        )
        key_pem = a.material.key_pem if a.material else None
        return await self.keeper.write_bundle(
            a.device, outcome, issued.cert_pem, issued.ca_pem, key_pem
        )

    def _renewed_outcome(
        self, a: Attempt, issued: Issued, verified: Verified, resolution: Resolution
    ) -> Outcome:
        status = Status.RENEWED if verified.ok else Status.FAILED
        notes = [n for n in (a.note, "; ".join(verified.problems) or None) if n]
        return Outcome.for_device(
            a.device,
            status,
            error_class=None if verified.ok else ErrorClass.VERIFICATION_FAILED,
            error_message=None if verified.ok else "; ".join(verified.problems),
            attempts=a.previous + a.sent,
            new_cert_sn=issued.cert_sn,
            not_before=verified.not_before,
            not_after=verified.not_after,
            requested_days=a.requested_days,
            granted_days=verified.granted_days,
            clamped=verified.clamped,
            key_type=verified.key_type,
            cert_sha256=verified.cert_sha256,
            request_id=issued.request_id,
            duration_ms=elapsed_ms(self.clock, a.started),
            resolution=resolution,
            note="; ".join(notes) or None,
        )
