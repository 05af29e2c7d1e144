"""What a run of the loop leaves for the summary and the outputs: one frozen value."""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from batch.errors import StorageError
from batch.model import Device, ErrorClass, Status
from batch.outputs.timeline import Sample
from batch.renew.limiter import RateLimiter
from batch.run.stream import Tally


@dataclass(frozen=True, slots=True, kw_only=True)
class Requests:
    """The rate limiter's account of the requests the run sent."""

    sent: int = 0  # starts granted: renewals, lookups, reconciliations, retries included
    span_s: float | None = None  # from the first start to the last one
    throttled: int = 0  # HTTP 429 answers

    @classmethod
    def of(cls, limiter: RateLimiter | None) -> Requests:
        if limiter is None:
            return cls()
        return cls(sent=limiter.acquired, span_s=limiter.span, throttled=limiter.throttled)


@dataclass(frozen=True, slots=True, kw_only=True)
class Totals:
    """The tally at the end of the run (see `batch.run.stream.Tally`)."""

    by_status: Mapping[Status, int]
    by_class: Mapping[ErrorClass, int]
    campaign: Mapping[Status, int]
    out_of_shard: int

    @classmethod
    def of(cls, tally: Tally) -> Totals:
        return cls(
            by_status=MappingProxyType(dict(tally.by_status)),
            by_class=MappingProxyType(dict(tally.by_class)),
            campaign=MappingProxyType(dict(tally.campaign)),
            out_of_shard=tally.out_of_shard,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult:
    """How the run went: counts, requests, the timeline, and why it stopped early if it did."""

    totals: Totals
    retry: tuple[Device, ...]  # retry.csv
    samples: tuple[Sample, ...]  # the timeline, for report.html
    requests: Requests
    ca_changes: int  # certificates from a CA first seen after the campaign's first CA
    vanished: tuple[str, ...]  # journal devices this inventory no longer lists (org/identity)
    stop_signal: signal.Signals | None = None  # SIGTERM/SIGINT that stopped the run
    aborted: str | None = None  # why the run stopped itself (exit 3)
    storage_error: StorageError | None = None  # the first write the storage refused (exit 4)
