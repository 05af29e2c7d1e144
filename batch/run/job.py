"""One run of the job: set up the endpoint, journal, client and report; run the pipeline; sum up.

Also the process-level concerns: SIGTERM/SIGINT become a graceful stop (Airflow stops a task
with SIGTERM), aborts become exit 3, and summary.json is written however the run ended. A write
the storage refused (`StorageError`) ends the run with exit 4 once in-flight devices kept what
they received; each output is still attempted, so a summary is written when it can be.

Before anything in `--out` is changed, the start refuses (exit 2) an output folder whose journal
is damaged, or gone while a campaign's outputs are still there.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import random
import secrets
import signal
import typing
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from batch import storage
from batch.config import Credentials, RunConfig
from batch.enos.client import ClientConfig, EnosClient
from batch.errors import AbortedError, BatchError, InventoryError, StorageError, UsageError
from batch.inventory import read as inventory
from batch.model import Device, InvalidRow, KeyMode
from batch.outputs import html as html_report
from batch.outputs import metrics, next_inventory, notify, report
from batch.plan.saved import check_plan, config_plan_options
from batch.renew import verify
from batch.renew.device import Renewer
from batch.renew.keypool import KeyPool
from batch.renew.limiter import RateLimiter
from batch.renew.retry import RetryPolicy
from batch.run.canary import CanaryRule, canary_size
from batch.run.loop import Batch
from batch.run.progress import Progress
from batch.store import rescue
from batch.store.journal import Journal, JournalError
from batch.store.outdir import OutDir

log = logging.getLogger(__name__)

EXIT_SIGNALS = {signal.SIGINT: 130, signal.SIGTERM: 143}
JOURNAL_NAME = "journal.sqlite"
DRY_RUN_DIR = "dry-run"
E = typing.TypeVar("E", bound=BaseException)


async def run(config: RunConfig) -> report.Summary:
    """Run the whole job; returns the summary (also written to summary.json)."""
    # The objects of the imports (pandas, pyarrow, cryptography: ~1M) live as long as the
    # process: keep them out of the garbage collector's full scans during the run.
    gc.freeze()
    started = datetime.now(UTC)
    rows, fingerprint, total_rows = _open_inventory(config)
    with contextlib.ExitStack() as claims:
        # Held until the last output is written: no other command writes into this --out.
        claims.enter_context(OutDir.claim(config.out_dir))
        if config.dry_run:  # its own folder: a dry run never replaces a campaign's outputs
            config = dataclasses.replace(config, out_dir=output_folder(config))
            claims.enter_context(OutDir.claim(config.out_dir))
        return await _run_claimed(config, rows, fingerprint, total_rows, started)


@contextlib.contextmanager
def _fewer_young_collections() -> Iterator[None]:
    """While devices are renewed: a young collection every 10,000 allocations, not 700.

    A renewal allocates hundreds of short-lived objects (aiohttp, answers, outcomes): at 700 a
    young collection ran every few devices, 4 % of a 3,000-device run's CPU (gc.callbacks), and
    at 10,000 most of those objects are freed by refcount before any scan. Restored before the
    end-of-run reports (their garbage is collected as usual) and for a caller's process.
    """
    threshold = gc.get_threshold()
    gc.set_threshold(10_000, 10, 10)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)


def output_folder(config: RunConfig) -> Path:
    """Where the run's report and summary go: --out, or --out/dry-run/ for a dry run."""
    return config.out_dir / DRY_RUN_DIR if config.dry_run else config.out_dir


