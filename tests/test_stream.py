"""The outcome stream and the subscribers that only record: tally, retry list."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from batch.errors import StorageError
from batch.model import Device, ErrorClass, Outcome, Status
from batch.outputs.report import ReportWriter
from batch.run.stream import Kind, Origin, OutcomeStream, ReportRows, RetryList, Tally

DEVICE = Device(row=2, org_id="o", product_key="pk", device_key="dk", cert_sn=1)


def failed(cls: ErrorClass) -> Outcome:
    return Outcome(row=2, status=Status.FAILED, error_class=cls)


class Seen:
    def __init__(self, name: str, log: list[str], fail: bool = False) -> None:
        self.name, self.log, self.fail = name, log, fail

    def on_outcome(self, outcome: Outcome, origin: Origin) -> None:
        self.log.append(self.name)
        if self.fail:
            raise RuntimeError(self.name)


def test_subscribers_see_each_outcome_in_order_and_a_raise_stops_the_later_ones() -> None:
    log: list[str] = []
    stream = OutcomeStream(Seen("report", log), Seen("breaker", log, fail=True), Seen("x", log))
    with pytest.raises(RuntimeError, match="breaker"):
        stream.emit(Outcome(row=2, status=Status.RENEWED), Origin(Kind.RENEWAL, DEVICE))
    assert log == ["report", "breaker"]


def test_a_resumed_row_is_skipped_here_and_counts_as_its_earlier_state_for_the_campaign() -> None:
    tally = Tally()
    earlier_failure = Outcome(
        row=2, status=Status.SKIPPED, error_class=ErrorClass.DEVICE_NOT_FOUND
    )  # what resumed_outcome makes of a device that failed for good in an earlier run
    tally.on_outcome(earlier_failure, Origin(Kind.RESUMED, earlier=Status.FAILED))
    tally.on_outcome(failed(ErrorClass.TIMEOUT), Origin(Kind.RENEWAL, DEVICE))
    assert tally.by_status == {Status.SKIPPED: 1, Status.FAILED: 1}
    assert tally.campaign == {Status.FAILED: 2}
    assert tally.by_class == {ErrorClass.TIMEOUT: 1}  # this run's failures only
    assert tally.finished == 2


def test_the_retry_list_takes_devices_that_failed_for_a_reason_a_rerun_may_cure() -> None:
    retry = RetryList()
    retry.on_outcome(failed(ErrorClass.TIMEOUT), Origin(Kind.RENEWAL, DEVICE))
    retry.on_outcome(failed(ErrorClass.SERVER_ERROR), Origin(Kind.DECIDED, DEVICE))  # List failed
    retry.on_outcome(failed(ErrorClass.DEVICE_NOT_FOUND), Origin(Kind.RENEWAL, DEVICE))
    retry.on_outcome(failed(ErrorClass.TIMEOUT), Origin(Kind.DECIDED))  # no device to retry
    retry.on_outcome(Outcome(row=2, status=Status.RENEWED), Origin(Kind.RENEWAL, DEVICE))
    assert retry.devices == [DEVICE, DEVICE]


async def test_report_rows_of_one_tick_reach_the_file_when_the_tick_ends(tmp_path: Path) -> None:
    """In the run loop the rows are flushed once per tick, not per row: by the next tick they
    are in the kernel (a killed run keeps them), without closing the writer."""
    refused: list[StorageError] = []
    with ReportWriter(tmp_path) as writer:
        rows = ReportRows(writer, refused.append)
        for row in (2, 3, 4):
            rows.on_outcome(Outcome(row=row, status=Status.SKIPPED), Origin(Kind.DECIDED))
        await asyncio.sleep(0)  # the tick ends
        lines = (tmp_path / "report.csv").read_bytes().decode().split("\r\n")
        assert [line.split(",")[0] for line in lines[1:-1]] == ["2", "3", "4"]
    assert refused == []
