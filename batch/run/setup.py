"""Everything a run needs before its first row: the checked inventory, the endpoint, the journal,
the client and renewer, the report writer and progress, wired into a `RunLoop`.

Every check that can refuse the run comes before anything in `--out` is changed: a bad
inventory or a changed saved plan, and an output folder whose journal is damaged, or gone while
a campaign's outputs are still there (all exit 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from batch import storage
from batch.config import Credentials, KeyPolicy, Outputs, RunConfig, Scope
from batch.enos.client import ClientConfig, EnosClient
from batch.errors import UsageError
from batch.inventory import read as inventory
from batch.model import Device, InvalidRow
from batch.outputs import report
from batch.plan.saved import check_plan, plan_options
from batch.renew import verify
from batch.renew.device import Renewer
from batch.renew.limiter import RateLimiter
from batch.renew.retry import RetryPolicy
from batch.run.canary import CanaryRule, canary_size
from batch.run.loop import RunLoop
from batch.run.progress import Progress
from batch.store import rescue
from batch.store.journal import Journal, JournalError

log = logging.getLogger(__name__)

JOURNAL_NAME = "journal.sqlite"


@dataclass(frozen=True, slots=True)
class Timing:
    """The run's monotonic clock, sleep and RNG: the real ones, or a test's (`FakeClock`).

    They reach the rate limiter, the retries, the token refresh jitter, the progress line and
    the timeline. The EnOS client keeps the wall clock: request signatures carry real time. The
    progress and timeline tickers wake on the event loop's timer and read `clock`: on a fake
    sleep, which returns at once, a ticker would spin and run the fake time away.
    """

    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)


def open_inventory(config: RunConfig) -> tuple[Iterator[Device | InvalidRow], str, int]:
    """The inventory's rows, SHA-256 and row count, after every check that can refuse the run.

    Opening the inventory checks the file and its header, the whole file is read once to find
    damage anywhere in it, and a saved plan is checked against it: a bad file, a changed plan or
    a --pin-ca file without a CA stops the run (exit 2) before anything starts, the sandbox
    simulator included, and before --out is created.
    """
    _pinned_cas(config.keys)  # read again by the renewer: a few small files, once each
    scope = config.scope
    rows = inventory.read_inventory(
        scope.inventory, fmt=scope.inventory_format, default_org=scope.org_id
    )
    # A file damaged at row 50,000 must stop the run before the devices above it are renewed.
    inventory.check_readable(scope.inventory, fmt=scope.inventory_format, default_org=scope.org_id)
    fingerprint = inventory.inventory_fingerprint(scope.inventory)
    if config.plan_file is not None:
        options = plan_options(scope, config.keys)
        check_plan(config.plan_file, inventory_sha256=fingerprint, options=options)
    return rows, fingerprint, inventory.count_rows(scope.inventory, fmt=scope.inventory_format)


async def set_up(
    config: RunConfig,
    stack: contextlib.AsyncExitStack,
    fingerprint: str,
    total_rows: int,
    timing: Timing,
) -> RunLoop:
    """Endpoint, journal, client, report writer and progress, closed by `stack`."""
    journal = None
    renewer = None
    out = config.outputs
    if not config.dry_run:  # a dry run sends nothing: it needs no endpoint or credentials
        _refuse_outputs_without_journal(out.out_dir)
        api_url, credentials = await _endpoint(config, stack)
        journal = await Journal.open(out.out_dir / JOURNAL_NAME, durable=out.durable_journal)
        stack.push_async_callback(journal.close)
        await _tidy(out, journal)
        _explain_inventory_change(journal, fingerprint)
        await journal.set_meta("inventory_sha256", fingerprint)
        renewer = await _renewer(config, stack, journal, api_url, credentials, timing)
    writer = stack.enter_context(report.ReportWriter(out.out_dir))
    progress = Progress(
        mode=out.progress,
        total=None if config.scope.shard else total_rows,  # other shards' rows are not counted
        interval=out.log_interval,
        clock=timing.clock,
    )
    stack.callback(progress.close)
    return RunLoop(
        config,
        renewer=renewer,
        journal=journal,
        writer=writer,
        progress=progress,
        canary=_canary_rule(config.scope, total_rows),
        clock=timing.clock,
    )


def _refuse_outputs_without_journal(out_dir: Path) -> None:
    """Refuse (exit 2) to start over in a folder whose campaign lost its journal.

    Without the journal every device looks new: a finished campaign would be renewed again
    (its old certificates are superseded, so EnOS answers cert_revoked) and its report replaced.
    """
    path = out_dir / JOURNAL_NAME
    wal = path.with_name(f"{path.name}-wal")  # a killed first run may hold it all there
    if any(p.exists() and p.stat().st_size > 0 for p in (path, wal)):
        return
    found = storage.campaign_outputs(out_dir)
    if found:
        state = "is empty" if path.exists() else "is missing"
        raise JournalError(
            f"{out_dir} holds a campaign's outputs ({', '.join(found)}) but its journal "
            f"{path} {state}: refusing to run, nothing was sent or changed. Restore the journal "
            "from a backup and rerun, or start a new campaign deliberately with a new --out"
        )


async def _tidy(outputs: Outputs, journal: Journal) -> None:
    """With the folder locked: drop what killed runs left, take in certificates they kept."""
    with storage.translated(f"cannot tidy {outputs.out_dir}"):
        removed = storage.clean_temporaries(outputs.out_dir)
    if removed:
        log.info("removed temporary files left by an interrupted run: %s", ", ".join(removed))
    await rescue.recover(journal, rescue.folder_for(outputs.rescue_root, outputs.out_dir))


async def _endpoint(config: RunConfig, stack: contextlib.AsyncExitStack) -> tuple[str, Credentials]:
    """The API URL and credentials: the configured ones, or a sandbox simulator's."""
    endpoint = config.endpoint
    if not endpoint.sandbox:
        assert endpoint.api_url is not None
        return endpoint.api_url, endpoint.credentials or Credentials(app_key="", app_secret="")
    from batch.simulator import SimulatorConfig
    from batch.simulator.testing import running_simulator

    creds = Credentials(app_key=f"sandbox-{secrets.token_hex(4)}", app_secret=secrets.token_hex(16))
    sim_config = SimulatorConfig(
        app_key=creds.app_key,
        app_secret=creds.app_secret,
        org_id=config.scope.org_id or "o-sandbox",
        seed=0,
    )
    fleet = config.scope.inventory
    sim = await stack.enter_async_context(running_simulator(sim_config, fleet=fleet))
    log.info("sandbox: built-in EnOS simulator at %s (no real device is touched)", sim.url)
    return str(sim.url), creds