async def _run_claimed(
    config: RunConfig,
    rows: Iterator[Device | InvalidRow],
    fingerprint: str,
    total_rows: int,
    started: datetime,
) -> report.Summary:
    """The run, once its output folder is claimed (`OutDir.claim` created it)."""
    batch: Batch | None = None
    closing: StorageError | None = None
    try:
        async with contextlib.AsyncExitStack() as stack:
            batch = await _set_up(config, stack, fingerprint, total_rows)
            with _signals(batch), _fewer_young_collections():
                try:
                    await batch.run(rows)
                except* AbortedError as group:
                    batch.aborted = _first_message(group)
                    log.error("aborted: %s", batch.aborted)
                except* InventoryError as group:
                    # The whole file was read before anything was sent (`_open_inventory`): only
                    # a file changed during the run gets here. Once requests have gone out, exit
                    # 2 ("nothing was sent") would be false: the run aborts (exit 3).
                    if batch.renewer is None or batch.renewer.limiter.acquired == 0:
                        raise InventoryError(_first_message(group)) from None
                    reason = _first_message(group)
                    batch.aborted = f"the inventory became unreadable during the run: {reason}"
                    log.error("aborted: %s", batch.aborted)
                except* StorageError as group:  # a journal read failed mid-run (I/O error)
                    batch.storage_error = batch.storage_error or _first(group)
                except* JournalError as group:  # a damaged page found mid-run: exit 2 as well
                    raise _first(group) from None
    except StorageError as exc:
        if batch is None:
            raise  # at set-up: nothing was sent
        closing = exc  # report.csv's last rows could not be flushed
    writes = _Writes(batch.storage_error or closing)
    summary = _finish(config, batch, started, writes)
    await _publish(config, summary, batch, writes)
    if writes.failure is not None:
        raise writes.failure
    return summary


class _Writes:
    """Outputs written one by one after a storage failure: each is attempted, the first
    refusal is kept (it ends the run with exit 4)."""

    def __init__(self, failure: StorageError | None) -> None:
        self.failure = failure

    def attempt(self, what: str, write: Callable[[], object]) -> None:
        try:
            with storage.translated(f"cannot write {what}"):
                write()
        except StorageError as exc:
            log.error("%s", exc.message)
            self.failure = self.failure or exc


def _open_inventory(config: RunConfig) -> tuple[Iterator[Device | InvalidRow], str, int]:
    """The inventory's rows, SHA-256 and row count, after every check that can refuse the run.

    Opening the inventory checks the file and its header, the whole file is read once to find
    damage anywhere in it, and a saved plan is checked against it: a bad file or a changed plan
    stops the run (exit 2) before anything starts, the sandbox simulator included.
    """
    rows = inventory.read_inventory(
        config.inventory, fmt=config.inventory_format, default_org=config.org_id
    )
    # A file damaged at row 50,000 must stop the run before the devices above it are renewed.
    inventory.check_readable(
        config.inventory, fmt=config.inventory_format, default_org=config.org_id
    )
    fingerprint = inventory.inventory_fingerprint(config.inventory)
    if config.plan_file is not None:
        options = config_plan_options(config)
        check_plan(config.plan_file, inventory_sha256=fingerprint, options=options)
    return rows, fingerprint, inventory.count_rows(config.inventory, fmt=config.inventory_format)


async def _set_up(
    config: RunConfig, stack: contextlib.AsyncExitStack, fingerprint: str, total_rows: int
) -> Batch:
    """Endpoint, journal, client, report writer and progress, closed by `stack`."""
    journal = None
    renewer = None
    if not config.dry_run:  # a dry run sends nothing: it needs no endpoint or credentials
        _refuse_outputs_without_journal(config)
        api_url, credentials = await _endpoint(config, stack)
        journal = await Journal.open(config.out_dir / JOURNAL_NAME, durable=config.durable_journal)
        stack.push_async_callback(journal.close)
        await _tidy(config, journal)
        _explain_inventory_change(journal, fingerprint)
        await journal.set_meta("inventory_sha256", fingerprint)
        renewer = await _renewer(config, stack, journal, api_url, credentials)
    writer = stack.enter_context(report.ReportWriter(config.out_dir))
    progress = Progress(
        mode=config.progress,
        total=None if config.shard else total_rows,  # other shards' rows are not counted
        interval=config.log_interval,
    )
    stack.callback(progress.close)
    return Batch(
        config,
        renewer=renewer,
        journal=journal,
        writer=writer,
        progress=progress,
        canary=_canary_rule(config, total_rows),
    )


def _refuse_outputs_without_journal(config: RunConfig) -> None:
    """Refuse (exit 2) to start over in a folder whose campaign lost its journal.

    Without the journal every device looks new: a finished campaign would be renewed again
    (its old certificates are superseded, so EnOS answers cert_revoked) and its report replaced.
    """
    path = config.out_dir / JOURNAL_NAME
    wal = path.with_name(f"{path.name}-wal")  # a killed first run may hold it all there
    if any(p.exists() and p.stat().st_size > 0 for p in (path, wal)):
        return
    found = storage.campaign_outputs(config.out_dir)
    if found:
        state = "is empty" if path.exists() else "is missing"
        raise JournalError(
            f"{config.out_dir} holds a campaign's outputs ({', '.join(found)}) but its journal "
            f"{path} {state}: refusing to run, nothing was sent or changed. Restore the journal "
            "from a backup and rerun, or start a new campaign deliberately with a new --out"
        )


