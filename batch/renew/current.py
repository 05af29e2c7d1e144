"""Follow the device's current certificate when the inventory's one is no longer valid.

An inventory is a snapshot. After a campaign, or any renewal made outside this job, the certSn
it names is superseded (revoked) and EnOS refuses to renew it; yet the device has a valid,
newer certificate, which List Certificate shows. That one is the device's *current*
certificate, and the job treats it as such:

- maintenance mode (`--renew-within` / `--renew-at-fraction`) decides due / not due from it,
  and renews it when due;
- a full campaign reports the device `skipped` (`superseded: current certificate <sn> expires
  <date>`): it was renewed already; `--renew-current` renews the current certificate instead.

Only a device with no valid certificate at all fails `cert_revoked` / `cert_expired` (use
Apply). Which refusals lead here is `batch.enos.errors.POLICY`'s `follow_current`. List may
return serials only (the documented sample): the serial and dates suffice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from batch.config import DueRule
from batch.enos.client import EnosClient
from batch.enos.errors import EnosError, classify, follows_current
from batch.model import CertRecord, Device, Follow, Outcome
from batch.renew.attempt import Attempt
from batch.renew.due import Due, by_expiry, lookup, verdict_from_list
from batch.renew.retry import Retrier


def current_certificate(
    records: list[CertRecord], inventory_sn: int, now: datetime
) -> CertRecord | None:
    """The device's newest valid certificate other than the inventory's; None if it has none."""
    valid = [
        r
        for r in records
        if r.status == "valid"
        and r.cert_sn != str(inventory_sn)
        and r.cert_sn.isdigit()
        and (r.expire_date is None or r.expire_date > now)
    ]
    if not valid:
        return None
    return max(valid, key=lambda r: (r.sign_date is not None, r.sign_date or now, int(r.cert_sn)))


def maintenance_verdict(
    device: Device, records: list[CertRecord], rule: DueRule, now: datetime
) -> Due | Outcome:
    """`due.verdict_from_list`, but from the current certificate when the inventory's one is
    no longer valid and the device has a newer valid one."""
    mine = next((r for r in records if r.cert_sn == str(device.cert_sn)), None)
    usable = mine is not None and mine.status == "valid" and not _past(mine, now)
    current = None if usable or mine is None else current_certificate(records, device.cert_sn, now)
    if current is None:
        return verdict_from_list(device, records, rule, now)
    verdict = follow(device, current, rule=rule, renew_current=False, now=now)
    if isinstance(verdict, Follow):
        return Due(device, current.expire_date, verdict)
    return verdict


def _past(record: CertRecord, now: datetime) -> bool:
    return record.expire_date is not None and record.expire_date <= now


def follow(
    device: Device,
    current: CertRecord,
    *,
    rule: DueRule | None,
    renew_current: bool,
    now: datetime,
) -> Follow | Outcome:
    """What to do with a device whose inventory certificate was superseded by `current`."""
    expires = current.expire_date
    sn = current.cert_sn
    superseded = f"inventory certificate {device.cert_sn} superseded by {sn}"
    renew = Follow(int(sn), f"{superseded}; renewed the current certificate {sn}")
    if rule is not None:
        if expires is None:
            return renew  # nothing tells it is not due: renewing is the safe side
        verdict = by_expiry(device, expires, current.sign_date, rule, now)
        if isinstance(verdict, Due):
            return renew
        return dataclasses.replace(
            verdict,
            current_cert_sn=sn,
            note=f"not_due: current certificate {sn} expires {_day(expires)} "
            f"(in {(expires - now).days} days); {superseded}",
        )
    if renew_current:
        return renew
    return Outcome.skipped(
        device,
        current_cert_sn=sn,
        not_after=expires,
        note=f"superseded: current certificate {sn} expires "
        f"{_day(expires) if expires else 'unknown'}",
    )


def _day(moment: datetime) -> str:
    return moment.date().isoformat()


@dataclass(slots=True)
class Follower:
    """After EnOS refused to renew the inventory's certificate: the device's current one."""

    client: EnosClient
    # A final outcome without a certificate, journaled (batch.renew.failure.Failures.final).
    final: Callable[[Attempt, Outcome], Awaitable[Outcome]]
    due_rule: DueRule | None = None  # maintenance mode: a followed certificate is renewed if due
    renew_current: bool = False  # a campaign renews a superseding current certificate too

    def may_follow(self, a: Attempt, exc: EnosError) -> bool:
        """EnOS says the inventory's certificate is no longer valid: is there a current one?"""
        return not a.followed and not a.ambiguous and follows_current(classify(exc))

    async def follow(
        self, a: Attempt, retrier: Retrier, refused: EnosError
    ) -> Follow | Outcome | None:
        """The device's current certificate to renew, its final `skipped` Outcome (superseded,
        or not due), or None when it has no valid certificate (the refusal stands)."""
        records = await lookup(retrier, self.client, a.device)
        if isinstance(records, Outcome):  # List failed: say so, with the refusal it followed
            message = f"renew refused ({refused}); {records.error_message}"
            return await self.final(a, dataclasses.replace(records, error_message=message))
        now = datetime.now(UTC)
        current = current_certificate(records, a.device.cert_sn, now)
        if current is None:
            return None
        verdict = follow(
            a.device, current, rule=self.due_rule, renew_current=self.renew_current, now=now
        )
        if isinstance(verdict, Follow):
            return verdict
        return await self.final(a, verdict)
