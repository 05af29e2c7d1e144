"""metrics.prom from real runs against the simulator, parsed back with prometheus_client."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from prometheus_client.parser import text_string_to_metric_families

from batch.model import ErrorClass, Status
from batch.outputs.metrics import METRICS_PROM, build_registry, write_metrics
from batch.testing import ORG, Result, fleet, job


def parse(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a metrics file, keyed by name and sorted labels."""
    samples = {}
    for family in text_string_to_metric_families(path.read_text()):
        assert family.type == "gauge", family.name
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return samples[(f"fleet_renew_{name}", ())]


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory: pytest.TempPathFactory) -> Result:
    """Renewed (clamped) devices, failures of two classes, an invalid row and some 429s."""
    rows: list[dict[str, object]] = [
        *fleet(16),
        {"orgId": ORG, "assetId": "gone-1", "certSn": 901, "sandbox": "absent"},
        {"orgId": ORG, "assetId": "gone-2", "certSn": 902, "sandbox": "absent"},
        {"orgId": ORG, "assetId": "old", "certSn": 903, "sandbox": "expired"},
    ]
    inventory = [*rows, {"orgId": ORG, "productKey": "pkA", "deviceKey": "bad", "certSn": "x"}]
    tmp = tmp_path_factory.mktemp("metrics")
    return asyncio.run(
        job(
            tmp,
            rows,
            sim_kw={"rate_limit": 6, "ca_days": 100},
            inventory_rows=inventory,
            rate=12,
            valid_days=365,
        )
    )


def test_metrics_match_the_report_of_a_real_run(mixed_run: Result) -> None:
    summary = mixed_run.summary
    path = write_metrics(mixed_run.out, summary)
    assert path == mixed_run.out / METRICS_PROM
    samples = parse(path)
    table = pq.read_table(mixed_run.out / "report.parquet")

    statuses = Counter(table.column("status").to_pylist())
    assert statuses == {"renewed": 16, "failed": 3, "invalid": 1}
    for status in Status:
        key = ("fleet_renew_renewals", (("status", status.value),))
        assert samples[key] == statuses.get(status.value, 0)

    classes = Counter(c for c in table.column("errorClass").to_pylist() if c)
    assert classes == {"device_not_found": 2, "cert_expired": 1, "invalid_input": 1}
    for error_class in ErrorClass:
        key = ("fleet_renew_errors", (("error_class", error_class.value),))
        assert samples[key] == classes.get(error_class.value, 0)

    assert value(samples, "attempts") == pc.sum(table.column("attempts")).as_py() >= 19
    renewed = table.filter(pc.equal(table.column("status"), "renewed"))
    earliest = pc.min(renewed.column("notAfter")).as_py()
    assert value(samples, "earliest_not_after_seconds") == earliest.timestamp()
    assert value(samples, "requests") == summary.requests > 0
    assert summary.extra["throttled"] > 0  # the simulator's limit is below the job's rate
    assert value(samples, "throttled") == summary.extra["throttled"]
    assert value(samples, "duration_seconds") == pytest.approx(summary.duration_s)
    assert value(samples, "exit_code") == summary.exit_code == 1
    assert value(samples, "aborted") == 0
    assert value(samples, "ca_changes") == summary.extra["caChanges"] == 0  # one CA throughout
    assert value(samples, "last_run_timestamp_seconds") == summary.finished.timestamp()


def test_a_ca_change_is_a_metric_an_alert_can_watch(mixed_run: Result) -> None:
    summary = replace(mixed_run.summary, extra={**mixed_run.summary.extra, "caChanges": 2})
    registry = build_registry(summary, attempts=0, earliest_not_after=None)
    assert registry.get_sample_value("fleet_renew_ca_changes") == 2


def test_metrics_file_is_replaced_whole_and_leaves_no_temporary_file(mixed_run: Result) -> None:
    (mixed_run.out / METRICS_PROM).write_text("stale\n")
    write_metrics(mixed_run.out, mixed_run.summary)
    assert "stale" not in (mixed_run.out / METRICS_PROM).read_text()
    leftovers = [p.name for p in mixed_run.out.iterdir() if p.name.startswith(METRICS_PROM + ".")]
    assert leftovers == []


async def test_a_run_that_renewed_nothing_has_no_earliest_not_after(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [
        {"orgId": ORG, "assetId": f"gone-{i}", "certSn": i, "sandbox": "absent"} for i in range(3)
    ]
    result = await job(tmp_path, rows)
    samples = parse(write_metrics(result.out, result.summary))
    assert ("fleet_renew_earliest_not_after_seconds", ()) not in samples
    assert samples[("fleet_renew_renewals", (("status", "failed"),))] == 3
    assert samples[("fleet_renew_renewals", (("status", "renewed"),))] == 0
    assert value(samples, "attempts") == 3  # device_not_found is permanent: one attempt each
    assert value(samples, "exit_code") == 1