async def _tidy(config: RunConfig, journal: Journal) -> None:
    """With the folder locked: drop what killed runs left, take in certificates they kept."""
    with storage.translated(f"cannot tidy {config.out_dir}"):
        removed = storage.clean_temporaries(config.out_dir)
    if removed:
        log.info("removed temporary files left by an interrupted run: %s", ", ".join(removed))
    await rescue.recover(journal, rescue.folder_for(config.rescue_root, config.out_dir))


async def _publish(
    config: RunConfig, summary: report.Summary, batch: Batch, writes: _Writes
) -> None:
    """report.html, metrics.prom and the notification, once the summary is written."""
    if (config.out_dir / report.REPORT_PARQUET).exists():
        # Charts take a second or more for a large report: keep them off the event loop.
        samples = batch.timeline.samples
        await asyncio.to_thread(
            writes.attempt,
            "report.html",
            lambda: html_report.write_html_report(config.out_dir, summary, samples),
        )
        writes.attempt("metrics.prom", lambda: metrics.write_metrics(config.out_dir, summary))
    else:
        log.error("report.html and metrics.prom not written: they are made from report.parquet")
    if config.notify_url:
        await notify.notify(config.notify_url, summary)  # a failure is logged, never fatal


def _first_message(group: BaseExceptionGroup[BatchError]) -> str:
    """The message of the first error (task groups nest them)."""
    return str(_first(group))


def _first(group: BaseExceptionGroup[E]) -> E:
    """The first error of a (nested) group."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return typing.cast(E, first)


async def _endpoint(config: RunConfig, stack: contextlib.AsyncExitStack) -> tuple[str, Credentials]:
    """The API URL and credentials: the configured ones, or a sandbox simulator's."""
    if not config.sandbox:
        assert config.api_url is not None
        return config.api_url, config.credentials or Credentials(app_key="", app_secret="")
    from batch.simulator import SimulatorConfig
    from batch.simulator.testing import running_simulator

    creds = Credentials(app_key=f"sandbox-{secrets.token_hex(4)}", app_secret=secrets.token_hex(16))
    sim_config = SimulatorConfig(
        app_key=creds.app_key,
        app_secret=creds.app_secret,
        org_id=config.org_id or "o-sandbox",
        seed=0,
    )
    sim = await stack.enter_async_context(running_simulator(sim_config, fleet=config.inventory))
    log.info("sandbox: built-in EnOS simulator at %s (no real device is touched)", sim.url)
    return str(sim.url), creds


async def _renewer(
    config: RunConfig,
    stack: contextlib.AsyncExitStack,
    journal: Journal,
    api_url: str,
    credentials: Credentials,
) -> Renewer:
    client = await stack.enter_async_context(
        EnosClient(
            ClientConfig(
                base_url=api_url,
                app_key=credentials.app_key,
                app_secret=credentials.app_secret,
                params_in=config.params_in,
                timeout_s=config.timeout_s,
                ca_bundle=str(config.ca_bundle) if config.ca_bundle else None,
            ),
            connector_limit=config.workers,
        )
    )
    key_pool = stack.enter_context(ThreadPoolExecutor(max_workers=os.cpu_count() or 1))
    # One thread for bundle files: they are system calls on one folder, which the kernel
    # serialises anyway; more threads only add GIL hand-offs.
    file_pool = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="bundles"))
    # Checks come in batches (one per event-loop tick): one thread keeps up, and it never waits
    # behind the key generations of key_pool.
    check_pool = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="checks"))
    keys_ahead = None
    if config.key_mode is KeyMode.RSA2048:  # an EC key takes 0.03 ms: a process costs more
        keys_ahead = await stack.enter_async_context(
            KeyPool.started(config.key_mode, fallback=key_pool)
        )
    return Renewer(
        pinned_cas=_pinned_cas(config),
        client=client,
        limiter=RateLimiter(config.rate),
        journal=journal,
        out_dir=config.out_dir,
        key_mode=config.key_mode,
        key_pool=key_pool,
        file_pool=file_pool,
        check_pool=check_pool,
        keys_ahead=keys_ahead,
        policy=RetryPolicy(max_attempts=config.max_attempts),
        valid_days=config.valid_days,
        due_rule=config.due_rule,
        renew_current=config.renew_current,
        pkcs12_passphrase=config.pkcs12_passphrase,
        rng=random.Random(),
        rescue_folder=rescue.folder_for(config.rescue_root, config.out_dir),
    )


