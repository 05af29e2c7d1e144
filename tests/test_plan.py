"""Per-row decisions: invalid rows, duplicates, shards, and what earlier runs finished."""

from __future__ import annotations

from dataclasses import replace

from batch.config import Shard
from batch.model import Device, ErrorClass, InvalidRow, Outcome, Resolution, Status, shard_text
from batch.plan.decide import (
    Deduper,
    OutOfShard,
    Resume,
    Run,
    decide,
    in_shard,
    resumed_outcome,
    stable_hash,
)
from batch.store.journal import State


def _device(n: int, **kw: object) -> Device:
    return Device(row=n + 1, org_id="o1", product_key="pk", device_key=f"d{n}", cert_sn=n, **kw)  # type: ignore[arg-type]


def _decide(item: Device | InvalidRow, deduper: Deduper | None = None, **kw: object) -> object:
    return decide(
        item,
        deduper=deduper or Deduper(),
        shard=kw.get("shard"),  # type: ignore[arg-type]
        journal_index=kw.get("index", {}),  # type: ignore[arg-type]
        retry_failed=bool(kw.get("retry_failed", False)),
    )


def test_stable_hash_is_fixed_across_processes() -> None:
    # a constant, so a change of algorithm (which would reshuffle shards mid-campaign) fails here
    assert stable_hash("o1/pk/d1") == 0x6F70FCB68EC95C21


def test_a_device_stays_in_the_shard_it_had_under_the_old_org_slash_identity_key() -> None:
    pair = Device(row=2, org_id="o1", product_key="pk", device_key="d1", cert_sn=1)
    asset = Device(row=3, org_id="o/x", asset_id="a:1:b", cert_sn=2)
    assert shard_text(pair.key) == "o1/pk/d1" and shard_text(asset.key) == "o/x/a:1:b"
    for device, old_key in ((pair, "o1/pk/d1"), (asset, "o/x/a:1:b")):
        index = stable_hash(old_key) % 7
        assert in_shard(device.key, Shard(index=index, count=7))


def test_invalid_row_becomes_an_invalid_outcome_with_its_values() -> None:
    bad = InvalidRow(row=7, reason="certSn 'x' is not an integer", values={"deviceKey": "d9"})
    outcome = _decide(bad)
    assert isinstance(outcome, Outcome)
    assert (outcome.row, outcome.status, outcome.error_class) == (
        7,
        Status.INVALID,
        ErrorClass.INVALID_INPUT,
    )
    assert outcome.device_key == "d9"
    assert "certSn" in (outcome.error_message or "")


def test_second_listing_of_a_device_is_a_duplicate() -> None:
    deduper = Deduper()
    assert isinstance(_decide(_device(1), deduper), Run)
    again = _decide(_device(1), deduper)
    assert isinstance(again, Outcome)
    assert again.status is Status.INVALID and again.error_class is ErrorClass.DUPLICATE


def test_shards_partition_the_fleet() -> None:
    keys = [_device(n).key for n in range(1000)]
    owners = [[i for i in range(4) if in_shard(k, Shard(index=i, count=4))] for k in keys]
    assert all(len(o) == 1 for o in owners)
    sizes = [sum(1 for o in owners if o == [i]) for i in range(4)]
    assert min(sizes) > 200  # roughly even


def test_out_of_shard_device_is_not_run() -> None:
    device = _device(3)
    mine = next(i for i in range(3) if in_shard(device.key, Shard(index=i, count=3)))
    other = Shard(index=(mine + 1) % 3, count=3)
    assert isinstance(_decide(device, shard=other), OutOfShard)
    assert isinstance(_decide(device, shard=Shard(index=mine, count=3)), Run)


def test_invalid_rows_are_reported_by_exactly_one_shard() -> None:
    for row in range(2, 60):
        bad = InvalidRow(row=row, reason="bad")
        shards = [Shard(index=i, count=3) for i in range(3)]
        reported = [s for s in shards if isinstance(_decide(bad, shard=s), Outcome)]
        assert len(reported) == 1


def test_journal_state_decides_resume_or_run() -> None:
    device = _device(2)
    assert isinstance(_decide(device, index={device.key: State.BUNDLED}), Resume)
    assert isinstance(_decide(device, index={device.key: State.FAILED}), Resume)
    retry = _decide(device, index={device.key: State.FAILED}, retry_failed=True)
    assert isinstance(retry, Run) and retry.prior is State.FAILED
    for state in (State.INTENT, State.RENEWED):
        run = _decide(device, index={device.key: state})
        assert isinstance(run, Run) and run.prior is state


def test_resumed_outcome_keeps_the_earlier_result() -> None:
    device = _device(4)
    earlier = Outcome(row=5, status=Status.RENEWED, new_cert_sn="999", attempts=2)
    row = resumed_outcome(device, earlier)
    assert row.status is Status.SKIPPED and row.resolution is Resolution.RESUMED
    assert row.new_cert_sn == "999" and row.attempts == 2
    assert row.note == "renewed in an earlier run"
    assert row.device_key == "d4"
    explained = replace(earlier, note="renewal of 4 took effect unseen; renewed 998 again")
    assert resumed_outcome(device, explained).note == (
        "renewed in an earlier run; renewal of 4 took effect unseen; renewed 998 again"
    )


def test_deduper_remembers_many_devices_compactly() -> None:
    deduper = Deduper(capacity=8)  # grows as it fills
    keys = [f"o/pk/d{i}" for i in range(20_000)]
    assert all(deduper.first_time(k) for k in keys)
    assert not any(deduper.first_time(k) for k in keys[::97])
    assert all(deduper.seen(k) for k in keys[::13])
    assert not deduper.seen("o/pk/never")
