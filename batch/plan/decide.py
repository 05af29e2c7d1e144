"""Decide, row by row, what a run does with the inventory: renew, skip, or report as invalid.

Pure decisions over values: duplicates, shard membership, and what an earlier run of the same
output folder already finished (the journal index). No I/O here.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, replace

from batch.config import Shard
from batch.model import (
    Device,
    ErrorClass,
    Follow,
    InvalidRow,
    Outcome,
    Resolution,
    Status,
    shard_text,
)
from batch.store.journal import State


def stable_hash(text: str) -> int:
    """A 64-bit hash that is the same in every process and on every machine."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def in_shard(device_key: str, shard: Shard | None) -> bool:
    """Whether the device (by `Device.key`) belongs to the shard; the hash reads the
    `org/identity` text of earlier versions, so no device changes shard on upgrade."""
    return shard is None or stable_hash(shard_text(device_key)) % shard.count == shard.index


def row_in_shard(row: int, shard: Shard | None) -> bool:
    """Invalid rows have no trustworthy identity: their line number picks the shard."""
    return in_shard(f"row:{row}", shard)


class Deduper:
    """Remembers the devices seen so far in about 16 bytes each.

    A Python set of 64-bit hashes costs ~70 bytes an entry (an int object plus its slot): 70 MB
    for a million-row inventory. This is an open-addressing table of the hashes in an
    array('Q'), kept at most half full; 0 marks a free slot, so a hash of 0 is stored as 1 (one
    more hash in 2**64 that could collide, which the 64-bit hash already accepts).
    """

    def __init__(self, capacity: int = 1 << 16) -> None:
        self._slots = array("Q", bytes(8 * capacity))
        self._mask = capacity - 1
        self._count = 0

    def seen(self, device_key: str) -> bool:
        digest = stable_hash(device_key) or 1
        return self._slots[self._find(digest)] == digest

    def first_time(self, device_key: str) -> bool:
        digest = stable_hash(device_key) or 1
        index = self._find(digest)
        if self._slots[index] == digest:
            return False
        self._slots[index] = digest
        self._count += 1
        if self._count * 2 > len(self._slots):
            self._grow()
        return True

    def _find(self, digest: int) -> int:
        """The slot holding `digest`, or the free slot where it belongs (linear probing)."""
        slots, mask = self._slots, self._mask
        index = digest & mask
        while slots[index] not in (0, digest):
            index = (index + 1) & mask
        return index

    def _grow(self) -> None:
        old = self._slots
        self._slots = array("Q", bytes(16 * len(old)))
        self._mask = len(self._slots) - 1
        for digest in old:
            if digest:
                self._slots[self._find(digest)] = digest


@dataclass(frozen=True, slots=True)
class Run:
    """Renew this device; `prior` is its journal state from an earlier run, if any; `follow`
    names the current certificate to renew when the inventory's was superseded."""

    device: Device
    prior: State | None = None
    follow: Follow | None = None


@dataclass(frozen=True, slots=True)
class Resume:
    """Finished in an earlier run: the report row comes from the journal."""

    device: Device


@dataclass(frozen=True, slots=True)
class OutOfShard:
    """Another shard's row: not reported here (the merge brings the shards' reports together)."""

    row: int


Decision = Run | Resume | OutOfShard | Outcome


def decide(
    item: Device | InvalidRow,
    *,
    deduper: Deduper,
    shard: Shard | None,
    journal_index: Mapping[str, State],
    retry_failed: bool,
) -> Decision:
    """What this run does with one inventory row."""
    if isinstance(item, InvalidRow):
        return Outcome.invalid(item) if row_in_shard(item.row, shard) else OutOfShard(item.row)
    if not in_shard(item.key, shard):
        return OutOfShard(item.row)
    if not deduper.first_time(item.key):
        return duplicate_outcome(item)
    state = journal_index.get(item.key)
    if state is State.BUNDLED or (state is State.FAILED and not retry_failed):
        return Resume(item)
    return Run(item, state)


def duplicate_outcome(device: Device) -> Outcome:
    return Outcome.invalid(
        device,
        error_class=ErrorClass.DUPLICATE,
        error_message="device listed again in the inventory; renewed once, at its first row",
    )


def resumed_outcome(device: Device, earlier: Outcome | None) -> Outcome:
    """The report row of a device finished in an earlier run: `skipped`, its earlier result kept."""
    if earlier is None:
        return Outcome.skipped(
            device, resolution=Resolution.RESUMED, note="finished in an earlier run"
        )
    return replace(
        earlier,
        row=device.row,
        status=Status.SKIPPED,
        resolution=Resolution.RESUMED,
        # The earlier note stays: that run's own report row may never have been written.
        note="; ".join(n for n in (f"{earlier.status.value} in an earlier run", earlier.note) if n),
        org_id=device.org_id,
        asset_id=device.asset_id,
        product_key=device.product_key,
        device_key=device.device_key,
        old_cert_sn=device.cert_sn,
    )
