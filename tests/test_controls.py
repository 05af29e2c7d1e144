"""Campaign controls: canary, failure-rate abort, saved plans and deadlines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from batch.config import parse_share, run_config
from batch.errors import UsageError
from batch.inventory.read import inventory_fingerprint
from batch.model import KeyMode
from batch.plan.preview import late_devices
from batch.plan.saved import check_plan, plan_options, save_plan
from batch.run.canary import CanaryRule, canary_size, spread, verdict
from batch.testing import ORG, job, run_job, simulator, write_inventory


def two_products(n: int, *, absent_in_b: bool = False) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for i in range(n):
        product = "pkA" if i % 4 else "pkB"  # pkB is a quarter of the fleet, spread through it
        sandbox = "absent" if absent_in_b and product == "pkB" else ""
        rows.append(
            {
                "orgId": ORG,
                "productKey": product,
                "deviceKey": f"d{i:03d}",
                "certSn": 500 + i,
                "sandbox": sandbox,
            }
        )
    return rows


def test_spread_picks_round_robin_over_groups_in_order() -> None:
    items = ["a1", "a2", "a3", "a4", "b1", "c1", "c2"]
    picked, rest = spread(items, 4, lambda s: s[0])
    assert picked == ["a1", "a2", "b1", "c1"]
    assert rest == ["a3", "a4", "c2"]


def test_shares_and_sizes() -> None:
    assert parse_share("5%", what="x") == pytest.approx(0.05)
    assert parse_share("0.2", what="x") == pytest.approx(0.2)
    with pytest.raises(UsageError):
        parse_share("150%", what="x")
    assert canary_size("10", 1000) == 10
    assert canary_size("1%", 1000) == 10
    assert canary_size("1%", 5) == 1
    with pytest.raises(UsageError):
        canary_size("ten", 10)
    rule = CanaryRule(size=10, max_failure_rate=0.1)
    assert verdict(rule, failed=1, finished=10) is None
    assert "canary failed" in (verdict(rule, failed=2, finished=10) or "")


async def test_canary_passes_then_the_rest_runs(tmp_path: Path) -> None:
    rows = two_products(24)
    result = await job(tmp_path, rows, canary="4", concurrency=4)
    assert result.summary.exit_code == 0
    assert {r["status"] for r in result.rows} == {"renewed"}
    canary = [r for r in result.rows if r["canary"] == "true"]
    assert len(canary) == 4
    assert {r["productKey"] for r in canary} == {"pkA", "pkB"}  # spread across products
    assert result.rows[:4] == canary  # finished before anything else started


async def test_failing_canary_stops_the_campaign_with_exit_3(tmp_path: Path) -> None:
    rows = two_products(24, absent_in_b=True)
    result = await job(tmp_path, rows, canary="4")
    assert result.summary.exit_code == 3
    assert "canary failed" in (result.summary.aborted_reason or "")
    assert len(result.rows) == 4  # only the canary ran
    assert all(r["canary"] == "true" for r in result.rows)
    renewed = sum(result.renewals(f"pkA/d{i:03d}") for i in range(24) if i % 4)
    assert renewed == sum(1 for r in result.rows if r["status"] == "renewed")


async def test_canary_may_allow_some_failures(tmp_path: Path) -> None:
    rows = two_products(24, absent_in_b=True)
    result = await job(tmp_path, rows, canary="4", canary_max_failures=0.5)
    assert result.summary.exit_code == 1  # went on: the pkB devices fail, the rest renew
    assert len(result.rows) == 24


async def test_failure_rate_abort_after_the_minimum_sample(tmp_path: Path) -> None:
    rows = two_products(40, absent_in_b=True)  # 25 % of devices fail
    result = await job(tmp_path, rows, abort_failure_rate=0.2, abort_min_sample=12, concurrency=1)
    assert result.summary.exit_code == 3
    assert "--abort-failure-rate 20%" in (result.summary.aborted_reason or "")
    assert 12 <= len(result.rows) < 40
    (tmp_path / "again").mkdir()
    lenient = await job(
        tmp_path / "again", rows, abort_failure_rate=0.4, abort_min_sample=12, concurrency=1
    )
    assert lenient.summary.exit_code == 1 and len(lenient.rows) == 40


def _scope(**changes: object) -> dict[str, str | None]:
    base: dict[str, object] = {
        "org_id": None,
        "inventory_format": None,
        "shard": None,
        "key_mode": KeyMode.REUSE,
        "valid_days": None,
        "params_in": "both",
        "renew_within": None,
        "renew_at_fraction": None,
    }
    base.update(changes)
    config = run_config(inventory=Path("i.csv"), out_dir=Path("o"), sandbox=True, **base)
    return plan_options(config.scope, config.keys)


async def test_a_saved_plan_is_honoured_and_a_changed_one_refused(tmp_path: Path) -> None:
    rows = two_products(4)
    inventory = write_inventory(tmp_path / "inv.csv", rows)
    plan = tmp_path / "plan.json"
    save_plan(
        plan,
        inventory_sha256=inventory_fingerprint(inventory),
        options=_scope(),
        counts={"toRenew": 4},
    )
    async with simulator(rows, tmp_path) as sim:
        with pytest.raises(UsageError, match="keyMode was 'reuse' in the plan, now 'ec256'"):
            await run_job(sim, inventory, tmp_path / "o1", plan_file=plan, key_mode=KeyMode.EC256)
        with pytest.raises(UsageError, match="renewCurrent was None in the plan, now 'true'"):
            await run_job(sim, inventory, tmp_path / "o1", plan_file=plan, renew_current=True)
        ok = await run_job(sim, inventory, tmp_path / "o2", plan_file=plan)
        assert ok.summary.exit_code == 0
        write_inventory(inventory, rows[:3])
        with pytest.raises(UsageError, match="inventory file changed"):
            await run_job(sim, inventory, tmp_path / "o3", plan_file=plan)
        assert not (tmp_path / "o3").exists()  # refused before anything was written


def test_check_plan_names_every_difference(tmp_path: Path) -> None:
    plan = tmp_path / "p.json"
    save_plan(plan, inventory_sha256="abc", options=_scope(valid_days=365), counts={})
    check_plan(plan, inventory_sha256="abc", options=_scope(valid_days=365))
    with pytest.raises(UsageError) as caught:
        check_plan(plan, inventory_sha256="abd", options=_scope(valid_days=90, renew_within=30))
    text = str(caught.value)
    assert "inventory file changed" in text and "validDays" in text and "renewWithin" in text
    (tmp_path / "junk.json").write_text("{")
    with pytest.raises(UsageError, match="not a readable plan"):
        check_plan(tmp_path / "junk.json", inventory_sha256="abc", options=_scope())


def test_deadlines_name_the_devices_that_would_expire_first() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    expiries = [
        (now + timedelta(seconds=5), 2, "soon"),
        (now + timedelta(days=9), 3, "later"),
        (now + timedelta(seconds=1), 4, "sooner"),
    ]
    assert late_devices(expiries, rate=10, now=now) == []
    late = late_devices(expiries, rate=0.1, now=now)  # one device every 10 s, soonest first
    assert [(row, name) for _, row, name, _ in late] == [(2, "soon")]
    assert late[0][3] == now + timedelta(seconds=10)  # its turn comes after it expired
