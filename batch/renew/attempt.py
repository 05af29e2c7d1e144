"""One device's attempts: what they have learned so far (`Attempt`) and one attempt (`Sender`).

Before anything is sent again for an ambiguous device (an answer that never came, or one that
may have come after the renewal took effect: `may_have_taken_effect`), `reconcile` asks List
Certificate whether the renewal took effect. Otherwise the intent (with any generated key) is
made durable in the journal, the shared rate limiter grants a start and the signed Renew goes
out. A failed attempt raises `EnosError`; what follows is `batch.renew.retry.Retrier`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from batch.enos.client import EnosClient
from batch.enos.errors import EnosError, may_have_taken_effect
from batch.model import Device, Resolution
from batch.renew.keys import KeyMaterial
from batch.renew.limiter import RateLimiter
from batch.renew.reconcile import CaCache, Found, reconcile
from batch.store.journal import Journal


@dataclass(slots=True, kw_only=True)
class Attempt:
    """What one device's attempts have learned so far."""

    device: Device
    material: KeyMaterial | None
    started: float
    # validDay sent; None: none is sent, EnOS applies its own default (reported as granted)
    requested_days: int | None = None
    previous: int = 0  # requests sent in earlier runs
    sent: int = 0  # requests sent in this run
    intent_at: datetime | None = None
    ambiguous: bool = False
    cert_sn: int | None = None  # the serial to renew when it is no longer the inventory's
    followed: bool = False  # the device's current certificate replaced the inventory's
    advice: str | None = None  # what the operator should do about the final failure
    note: str | None = None
    resolution: Resolution = Resolution.DIRECT


def elapsed_ms(clock: Callable[[], float], started: float) -> int:
    return round((clock() - started) * 1000)


@dataclass(slots=True)
class Sender:
    """Makes one attempt at a device: reconcile if ambiguous, else journal the intent and renew."""

    client: EnosClient
    limiter: RateLimiter
    journal: Journal
    ca_cache: CaCache

    async def send(self, a: Attempt) -> Found:
        """Reconcile if ambiguous, else renew once. Raises EnosError for a failed attempt."""
        if a.ambiguous and a.intent_at is not None:
            found = await self._reconcile(a)
            if found is not None:
                return found
        at = datetime.now(UTC)
        material = a.material
        await self.journal.record_intent(
            a.device.key,
            row=a.device.row,
            cert_sn=a.device.cert_sn,
            key_pem=material.key_pem if material else None,
            csr_pem=material.csr_pem if material else None,
            key_type=material.key_type if material else None,
            at=at,
        )
        a.intent_at = a.intent_at or at
        a.sent += 1
        await self.limiter.acquire()
        try:
            issued = await self.client.renew_certificate(
                a.device,
                cert_sn=a.cert_sn if a.cert_sn is not None else a.device.cert_sn,
                csr=material.csr_pem if material else None,
                valid_day=a.requested_days,
                issue_authority=material.issue_authority if material else a.device.issue_authority,
            )
        except EnosError as exc:
            a.ambiguous = may_have_taken_effect(exc)
            raise
        return Found(issued=issued, cert_sn=issued.cert_sn, resolution=a.resolution)

    async def _reconcile(self, a: Attempt) -> Found | None:
        """The renewal List shows with its certificate, or None: then renew (what List showed
        without a usable PEM becomes the serial to renew)."""
        assert a.intent_at is not None
        await self.limiter.acquire()
        # The certificate last asked to renew is the "old" one List must not mistake for
        # the renewal (when following, the current one, not the inventory's).
        renewed = a.device if a.cert_sn is None else replace(a.device, cert_sn=a.cert_sn)
        found = await reconcile(self.client, renewed, a.material, a.intent_at, self.ca_cache)
        a.ambiguous = False
        if found is not None and found.issued is not None:
            return found
        if found is not None:  # renewed, but List gave no usable PEM: renew the new one
            a.cert_sn = int(found.cert_sn)
            a.resolution = Resolution.RECONCILED
            a.note = (
                f"renewal of {a.device.cert_sn} took effect unseen; renewed "
                f"{found.cert_sn} again to obtain the certificate"
            )
        return None
