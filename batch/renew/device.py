"""Renew one device, end to end, and return its Outcome: never raise for a device's failure.

For each attempt: the intent (with any generated key) is made durable in the journal, the shared
rate limiter grants a start, the signed call goes out, the error table decides about a retry.
An answer that never came (`TransportError.sent`), or one that may have come after the renewal
took effect (99500: the POLICY table's `uncertain`), is ambiguous: before anything is sent again,
`reconcile` asks List Certificate whether the renewal took effect. What came back is verified,
journaled, then written as a bundle. Only batch-level trouble (authentication refused, storage
refused: `StorageError`) raises. A certificate that arrived is never dropped: when the journal
refuses it, the write is retried, then the certificate goes to a rescue file (`batch.store.rescue`).

CAs: with `pinned_cas` (--pin-ca), a certificate that does not chain to one of them fails
verification (it is kept, as every issued certificate is). Without pins, the first issuing CA
of a campaign is taken as its CA; a certificate from a CA not seen before in the campaign is
still accepted (EnOS may rotate its CA) but its report row says so, and `ca_changes` counts it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from batch import storage
from batch.config import DueRule
from batch.enos.client import EnosClient
from batch.enos.errors import (
    EnosError,
    classify,
    is_retryable,
    may_have_taken_effect,
    redact,
)
from batch.errors import StorageError
from batch.model import (
    Device,
    ErrorClass,
    Follow,
    Issued,
    KeyMode,
    Outcome,
    Resolution,
    Status,
)
from batch.plan.decide import device_outcome
from batch.renew import keys
from batch.renew.current import NO_LONGER_VALID, current_certificate, follow
from batch.renew.due import lookup
from batch.renew.keypool import KeyPool
from batch.renew.keys import KeyMaterial
from batch.renew.limiter import RateLimiter
from batch.renew.reconcile import CaCache, Found, reconcile
from batch.renew.retry import Retrier, RetryPolicy
from batch.renew.tick import TickBatcher
from batch.renew.validity import requested_days, too_long_advice
from batch.renew.verify import Verified, ca_fingerprints, verify_issued
from batch.store import rescue
from batch.store.bundles import UnsafePathError, write_bundle
from batch.store.journal import Entry, Journal, State

log = logging.getLogger(__name__)

# Seconds between journal writes of an issued certificate that the storage refused, before it
# goes to a rescue file: a moment for space to come back (a checkpoint, another process).
KEEP_RETRY_DELAYS = (0.2, 0.5, 1.0)


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
    campaign_cas: set[str] = field(default_factory=set)  # SHA-256 of the CAs seen in the campaign
    ca_changes: int = 0  # certificates from a CA first seen after the campaign's first CA
    rescue_folder: Path | None = None  # where certificates the journal refused wait (rescue.py)
    # Signature checks; None: key_pool. Their own thread keeps them from queueing behind key
    # generations (RSA-2048: ~36 ms each, a hundred queued), which held back every answer.
    check_pool: Executor | None = None
    keys_ahead: KeyPool | None = None  # generated keys from worker processes (keypool.py)
    bundles: TickBatcher = field(init=False)  # bundle writes: one file_pool hand-off per tick
    checks: TickBatcher = field(init=False)  # verifications: one check_pool hand-off per tick

    def __post_init__(self) -> None:
        self.bundles = TickBatcher(self.file_pool)
        self.checks = TickBatcher(self.check_pool or self.key_pool)
        # A rerun after a crash reconciles the devices that were in flight first, before any
        # answer of this run has shown the issuing CA: without the CAs of earlier runs, List's
        # PEM could not be recovered and each such device would be renewed a second time.
        for ca_pem in self.journal.ca_pems():
            self.ca_cache.remember(ca_pem)
            self.campaign_cas |= ca_fingerprints(ca_pem)

    async def renew(
        self, device: Device, prior: State | None, follow: Follow | None = None
    ) -> Outcome:
        """The final outcome of one device (whose journal state from earlier runs is `prior`);
        `follow`: renew the device's current certificate, not the inventory's superseded one."""
        started = self.clock()
        entry = self.journal.get(device.key) if prior is not None else None
        # An issued certificate whose bundle was never written (or was lost): write it again.
        if entry is not None and entry.state in (State.RENEWED, State.BUNDLED) and entry.cert_pem:
            return await self._rebundle(device, entry, started)
        try:
            material = await self._material(device, entry)
        except keys.CsrError as exc:
            return device_outcome(
                device, Status.INVALID, error_class=ErrorClass.INVALID_INPUT, error_message=str(exc)
            )
        attempt = _Attempt(device=device, material=material, started=started)
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
        if self.keys_ahead is not None:
            return await self.keys_ahead.take(subject)
        return await loop.run_in_executor(self.key_pool, keys.generate, self.key_mode, subject)

    async def _attempts(self, a: _Attempt) -> Outcome:
        retrier = Retrier(self.limiter, self.policy, self.rng, self.sleep)
        result = await retrier.run(lambda: self._one_attempt(a))
        if result.error is not None and self._may_follow(a, result.error):
            verdict = await self._follow(a, retrier, result.error)
            if isinstance(verdict, Outcome):
                return verdict
            if verdict is None:
                a.advice = (
                    f"{result.error}: the device has no valid certificate (List Certificate):"
                    " use Apply Certificate for this device"
                )
            else:
                a.cert_sn, a.note, a.followed = verdict.cert_sn, verdict.note, True
                result = await retrier.run(lambda: self._one_attempt(a))
        if result.error is not None:
            return await self._failed(a, result.error, classify(result.error))
        assert result.value is not None
        return await self._accept(a, result.value)

    def _may_follow(self, a: _Attempt, exc: EnosError) -> bool:
        """EnOS says the inventory's certificate is no longer valid: is there a current one?"""
        return not a.followed and not a.ambiguous and classify(exc) in NO_LONGER_VALID

    async def _follow(
        self, a: _Attempt, retrier: Retrier, refused: EnosError
    ) -> Follow | Outcome | None:
        """The device's current certificate to renew, its final `skipped` Outcome (superseded,
        or not due), or None when it has no valid certificate (the refusal stands)."""
        records = await lookup(retrier, self.client, a.device)
        if isinstance(records, Outcome):  # List failed: say so, with the refusal it followed
            message = f"renew refused ({refused}); {records.error_message}"
            return await self._final(a, replace(records, error_message=message))
        now = datetime.now(UTC)
        current = current_certificate(records, a.device.cert_sn, now)
        if current is None:
            return None
        verdict = follow(
            a.device, current, rule=self.due_rule, renew_current=self.renew_current, now=now
        )
        if isinstance(verdict, Follow):
            return verdict
        return await self._final(a, verdict)

    async def _final(self, a: _Attempt, outcome: Outcome) -> Outcome:
        """A device's outcome without a certificate: journaled as final unless worth a rerun."""
        outcome = replace(
            outcome, attempts=a.previous + a.sent, duration_ms=self._elapsed_ms(a.started)
        )
        if outcome.error_class is None or not is_retryable(outcome.error_class):
            await self.journal.record_failed(a.device.key, outcome=outcome)
        return outcome

    async def _one_attempt(self, a: _Attempt) -> Found:
        """Reconcile if ambiguous, else renew once. Raises EnosError for a failed attempt."""
        if a.ambiguous and a.intent_at is not None:
            await self.limiter.acquire()
            # The certificate last asked to renew is the "old" one List must not mistake for
            # the renewal (when following, the current one, not the inventory's).
            renewed = a.device if a.cert_sn is None else replace(a.device, cert_sn=a.cert_sn)
            found = await reconcile(self.client, renewed, a.material, a.intent_at, self.ca_cache)
            a.ambiguous = False
            if found is not None and found.issued is not None:
                return found
            if found is not None:  # renewed, but List gave no usable PEM: renew the new one
                a.cert_sn = int(found.cert_sn)
                a.resolution = Resolution.RECONCILED
                a.note = (
                    f"renewal of {a.device.cert_sn} took effect unseen; renewed "
                    f"{found.cert_sn} again to obtain the certificate"
                )
        at = datetime.now(UTC)
        material = a.material
        await self.journal.record_intent(
            a.device.key,
            row=a.device.row,
            cert_sn=a.device.cert_sn,
            key_pem=material.key_pem if material else None,
            csr_pem=material.csr_pem if material else None,
            key_type=material.key_type if material else None,
            at=at,
        )
        a.intent_at = a.intent_at or at
        a.sent += 1
        await self.limiter.acquire()
        try:
            issued = await self.client.renew_certificate(
                a.device,
                cert_sn=a.cert_sn if a.cert_sn is not None else a.device.cert_sn,
                csr=material.csr_pem if material else None,
                valid_day=self._valid_day(a.device),
                issue_authority=material.issue_authority if material else a.device.issue_authority,
            )
        except EnosError as exc:
            a.ambiguous = may_have_taken_effect(exc)
            raise
        return Found(issued=issued, cert_sn=issued.cert_sn, resolution=a.resolution)

    def _valid_day(self, device: Device) -> int | None:
        """None: no validDay is sent, EnOS applies its own default (reported as granted)."""
        return requested_days(device, self.valid_days)

    async def _accept(self, a: _Attempt, found: Found) -> Outcome:
        assert found.issued is not None
        issued = found.issued
        self.ca_cache.remember(issued.ca_pem)
        now = found.signed_at or datetime.now(UTC)
        check = functools.partial(
            verify_issued,
            issued,
            expected_public_key_sha256=a.material.public_key_sha256 if a.material else None,
            requested_days=self._valid_day(a.device),
            now=now,
            pinned=self.pinned_cas,
        )
        # Signature checks release the GIL: in the pool they overlap with the event loop; the
        # answers that arrived in one tick are checked in one hand-off (batch.renew.tick).
        try:
            verified = await self.checks.run(check)
        except BaseException:
            # Stopped (the grace period ran out) or a bug while the certificate exists only
            # here: the journal still says INTENT, and a List without PEM would make the next
            # run renew again. Keep it first, unverified (the next run rewrites its bundle).
            unverified = device_outcome(
                a.device,
                Status.RENEWED,
                new_cert_sn=issued.cert_sn,
                note="kept before its verification finished (the run stopped)",
            )
            self._put_aside(
                rescue.Kept(
                    key=a.device.key,
                    outcome=unverified,
                    cert_pem=issued.cert_pem,
                    ca_pem=issued.ca_pem,
                )
            )
            raise
        if (ca_note := self._new_ca(verified)) is not None:
            a.note = "; ".join(n for n in (a.note, ca_note) if n)
        outcome = self._renewed_outcome(a, issued, verified, found.resolution)
        await self._keep(
            rescue.Kept(
                key=a.device.key, outcome=outcome, cert_pem=issued.cert_pem, ca_pem=issued.ca_pem
            )
        )
        key_pem = a.material.key_pem if a.material else None
        return await self._write_bundle(a.device, outcome, issued.cert_pem, issued.ca_pem, key_pem)

    def _new_ca(self, verified: Verified) -> str | None:
        """A note when the issuing CA was not seen before in this campaign (not for the first)."""
        fingerprint = verified.ca_sha256
        if fingerprint is None or fingerprint in self.campaign_cas:
            return None
        first = not self.campaign_cas
        self.campaign_cas.add(fingerprint)
        if first:
            return None
        self.ca_changes += 1
        subject = redact(verified.ca_subject or "", ())  # the answer's text: escape controls
        note = f"issued by a CA not seen before in this campaign: {subject} (sha256 {fingerprint})"
        log.warning("%s", note)
        return note

    async def _keep(self, kept: rescue.Kept) -> None:
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
            self._put_aside(kept)
            raise
        path = await asyncio.get_running_loop().run_in_executor(
            self.file_pool, self._put_aside, kept
        )
        where = (
            f"certificates already issued are kept in {path.parent} and taken from there by "
            "the next run: free space (or restore the permission) and rerun the same command"
            if path is not None
            else f"the certificate issued for {kept.key} could not be kept on disk either and "
            "is printed in the log: keep that log"
        )
        raise StorageError(f"{refused.message}; {where}")

    def _put_aside(self, kept: rescue.Kept) -> Path | None:
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

    def _renewed_outcome(
        self, a: _Attempt, issued: Issued, verified: Verified, resolution: Resolution
    ) -> Outcome:
        status = Status.RENEWED if verified.ok else Status.FAILED
        notes = [n for n in (a.note, "; ".join(verified.problems) or None) if n]
        return device_outcome(
            a.device,
            status,
            error_class=None if verified.ok else ErrorClass.VERIFICATION_FAILED,
            error_message=None if verified.ok else "; ".join(verified.problems),
            attempts=a.previous + a.sent,
            new_cert_sn=issued.cert_sn,
            not_before=verified.not_before,
            not_after=verified.not_after,
            requested_days=self._valid_day(a.device),
            granted_days=verified.granted_days,
            clamped=verified.clamped,
            key_type=verified.key_type,
            cert_sha256=verified.cert_sha256,
            request_id=issued.request_id,
            duration_ms=self._elapsed_ms(a.started),
            resolution=resolution,
            note="; ".join(notes) or None,
        )

    async def _write_bundle(
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

    async def _rebundle(self, device: Device, entry: Entry, started: float) -> Outcome:
        """The journal holds an issued certificate whose bundle was never written: write it."""
        assert entry.cert_pem is not None and entry.ca_pem is not None
        earlier = entry.outcome or device_outcome(device, Status.RENEWED)
        outcome = replace(
            earlier,
            row=device.row,
            resolution=Resolution.RESUMED,
            duration_ms=self._elapsed_ms(started),
            # Keep why it was renewed (e.g. a renewal that took effect unseen) in the report.
            note="; ".join(n for n in (earlier.note, "bundle rewritten from the journal") if n),
        )
        return await self._write_bundle(
            device, outcome, entry.cert_pem, entry.ca_pem, entry.key_pem
        )

    async def _failed(self, a: _Attempt, exc: EnosError, cls: ErrorClass) -> Outcome:
        ambiguous = a.ambiguous
        advice = too_long_advice(str(exc), self._valid_day(a.device))
        outcome = device_outcome(
            a.device,
            Status.FAILED,
            error_class=ErrorClass.AMBIGUOUS if ambiguous else cls,
            error_code=exc.code if exc.code is not None else exc.http_status,
            error_message=advice or a.advice or str(exc),
            attempts=a.previous + a.sent,
            request_id=exc.request_id,
            duration_ms=self._elapsed_ms(a.started),
            note=a.note,
        )
        # An ambiguous device stays an intent in the journal: the next run reconciles it first.
        if not ambiguous and not is_retryable(cls):
            await self.journal.record_failed(a.device.key, outcome=outcome)
        return outcome

    def _elapsed_ms(self, started: float) -> int:
        return round((self.clock() - started) * 1000)


@dataclass(slots=True, kw_only=True)
class _Attempt:
    """What one device's attempts have learned so far."""

    device: Device
    material: KeyMaterial | None
    started: float
    previous: int = 0  # requests sent in earlier runs
    sent: int = 0  # requests sent in this run
    intent_at: datetime | None = None
    ambiguous: bool = False
    cert_sn: int | None = None  # the serial to renew when it is no longer the inventory's
    followed: bool = False  # the device's current certificate replaced the inventory's
    advice: str | None = None  # what the operator should do about the final failure
    note: str | None = None
    resolution: Resolution = Resolution.DIRECT
