"""The `plan` command: read an inventory and say what a run would do, sending nothing."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from batch.config import Scope
from batch.inventory.read import read_inventory
from batch.model import Device, InvalidRow
from batch.plan.decide import Deduper, in_shard

SHOWN_INVALID = 20  # invalid rows listed by name; the rest are counted


@dataclass(slots=True)
class PlanResult:
    rows: int = 0
    to_renew: int = 0
    duplicates: int = 0
    out_of_shard: int = 0
    invalid: int = 0
    by_org_product: Counter[tuple[str, str]] = field(default_factory=Counter)
    first_invalid: list[InvalidRow] = field(default_factory=list)
    expiries: list[tuple[datetime, int, str]] = field(default_factory=list)  # notAfter, row, id

    def counts(self) -> dict[str, int]:
        return {
            "rows": self.rows,
            "toRenew": self.to_renew,
            "invalid": self.invalid,
            "duplicates": self.duplicates,
            "otherShards": self.out_of_shard,
        }


def plan_inventory(scope: Scope) -> PlanResult:
    """Count what a run over the scope's inventory would renew, skip and reject."""
    result = PlanResult()
    deduper = Deduper()
    rows = read_inventory(scope.inventory, fmt=scope.inventory_format, default_org=scope.org_id)
    for item in rows:
        result.rows += 1
        if isinstance(item, InvalidRow):
            result.invalid += 1
            if len(result.first_invalid) < SHOWN_INVALID:
                result.first_invalid.append(item)
        elif not in_shard(item.key, scope.shard):
            result.out_of_shard += 1
        elif not deduper.first_time(item.key):
            result.duplicates += 1
        else:
            result.to_renew += 1
            result.by_org_product[(item.org_id, _product(item))] += 1
            if item.not_after is not None:
                result.expiries.append((item.not_after, item.row, item.identity))
    return result


def _product(device: Device) -> str:
    return device.product_key or "(by assetId)"


def render_plan(result: PlanResult, *, rate: float) -> str:
    """The plan as a few plain lines for a terminal or a log."""
    seconds = result.to_renew / rate
    lines = [
        f"rows: {result.rows}",
        f"to renew: {result.to_renew}",
        f"invalid rows: {result.invalid}",
        f"duplicate devices: {result.duplicates} (reported as invalid, renewed once)",
    ]
    if result.out_of_shard:
        lines.append(f"other shards: {result.out_of_shard}")
    lines.append(f"estimated duration at {rate:g} requests/s: {_duration(seconds)}")
    lines.append("by org / product:")
    for (org, product), count in sorted(result.by_org_product.items()):
        lines.append(f"  {org} / {product}: {count}")
    for bad in result.first_invalid:
        lines.append(f"  invalid row {bad.row}: {bad.reason}")
    if result.invalid > len(result.first_invalid):
        lines.append(f"  ... and {result.invalid - len(result.first_invalid)} more invalid rows")
    lines += deadline_lines(result.expiries, rate=rate, now=datetime.now(UTC))
    return "\n".join(lines)


def late_devices(
    expiries: list[tuple[datetime, int, str]], *, rate: float, now: datetime
) -> list[tuple[datetime, int, str, datetime]]:
    """Devices whose certificate expires before their turn, soonest first, with their turn.

    Assumes the soonest-expiry-first order of maintenance mode and one request per device.
    """
    late = []
    for position, (not_after, row, identity) in enumerate(sorted(expiries)):
        turn = now + timedelta(seconds=position / rate)
        if turn >= not_after:
            late.append((not_after, row, identity, turn))
    return late


def deadline_lines(
    expiries: list[tuple[datetime, int, str]], *, rate: float, now: datetime
) -> list[str]:
    if not expiries:
        return ["deadlines: no notAfter in the inventory (maintenance mode looks them up)"]
    earliest = min(expiries)
    lines = [
        f"deadlines: {len(expiries)} devices with a known expiry; the earliest expires "
        f"{earliest[0]:%Y-%m-%d %H:%M}Z (row {earliest[1]}, {earliest[2]})"
    ]
    late = late_devices(expiries, rate=rate, now=now)
    if not late:
        lines.append(f"  at {rate:g} requests/s, soonest first, every one is renewed in time")
        return lines
    lines.append(f"  at {rate:g} requests/s, {len(late)} would expire before their turn:")
    for not_after, row, identity, turn in late[:SHOWN_INVALID]:
        lines.append(
            f"  row {row} {identity}: expires {not_after:%Y-%m-%d %H:%M}Z, "
            f"its turn ~{turn:%Y-%m-%d %H:%M}Z"
        )
    return lines


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"
