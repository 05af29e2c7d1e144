"""Renew one device, end to end, and return its Outcome: never raise for a device's failure.

`Renewer` is the one object the run loop holds; it gets the device's key material and runs the
attempts under the error table's rules (`batch.renew.retry.Retrier`), each attempt made by
`batch.renew.attempt.Sender` (the journal's intent first; List before anything is sent again
for an ambiguous device). Then one of: what came back is verified, journaled and written as a
bundle (`batch.renew.accept`, `batch.renew.keep`); the device's current certificate is followed
when EnOS says the inventory's one is no longer valid (`batch.renew.current.Follower`); or the
failure becomes the device's outcome, journaled as final or left for a rerun as the table says
(`batch.renew.failure`). Only batch-level trouble (authentication refused, storage refused:
`StorageError`) raises. A certificate that arrived is never dropped (`batch.renew.keep`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from batch.config import DueRule
from batch.enos.client import EnosClient
from batch.model import Device, ErrorClass, Follow, KeyMode, Outcome
from batch.renew import keys
from batch.renew.accept import Acceptor
from batch.renew.attempt import Attempt, Sender
from batch.renew.current import Follower
from batch.renew.failure import Failures
from batch.renew.keep import Keeper
from batch.renew.keys import KeyMaterial
from batch.renew.limiter import RateLimiter
from batch.renew.reconcile import CaCache
from batch.renew.retry import Retrier, RetryPolicy
from batch.renew.tick import TickBatcher
from batch.renew.validity import requested_days
from batch.renew.verify import ca_fingerprints
from batch.store.journal import Entry, Journal, State


@dataclass(slots=True)
class Renewer:
    """Everything a worker needs to renew devices; one per run, shared by all workers."""

    client: EnosClient
    limiter: RateLimiter
    journal: Journal
    out_dir: Path
    key_mode: KeyMode
    key_pool: Executor  # key generation and CSR files (CPU, releases the GIL)
    file_pool: Executor  # bundle files (one thread: file creation in one folder serialises)
    policy: RetryPolicy
    valid_days: int | None = None
    due_rule: DueRule | None = None  # maintenance mode: a followed certificate is renewed if due
    renew_current: bool = False  # a campaign renews a superseding current certificate too
    pkcs12_passphrase: bytes | None = None
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep
    ca_cache: CaCache = field(default_factory=CaCache)
    pinned_cas: tuple[x509.Certificate, ...] = ()  # --pin-ca: issued certificates chain to one
    rescue_folder: Path | None = None  # where certificates the journal refused wait (rescue.py)
    # Signature checks; None: key_pool. Their own thread keeps them from queueing behind key
    # generations (RSA-2048: ~36 ms each, a hundred queued), which held back every answer.
    check_pool: Executor | None = None
    _sender: Sender = field(init=False, repr=False)
    _keeper: Keeper = field(init=False, repr=False)
    _acceptor: Acceptor = field(init=False, repr=False)
    _failures: Failures = field(init=False, repr=False)
    _follower: Follower = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._sender = Sender(self.client, self.limiter, self.journal, self.ca_cache)
        self._keeper = Keeper(
            self.journal,
            self.out_dir,
            self.file_pool,
            self.sleep,
            self.clock,
            rescue_folder=self.rescue_folder,
            pkcs12_passphrase=self.pkcs12_passphrase,
        )
        checks = TickBatcher(self.check_pool or self.key_pool)  # one hand-off per tick
        self._acceptor = Acceptor(
            self._keeper, checks, self.ca_cache, self.clock, pinned_cas=self.pinned_cas
        )
        self._failures = Failures(self.journal, self.clock)
        self._follower = Follower(
            self.client,
            self._failures.final,
            due_rule=self.due_rule,
            renew_current=self.renew_current,
        )
        # A rerun after a crash reconciles the devices that were in flight first, before any
        # answer of this run has shown the issuing CA: without the CAs of earlier runs, List's
        # PEM could not be recovered and each such device would be renewed a second time.
        for ca_pem in self.journal.ca_pems():
            self.ca_cache.remember(ca_pem)
            self._acceptor.cas.seen |= ca_fingerprints(ca_pem)

    @property
    def ca_changes(self) -> int:
        """Certificates from a CA first seen after the campaign's first CA."""
        return self._acceptor.cas.changes

    async def renew(
        self, device: Device, prior: State | None, follow: Follow | None = None
    ) -> Outcome:
        """The final outcome of one device (whose journal state from earlier runs is `prior`);
        `follow`: renew the device's current certificate, not the inventory's superseded one."""
        started = self.clock()
        entry = self.journal.get(device.key) if prior is not None else None
        # An issued certificate whose bundle was never written (or was lost): write it again.
        if entry is not None and entry.state in (State.RENEWED, State.BUNDLED) and entry.cert_pem:
            return await self._keeper.rebundle(device, entry, started)
        try:
            material = await self._material(device, entry)
        except keys.CsrError as exc:
            return Outcome.invalid(
                device, error_class=ErrorClass.INVALID_INPUT, error_message=str(exc)
            )
        attempt = Attempt(
            device=device,
            material=material,
            started=started,
            requested_days=requested_days(device, self.valid_days),
        )
        if follow is not None:
            attempt.cert_sn, attempt.note, attempt.followed = follow.cert_sn, follow.note, True
        if entry is not None:
            attempt.previous = entry.attempts
            attempt.intent_at = entry.intent_at
            attempt.ambiguous = entry.state is State.INTENT  # a request was in flight at the crash
        return await self._attempts(attempt)

    async def _material(self, device: Device, entry: Entry | None) -> KeyMaterial | None:
        loop = asyncio.get_running_loop()
        if entry is not None and entry.csr_pem:
            # Loading an RSA key takes ~30 ms: off the event loop, as generating one is.
            return await loop.run_in_executor(
                self.key_pool, keys.from_journal, entry.key_pem, entry.csr_pem
            )
        if self.key_mode is KeyMode.REUSE:
            return None
        if self.key_mode is KeyMode.CSR_COLUMN:
            if not device.csr_path:
                raise keys.CsrError("key mode csr-column needs a csrPath for this device")
            return await loop.run_in_executor(self.key_pool, keys.load_csr_file, device.csr_path)
        subject = keys.subject_for(device)
        return await loop.run_in_executor(self.key_pool, keys.generate, self.key_mode, subject)

    async def _attempts(self, a: Attempt) -> Outcome:
        retrier = Retrier(self.limiter, self.policy, self.rng, self.sleep)
        result = await retrier.run(lambda: self._sender.send(a))
        if result.error is not None and self._follower.may_follow(a, result.error):
            verdict = await self._follower.follow(a, retrier, result.error)
            if isinstance(verdict, Outcome):
                return verdict
            if verdict is None:
                a.advice = (
                    f"{result.error}: the device has no valid certificate (List Certificate):"
                    " use Apply Certificate for this device"
                )
            else:
                a.cert_sn, a.note, a.followed = verdict.cert_sn, verdict.note, True
                result = await retrier.run(lambda: self._sender.send(a))
        if result.error is not None:
            return await self._failures.failed(a, result.error)
        assert result.value is not None
        return await self._acceptor.accept(a, result.value)
