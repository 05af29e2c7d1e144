"""Maintenance mode: renew only what is due, closest to expiry first.

A device's current certificate comes from the inventory (`notAfter`) or from List Certificate.
It is due when it expires within `--renew-within` days, or when it has lived past
`--renew-at-fraction` of its lifetime. An expired or revoked certificate cannot be renewed
(EnOS refuses): unless the device has a newer valid certificate to follow (batch.renew.current), it
fails with a hint to use Apply instead of costing a renew call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from batch.config import DueRule
from batch.enos.client import EnosClient
from batch.enos.errors import classify
from batch.model import CertRecord, Device, ErrorClass, Follow, Outcome
from batch.renew.retry import Retrier


@dataclass(frozen=True, slots=True)
class Due:
    """A device to renew now; `expires` orders the run (soonest first); `follow` when the
    certificate to renew is the device's current one, not the inventory's (batch.renew.current)."""

    device: Device
    expires: datetime | None
    follow: Follow | None = None


def verdict_from_inventory(device: Device, rule: DueRule, now: datetime) -> Due | Outcome | None:
    """Decide from the inventory's notAfter alone, or None when a lookup is needed."""
    # An inventory certificate past its notAfter may have been superseded by a valid one:
    # List tells (batch.renew.current), and fails the device only if it has none.
    if device.not_after is None or rule.needs_lifetime or device.not_after <= now:
        return None
    return by_expiry(device, device.not_after, None, rule, now)


def verdict_from_list(
    device: Device, records: list[CertRecord], rule: DueRule, now: datetime
) -> Due | Outcome:
    """Decide from List Certificate's view of the certificate being renewed."""
    mine = next((r for r in records if r.cert_sn == str(device.cert_sn)), None)
    if mine is None:
        return Outcome.failed(
            device,
            error_class=ErrorClass.INVALID_REQUEST,
            error_message=f"certificate {device.cert_sn} is not bound to this device (List)",
        )
    if mine.status == "revoked":
        return _unrenewable(device, ErrorClass.CERT_REVOKED, "revoked")
    if mine.status == "expired" or (mine.expire_date is not None and mine.expire_date <= now):
        return _unrenewable(device, ErrorClass.CERT_EXPIRED, "expired")
    if mine.expire_date is None:
        return Due(device, None)  # nothing tells it is not due: renewing is the safe side
    return by_expiry(device, mine.expire_date, mine.sign_date, rule, now)


def by_expiry(
    device: Device, expires: datetime, signed: datetime | None, rule: DueRule, now: datetime
) -> Due | Outcome:
    """Due when it expires within the window or has lived its fraction; else `skipped`."""
    if rule.within_days is not None and expires - now <= timedelta(days=rule.within_days):
        return Due(device, expires)
    lived = (now - signed) / (expires - signed) if signed is not None and expires > signed else 0
    if rule.at_fraction is not None and lived >= rule.at_fraction:
        return Due(device, expires)
    days = (expires - now).days
    return Outcome.skipped(
        device,
        not_after=expires,
        note=f"not_due: certificate expires {_day(expires)} (in {days} days)",
    )


def _unrenewable(device: Device, cls: ErrorClass, what: str) -> Outcome:
    return Outcome.failed(
        device,
        error_class=cls,
        error_message=f"certificate {device.cert_sn} is {what} and cannot be renewed: "
        "use Apply Certificate for this device",
    )


def _day(moment: datetime) -> str:
    return moment.date().isoformat()


async def lookup(
    retrier: Retrier, client: EnosClient, device: Device
) -> list[CertRecord] | Outcome:
    """The device's certificates from List (retried like a renewal), or its failed Outcome."""

    async def attempt() -> list[CertRecord]:
        await retrier.limiter.acquire()
        return await client.list_certificates(device)

    result = await retrier.run(attempt)
    if result.value is not None:
        return result.value
    assert result.error is not None
    exc = result.error
    return Outcome.failed(
        device,
        error_class=classify(exc),
        error_code=exc.code if exc.code is not None else exc.http_status,
        error_message=f"List Certificate failed: {exc}",
        attempts=result.attempts,
        request_id=exc.request_id,
    )
