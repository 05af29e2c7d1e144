"""inventory.next.csv: the next run starts from each device's current certificate."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from batch.config import Shard
from batch.model import KeyMode, identity_key
from batch.outputs.next_inventory import NEXT_INVENTORY, Current, write_next_inventory
from batch.plan.decide import in_shard
from batch.testing import ORG, run_job, simulator, write_inventory


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


async def test_a_campaigns_next_inventory_lets_the_next_night_start_from_the_truth(
    tmp_path: Path,
) -> None:
    rows: list[dict[str, object]] = [
        {"org_id": ORG, "assetId": "a1", "CertSN": 1, "validDay": "", "site": "north"},
        {"org_id": ORG, "assetId": "a2", "CertSN": 2, "validDay": 10, "site": "=south"},
        {"org_id": ORG, "assetId": "bad", "CertSN": "x", "validDay": "", "site": ""},
        {"org_id": ORG, "assetId": "gone", "CertSN": 4, "validDay": "", "site": "east"},
        {"org_id": ORG, "assetId": "a1", "CertSN": 1, "validDay": "", "site": "again"},
    ]
    inventory = write_inventory(tmp_path / "inventory.csv", rows)
    seed = [{**r, "sandbox": "revoked" if r["assetId"] == "gone" else ""} for r in rows[:4]]
    async with simulator(seed, tmp_path) as sim:
        campaign = await run_job(sim, inventory, tmp_path / "campaign", key_mode=KeyMode.EC256)
        header, written = _read(tmp_path / "campaign" / NEXT_INVENTORY)
        lists_before = sim.state_dict()["stats"]["requests"].get("list", 0)
        nightly = await run_job(
            sim,
            tmp_path / "campaign" / NEXT_INVENTORY,
            tmp_path / "night-1",
            key_mode=KeyMode.EC256,
            renew_within=30,
        )
        lists = sim.state_dict()["stats"]["requests"].get("list", 0) - lists_before
    by = {r["assetId"]: r for r in campaign.rows if r["status"] != "invalid"}
    # The input's columns as spelled, notAfter added; invalid rows and duplicates left out.
    assert header == ["org_id", "assetId", "CertSN", "validDay", "site", "notAfter"]
    assert [r["assetId"] for r in written] == ["a1", "a2", "gone"]
    for row in written[:2]:
        renewed = by[row["assetId"]]
        assert row["CertSN"] == renewed["newCertSn"]
        assert datetime.fromisoformat(row["notAfter"]) == datetime.fromisoformat(
            renewed["notAfter"]
        )
    assert [r["site"] for r in written] == ["north", "=south", "east"]  # values as read
    assert (written[2]["CertSN"], written[2]["notAfter"]) == ("4", "")  # cert_revoked: as it was
    night = {r["assetId"]: r for r in nightly.rows}
    assert (night["a2"]["status"], night["a2"]["oldCertSn"]) == ("renewed", by["a2"]["newCertSn"])
    assert "superseded" not in night["a2"]["note"]
    assert night["a1"]["status"] == "skipped" and night["a1"]["note"].startswith("not_due")
    assert night["gone"]["errorClass"] == "cert_revoked"
    assert lists == 1  # only "gone" had no notAfter to decide from


def test_a_parquet_inventory_gives_a_csv_of_this_shards_rows(tmp_path: Path) -> None:
    names = [f"a{i}" for i in range(20)]
    table = pa.table({"orgId": [ORG] * 20, "assetId": names, "certSn": list(range(20))})
    pq.write_table(table, tmp_path / "inv.parquet")
    shard = Shard(index=1, count=3)
    mine = [
        i for i, name in enumerate(names) if in_shard(identity_key(ORG, name, None, None), shard)
    ]
    assert 1 < len(mine) < 20
    expires = datetime(2028, 1, 2, tzinfo=UTC) + timedelta(hours=3)
    renewed = mine[1:]  # the run reported only its shard's rows; the first of them unchanged
    count = write_next_inventory(
        tmp_path,
        tmp_path / "inv.parquet",
        fmt="parquet",
        default_org=None,
        shard=shard,
        changed={i + 1: Current(str(1000 + i), expires) for i in renewed},
        dropped=set(),
    )
    header, written = _read(tmp_path / NEXT_INVENTORY)
    assert header == ["orgId", "assetId", "certSn", "notAfter"]
    assert count == len(written) == len(mine)
    assert [r["certSn"] for r in written] == [str(mine[0])] + [str(1000 + i) for i in renewed]
    assert [r["notAfter"] for r in written] == [""] + ["2028-01-02T03:00:00+00:00"] * len(renewed)


def test_a_header_repeated_exactly_is_read_from_its_first_column_as_the_run_reads_it(
    tmp_path: Path,
) -> None:
    # The run reads the first certSn column (valid); the second is empty. A row this run did not
    # report (e.g. it stopped early) is kept by reading the same cells the run would have read.
    inventory = tmp_path / "inv.csv"
    inventory.write_text(f"orgId,assetId,certSn,certSn\n{ORG},a1,123,\n{ORG},a2,124,\n")
    count = write_next_inventory(
        tmp_path,
        inventory,
        fmt="csv",
        default_org=None,
        shard=None,
        changed={3: Current("900", None)},
        dropped=set(),
    )
    with (tmp_path / NEXT_INVENTORY).open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert count == 2
    assert rows[1][:3] == [ORG, "a1", "123"]  # unreported, kept
    assert rows[2][:3] == [ORG, "a2", "900"]  # renewed: its current serial
