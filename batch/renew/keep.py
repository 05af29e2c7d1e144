"""Hand an issued certificate to the store: the journal first, then the bundle files.

A certificate that arrived is never dropped: when the journal refuses it, the write is retried,
then the certificate goes to a rescue file (`batch.store.rescue`), and failing that to the log;
the refusal then stops the run (`StorageError`, exit 4). A bundle is written once the journal
holds the certificate, so one that cannot be written now is rewritten from there by the next
run (`Keeper.rebundle`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from pathlib import Path

from batch import storage
from batch.errors import StorageError
from batch.model import Device, ErrorClass, Outcome, Resolution, Status
from batch.renew.attempt import elapsed_ms
from batch.renew.tick import TickBatcher
from batch.store import rescue
from batch.store.bundles import UnsafePathError, write_bundle
from batch.store.journal import Entry, Journal

log = logging.getLogger(__name__)

# Seconds between journal writes of an issued certificate that the storage refused, before it
# goes to a rescue file: a moment for space to come back (a checkpoint, another process).
KEEP_RETRY_DELAYS = (0.2, 0.5, 1.0)


@dataclass(slots=True)
class Keeper:
    """Makes issued certificates durable: journal (retried, else rescued), then bundle files."""

    journal: Journal
    out_dir: Path
    file_pool: Executor  # bundle files (one thread: file creation in one folder serialises)
    sleep: Callable[[float], Awaitable[object]]
    clock: Callable[[], float]
    rescue_folder: Path | None = None  # where certificates the journal refused wait
    pkcs12_passphrase: bytes | None = None
    bundles: TickBatcher = field(init=False)  # bundle writes: one file_pool hand-off per tick

    def __post_init__(self) -> None:
        self.bundles = TickBatcher(self.file_pool)

    async def keep(self, kept: rescue.Kept) -> None:
        """Journal an issued certificate; if the storage refuses, retry, then rescue it."""
        try:
            for delay in (*KEEP_RETRY_DELAYS, None):
                try:
                    await self.journal.record_renewed(
                        kept.key, outcome=kept.outcome, cert_pem=kept.cert_pem, ca_pem=kept.ca_pem
                    )
                    return
                except StorageError as exc:
                    refused = exc
                if delay is not None:
                    await self.sleep(delay)
        except asyncio.CancelledError:
            # Stopped mid-way (the grace period ran out): whether the journal took it is
            # unknown, so keep it now, on this thread (a small file), then stop.
            self.put_aside(kept)
            raise
        path = await asyncio.get_running_loop().run_in_executor(
            self.file_pool, self.put_aside, kept
        )
        where = (
            f"certificates already issued are kept in {path.parent} and taken from there by "
            "the next run: free space (or restore the permission) and rerun the same command"
            if path is not None
            else f"the certificate issued for {kept.key} could not be kept on disk either and "
            "is printed in the log: keep that log"
        )
        raise StorageError(f"{refused.message}; {where}")

    def put_aside(self, kept: rescue.Kept) -> Path | None:
        """Write a rescue file (blocking) and return it; failing that, log the certificate."""
        failure = "no rescue folder configured"
        if self.rescue_folder is not None:
            try:
                with storage.translated("cannot write a rescue file"):
                    path = rescue.keep(self.rescue_folder, kept)
                log.error("the certificate issued for %s is kept in %s", kept.key, path)
                return path
            except (StorageError, rescue.UnsafeRescueFolder) as exc:
                failure = exc.message
        # The last place left: the log. A certificate is public, so it may go there.
        log.error(
            "the certificate issued for %s could not be kept anywhere (%s); here it is, "
            "with its CA, so it is not lost:\n%s%s",
            kept.key,
            failure,
            kept.cert_pem,
            kept.ca_pem,
        )
        return None

    async def write_bundle(
        self, device: Device, outcome: Outcome, cert_pem: str, ca_pem: str, key_pem: bytes | None
    ) -> Outcome:
        write = functools.partial(
            write_bundle,
            self.out_dir,
            device,
            cert_pem=cert_pem,
            ca_pem=ca_pem,
            key_pem=key_pem,
            pkcs12_passphrase=self.pkcs12_passphrase if key_pem else None,
        )
        # The certificate is in the journal: a bundle that cannot be written now is rewritten
        # from there by the next run.
        try:
            with storage.translated(f"cannot write the bundle of {device.key}"):
                path = await self.bundles.run(write)
        except UnsafePathError as exc:  # a link on the way: this device fails, the run goes on
            return replace(
                outcome,
                status=Status.FAILED,
                error_class=ErrorClass.BUNDLE_REFUSED,
                error_message=str(exc),
            )
        relative = str(path.relative_to(self.out_dir))
        await self.journal.record_bundled(device.key, bundle_path=relative)
        return replace(outcome, bundle_path=relative)

    async def rebundle(self, device: Device, entry: Entry, started: float) -> Outcome:
        """The journal holds an issued certificate whose bundle was never written: write it."""
        assert entry.cert_pem is not None and entry.ca_pem is not None
        earlier = entry.outcome or Outcome.renewed(device)
        outcome = replace(
            earlier,
            row=device.row,
            resolution=Resolution.RESUMED,
            duration_ms=elapsed_ms(self.clock, started),
            # Keep why it was renewed (e.g. a renewal that took effect unseen) in the report.
            note="; ".join(n for n in (earlier.note, "bundle rewritten from the journal") if n),
        )
        return await self.write_bundle(device, outcome, entry.cert_pem, entry.ca_pem, entry.key_pem)
