"""The `fleet-renew` command: argv -> RunConfig -> pipeline -> exit code.

Exit codes (a scheduler can act on them):
  0    every device renewed or skipped
  1    some devices failed or were invalid (see report.csv and retry.csv)
  2    usage, configuration, inventory-file or --out error, --out in use, or a damaged or
       missing journal (nothing was sent)
  3    aborted: authentication refused, circuit breaker, or inventory unreadable mid-run
  4    storage refused a write (disk full, read-only, permission lost): free it, rerun
  130  stopped by SIGINT, 143 stopped by SIGTERM (rerun the same command to resume)
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from batch import config as cfg
from batch.errors import BatchError
from batch.model import KeyMode, ParamPlacement
from batch.run.canary import parse_share

EXIT_CODES = __doc__.split("Exit codes", 1)[1].split("\n", 1)[1] if __doc__ else ""

log = logging.getLogger("batch")


class _Commands(click.Group):
    """The CLI's commands; `simulate` is imported only when it is asked for.

    The simulator pulls in aiohttp's server side (~0.25 s and a few MB at every start), which
    `run`, `plan` and `merge` never use.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), "simulate"])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "simulate":
            from batch.simulator.command import simulate

            return simulate
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=_Commands,
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
    epilog="Exit codes:\n\n" + EXIT_CODES.replace("\n", "\n\n"),
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug details (never secrets).")
@click.version_option(package_name="fleet-renew")
def main(verbose: bool) -> None:
    """Renew the X.509 certificates of a fleet of EnOS devices, safely and in bulk."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _inventory_options(fn: Any) -> Any:
    fn = click.option(
        "--org",
        envvar=cfg.ENV_ORG_ID,
        show_envvar=True,
        help="orgId for rows whose inventory has no orgId column or an empty one.",
    )(fn)
    fn = click.option(
        "--format",
        "inventory_format",
        type=click.Choice(["csv", "parquet"]),
        default=None,
        help="Inventory format. [default: from the file extension]",
    )(fn)
    return click.argument("inventory", type=click.Path(path_type=Path))(fn)


# What is renewed and how: shared by `plan` and `run`, and recorded in a saved plan.
_SCOPE_OPTIONS = [
    click.option(
        "--rate",
        type=float,
        default=cfg.DEFAULT_RATE,
        help="Renewal API requests per second (never exceeded in any one-second window; "
        "cut on HTTP 429, then recovered).",
    ),
    click.option(
        "--key-mode",
        type=click.Choice([m.value for m in KeyMode]),
        default=KeyMode.REUSE.value,
        help="reuse: no CSR, EnOS re-issues for the existing key; rsa2048/ec256: a new "
        "key and CSR per device; csr-column: the CSR file named by csrPath.",
    ),
    click.option(
        "--valid-days",
        type=int,
        default=None,
        help="Validity of the new certificates in days, unless the row has validDay. Without "
        "either, no validDay is sent: EnOS applies its deployment's default (730 on the English "
        "pages) and the report shows what it granted; a default above the product's maximum "
        "fails as invalid_request, asking for this option.  [default: none sent]",
    ),
    click.option(
        "--params-in",
        type=click.Choice([p.value for p in ParamPlacement]),
        default=ParamPlacement.BOTH.value,
        show_default=True,
        help="Where Renew's certSn/validDay/issueAuthority go: body (the cloud Renew pages), "
        "query (the Edge Renew page) or both (works on either; use one only for a gateway "
        "that refuses the other).",
    ),
    click.option(
        "--shard",
        default=None,
        metavar="I/N",
        help="Only devices whose stable hash falls in shard I of N (0-based). [default: all]",
    ),
    click.option(
        "--renew-within",
        type=int,
        default=None,
        metavar="DAYS",
        help="Maintenance mode: renew only certificates expiring within DAYS (looked up with "
        "List Certificate unless the inventory has notAfter); others are skipped as not_due; "
        "soonest expiry first. [default: renew every device]",
    ),
    click.option(
        "--renew-at-fraction",
        type=float,
        default=None,
        metavar="F",
        help="Maintenance mode: also renew certificates past this share of their lifetime, "
        "e.g. 0.67. [default: off]",
    ),
    click.option(
        "--renew-current",
        is_flag=True,
        help="When a device's inventory certSn was superseded by a newer valid certificate "
        "(List Certificate shows it), renew that current certificate. [default: off: the device "
        "is reported skipped, 'superseded: current certificate <sn> expires <date>'; maintenance "
        "mode decides from the current certificate whether it is due either way]",
    ),
]

_RUN_OPTIONS = [
    click.option(
        "--out",
        "out_dir",
        type=click.Path(path_type=Path),
        required=True,
        help="Output folder: report, summary, bundles, journal. Rerun with the same folder "
        "to resume.",
    ),
    click.option(
        "--api-url",
        envvar=cfg.ENV_API_URL,
        show_envvar=True,
        help="EnOS API gateway, e.g. https://apim-ppe1.envisioniot.com. Credentials come "
        f"from {cfg.ENV_APP_KEY} and {cfg.ENV_APP_SECRET} only.",
    ),
    click.option(
        "--sandbox",
        is_flag=True,
        help="Start the built-in EnOS simulator on loopback, seeded from the inventory, "
        "and run against it. Touches no real device.",
    ),
    click.option(
        "--concurrency",
        type=int,
        default=None,
        help="Devices in flight at once. [default: --rate x "
        f"{cfg.DEVICE_SECONDS:g} s, at least {cfg.MIN_WORKERS}, at most {cfg.MAX_WORKERS}]",
    ),
    click.option(
        "--max-attempts",
        type=int,
        default=5,
        help="Attempts per device for retryable errors (99500, 429, timeouts, resets).",
    ),
    click.option(
        "--ca-bundle",
        type=click.Path(path_type=Path),
        default=None,
        help="Extra CA certificates (PEM) for a private gateway. TLS verification is "
        "always on. [default: system CAs]",
    ),
    click.option(
        "--pin-ca",
        type=click.Path(path_type=Path),
        multiple=True,
        metavar="FILE",
        help="CA certificates (PEM, one or a bundle; repeatable) that issued certificates must "
        "chain to; any other is kept but fails as verification_failed. [default: no pin: a "
        "CA not seen before in the campaign is accepted, noted on its row and counted in "
        "summary.json]",
    ),
    click.option(
        "--timeout",
        "timeout_s",
        type=float,
        default=30.0,
        help="Seconds to wait for one API answer.",
    ),
    click.option(
        "--dry-run",
        is_flag=True,
        help="Read and plan, send nothing (no --api-url or credentials needed); the report "
        "goes to OUT/dry-run/, never over a campaign's outputs.",
    ),
    click.option(
        "--pkcs12",
        is_flag=True,
        help=f"Also write bundle.p12 for generated keys; passphrase from {cfg.ENV_P12_PASSPHRASE}.",
    ),
    click.option(
        "--retry-failed",
        is_flag=True,
        help="On a rerun, retry devices that failed permanently in earlier runs.",
    ),
    click.option(
        "--plan",
        "plan_file",
        type=click.Path(path_type=Path),
        default=None,
        help="A plan saved by `plan --save`: refuse to run (exit 2) if the inventory or the "
        "options changed since. [default: no check]",
    ),
    click.option(
        "--canary",
        default=None,
        metavar="N|N%",
        help="Renew N devices (or N% of the rows) first, spread across orgs and products, and "
        "go on only if they pass. [default: no canary]",
    ),
    click.option(
        "--canary-max-failures",
        default="0%",
        metavar="P%",
        help="Share of the canary that may fail before the run stops (exit 3).",
    ),
    click.option(
        "--abort-after-failures",
        type=int,
        default=50,
        help="Stop (exit 3) after more than this many consecutive failures of one class.",
    ),
    click.option(
        "--abort-failure-rate",
        default=None,
        metavar="P%",
        help="Stop (exit 3) once more than this share of finished devices failed "
        "(after --abort-min-sample). [default: off]",
    ),
    click.option(
        "--abort-min-sample",
        type=int,
        default=100,
        help="Finished devices needed before --abort-failure-rate applies.",
    ),
    click.option(
        "--notify-url",
        default=None,
        metavar="URL",
        help="POST the summary JSON (with a Slack-compatible `text` field) here when the run "
        "ends; a failed notification is logged and never changes the exit code. "
        "[default: none]",
    ),
    click.option(
        "--grace-seconds",
        type=float,
        default=30.0,
        help="On SIGTERM/SIGINT, how long in-flight devices may take to finish.",
    ),
    click.option(
        "--progress",
        type=click.Choice(["auto", "bar", "log", "off"]),
        default="auto",
        help="auto: a bar on a terminal, a log line every --log-interval otherwise.",
    ),
    click.option(
        "--log-interval",
        type=float,
        default=5.0,
        help="Seconds between progress log lines when not on a terminal.",
    ),
    click.option(
        "--rescue-dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help="If the journal cannot take a certificate EnOS issued (disk full, read-only), it "
        "is kept in a 0600 file here until the next run takes it (rerun with the same value). "
        "[default: $TMPDIR, else /tmp]",
    ),
    click.option(
        "--durable-journal/--no-durable-journal",
        default=True,
        help="fsync the journal before each request leaves (turn off only to measure).",
    ),
]


F = TypeVar("F", bound=Callable[..., Any])


def _with(options: list[Callable[[F], F]]) -> Callable[[F], F]:
    """Apply a list of click options, first listed first in --help."""

    def decorate(fn: F) -> F:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


@main.command(epilog="Exit codes:\n\n" + EXIT_CODES.replace("\n", "\n\n"))
@_inventory_options
@_with(_SCOPE_OPTIONS)
@_with(_RUN_OPTIONS)
def run(**options: Any) -> None:
    """Renew the certificates of every device in INVENTORY (CSV or Parquet)."""
    config = _run_config(options)
    from batch.outputs.report import render_summary
    from batch.run.job import output_folder
    from batch.run.job import run as run_pipeline

    summary = asyncio.run(run_pipeline(config))
    click.echo(render_summary(summary), err=True)
    click.echo(f"report:  {output_folder(config) / 'report.csv'} (and report.html)", err=True)
    if not config.dry_run:
        click.echo(f"bundles: {config.out_dir / 'bundles'}", err=True)
    sys.exit(summary.exit_code)


def _run_config(options: dict[str, Any]) -> cfg.RunConfig:
    try:
        abort_rate = options["abort_failure_rate"]
        return cfg.RunConfig(
            inventory=options["inventory"],
            out_dir=options["out_dir"],
            inventory_format=options["inventory_format"],
            org_id=options["org"],
            api_url=options["api_url"],
            credentials=cfg.credentials_from_env(),
            sandbox=options["sandbox"],
            rate=options["rate"],
            concurrency=options["concurrency"],
            max_attempts=options["max_attempts"],
            valid_days=options["valid_days"],
            key_mode=KeyMode(options["key_mode"]),
            params_in=ParamPlacement(options["params_in"]),
            ca_bundle=options["ca_bundle"],
            pin_ca=tuple(options["pin_ca"]),
            timeout_s=options["timeout_s"],
            dry_run=options["dry_run"],
            pkcs12_passphrase=cfg.pkcs12_passphrase_from_env() if options["pkcs12"] else None,
            retry_failed=options["retry_failed"],
            renew_current=options["renew_current"],
            grace_seconds=options["grace_seconds"],
            abort_after_failures=options["abort_after_failures"],
            abort_failure_rate=(
                parse_share(abort_rate, what="--abort-failure-rate") if abort_rate else None
            ),
            abort_min_sample=options["abort_min_sample"],
            canary=options["canary"],
            canary_max_failures=parse_share(
                options["canary_max_failures"], what="--canary-max-failures"
            ),
            plan_file=options["plan_file"],
            notify_url=options["notify_url"],
            shard=_shard(options),
            renew_within=options["renew_within"],
            renew_at_fraction=options["renew_at_fraction"],
            durable_journal=options["durable_journal"],
            progress=options["progress"],
            log_interval=options["log_interval"],
            rescue_dir=options["rescue_dir"],
        )
    except BatchError as exc:
        raise click.UsageError(exc.message) from exc


def _shard(options: dict[str, Any]) -> cfg.Shard | None:
    return cfg.Shard.parse(options["shard"]) if options["shard"] else None


@main.command()
@_inventory_options
@_with(_SCOPE_OPTIONS)
@click.option(
    "--save",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the plan (with the inventory's hash and these options) to this JSON file, "
    "for `run --plan`. [default: not saved]",
)
def plan(**options: Any) -> None:
    """Validate INVENTORY and show what a run would do, without renewing anything."""
    from batch.inventory.read import inventory_fingerprint
    from batch.plan.preview import plan_inventory, render_plan
    from batch.plan.saved import plan_options, save_plan

    try:
        shard = _shard(options)
    except BatchError as exc:
        raise click.UsageError(exc.message) from exc
    result = plan_inventory(
        options["inventory"],
        fmt=options["inventory_format"],
        default_org=options["org"],
        shard=shard,
    )
    click.echo(render_plan(result, rate=options["rate"]))
    if options["save"] is not None:
        scope = plan_options(
            org_id=options["org"],
            inventory_format=options["inventory_format"],
            shard=shard,
            key_mode=KeyMode(options["key_mode"]),
            valid_days=options["valid_days"],
            params_in=options["params_in"],
            renew_within=options["renew_within"],
            renew_at_fraction=options["renew_at_fraction"],
            renew_current=options["renew_current"],
        )
        save_plan(
            options["save"],
            inventory_sha256=inventory_fingerprint(options["inventory"]),
            options=scope,
            counts=result.counts(),
        )
        click.echo(f"plan saved to {options['save']}; run it with --plan {options['save']}")


@main.command()
@click.argument("shard_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder for the merged report.csv/.parquet, summary.json and retry.csv.",
)
def merge(shard_dirs: tuple[Path, ...], out_dir: Path) -> None:
    """Merge the output folders of a sharded run (`run --shard I/N`) into one report.

    Exits with the merged exit code: 3 if any shard aborted, 1 if any device failed or was
    invalid, 0 otherwise (130/143 if a shard was stopped by a signal).
    """
    from batch.outputs.merge import merge_outputs
    from batch.outputs.report import render_summary

    summary = merge_outputs(list(shard_dirs), out_dir)
    click.echo(render_summary(summary), err=True)
    sys.exit(summary.exit_code)


def entry() -> None:
    """Console-script entry: batch errors become their exit codes, with a clear message."""
    try:
        main(standalone_mode=True)
    except BatchError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