async def _renewer(
    config: RunConfig,
    stack: contextlib.AsyncExitStack,
    journal: Journal,
    api_url: str,
    credentials: Credentials,
    timing: Timing,
) -> Renewer:
    client = await stack.enter_async_context(
        EnosClient(
            ClientConfig(
                base_url=api_url,
                app_key=credentials.app_key,
                app_secret=credentials.app_secret,
                params_in=config.keys.params_in,
                timeout_s=config.limits.timeout_s,
                ca_bundle=str(config.endpoint.ca_bundle) if config.endpoint.ca_bundle else None,
            ),
            connector_limit=config.limits.workers,
            rng=timing.rng,
        )
    )
    key_pool = stack.enter_context(ThreadPoolExecutor(max_workers=os.cpu_count() or 1))
    # One thread for bundle files: they are system calls on one folder, which the kernel
    # serialises anyway; more threads only add GIL hand-offs.
    file_pool = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="bundles"))
    # Checks come in batches (one per event-loop tick): one thread keeps up, and it never waits
    # behind the key generations of key_pool.
    check_pool = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="checks"))
    return Renewer(
        pinned_cas=_pinned_cas(config.keys),
        client=client,
        limiter=RateLimiter(config.limits.rate, clock=timing.clock, sleep=timing.sleep),
        journal=journal,
        out_dir=config.outputs.out_dir,
        key_mode=config.keys.key_mode,
        key_pool=key_pool,
        file_pool=file_pool,
        check_pool=check_pool,
        policy=RetryPolicy(max_attempts=config.limits.max_attempts),
        valid_days=config.keys.valid_days,
        due_rule=config.scope.due_rule,
        renew_current=config.scope.renew_current,
        pkcs12_passphrase=config.keys.pkcs12_passphrase,
        rng=timing.rng,
        clock=timing.clock,
        sleep=timing.sleep,
        rescue_folder=rescue.folder_for(config.outputs.rescue_root, config.outputs.out_dir),
    )


def _pinned_cas(keys: KeyPolicy) -> tuple[x509.Certificate, ...]:
    """Every CA certificate of the --pin-ca files; a file without one is a usage error."""
    pinned: list[x509.Certificate] = []
    for path in keys.pin_ca:
        try:
            pinned.extend(verify.load_pinned(path.read_bytes(), str(path)))
        except (OSError, ValueError) as exc:
            raise UsageError(str(exc)) from exc
    return tuple(pinned)


def _canary_rule(scope: Scope, total_rows: int) -> CanaryRule | None:
    if scope.canary is None:
        return None
    return CanaryRule(
        size=canary_size(scope.canary, total_rows),
        max_failure_rate=scope.canary_max_failures,
    )


def _explain_inventory_change(journal: Journal, fingerprint: str) -> None:
    earlier = journal.get_meta("inventory_sha256")
    if earlier is None or earlier == fingerprint:
        return
    log.warning(
        "the inventory changed since the last run in this output folder: devices finished "
        "earlier are skipped, new rows run, and devices no longer listed are named in summary.json"
    )