def _pinned_cas(config: RunConfig) -> tuple[x509.Certificate, ...]:
    """Every CA certificate of the --pin-ca files; a file without one is a usage error."""
    pinned: list[x509.Certificate] = []
    for path in config.pin_ca:
        try:
            pinned.extend(verify.load_pinned(path.read_bytes(), str(path)))
        except (OSError, ValueError) as exc:
            raise UsageError(str(exc)) from exc
    return tuple(pinned)


def _canary_rule(config: RunConfig, total_rows: int) -> CanaryRule | None:
    if config.canary is None:
        return None
    return CanaryRule(
        size=canary_size(config.canary, total_rows),
        max_failure_rate=config.canary_max_failures,
    )


def _explain_inventory_change(journal: Journal, fingerprint: str) -> None:
    earlier = journal.get_meta("inventory_sha256")
    if earlier is None or earlier == fingerprint:
        return
    log.warning(
        "the inventory changed since the last run in this output folder: devices finished "
        "earlier are skipped, new rows run, and devices no longer listed are named in summary.json"
    )


@contextlib.contextmanager
def _signals(batch: Batch) -> Iterator[None]:
    """SIGTERM/SIGINT set the batch's stop event instead of killing the process mid-write."""
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if batch.stop_signal is None:
            batch.stop_signal = sig
            log.warning("received %s", sig.name)
        batch.stop.set()

    for sig in EXIT_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield
    finally:
        for sig in EXIT_SIGNALS:
            loop.remove_signal_handler(sig)


def _finish(config: RunConfig, batch: Batch, started: datetime, writes: _Writes) -> report.Summary:
    """Parquet copy, retry list and summary.json, however the run ended."""
    tally = batch.tally
    limiter = batch.renewer.limiter if batch.renewer is not None else None
    os.sync()  # bundles are written without fsync each (the journal is the durable record)
    writes.attempt(report.REPORT_PARQUET, lambda: report.finish_reports(config.out_dir))
    writes.attempt(report.RETRY_CSV, lambda: report.write_retry_csv(config.out_dir, tally.retry))
    if writes.failure is not None:
        exit_code = writes.failure.exit_code
    elif batch.stop_signal is not None:
        exit_code = EXIT_SIGNALS[batch.stop_signal]
    else:
        exit_code = report.exit_code_for(tally.campaign, aborted=batch.aborted is not None)
    vanished = batch.vanished() if batch.journal is not None else []
    summary = report.Summary(
        counts_by_status=dict(tally.by_status),
        counts_by_class=dict(tally.by_class),
        devices=sum(tally.by_status.values()),
        requests=limiter.acquired if limiter else 0,
        request_span_s=limiter.span if limiter else None,
        started=started,
        finished=datetime.now(UTC),
        configured_rate=config.rate,
        exit_code=exit_code,
        aborted_reason=batch.aborted,
        sandbox=config.sandbox,
        extra={
            "campaign": {status.value: n for status, n in tally.campaign.items()},
            "outOfShard": tally.out_of_shard,
            "throttled": limiter.throttled if limiter else 0,
            "stoppedBy": batch.stop_signal.name if batch.stop_signal else None,
            "vanished": len(vanished),
            "vanishedDevices": vanished[:100],
            "dryRun": config.dry_run,
            "caChanges": batch.renewer.ca_changes if batch.renewer is not None else 0,
            "storageError": writes.failure.message if writes.failure else None,
        },
    )
    writes.attempt(report.SUMMARY_JSON, lambda: report.write_summary(config.out_dir, summary))
    next_inventory.write_for_run(config, config.out_dir / report.REPORT_PARQUET)
    return summary
