"""The `fleet-renew` command: argv -> RunConfig -> run -> exit code.

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
from pathlib import Path
from typing import Any

import click

from batch.cli.options import (
    RUN_OPTIONS,
    SCOPE_OPTIONS,
    inventory_options,
    plan_parts,
    run_config,
    usage_errors,
    with_options,
)
from batch.errors import BatchError

__all__ = ["entry", "main"]

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


@main.command(epilog="Exit codes:\n\n" + EXIT_CODES.replace("\n", "\n\n"))
@inventory_options
@with_options(SCOPE_OPTIONS)
@with_options(RUN_OPTIONS)
def run(**options: Any) -> None:
    """Renew the certificates of every device in INVENTORY (CSV or Parquet)."""
    with usage_errors():
        config = run_config(options)
    from batch.outputs.report import render_summary
    from batch.run.job import output_folder
    from batch.run.job import run as run_pipeline

    summary = asyncio.run(run_pipeline(config))
    click.echo(render_summary(summary), err=True)
    click.echo(f"report:  {output_folder(config) / 'report.csv'} (and report.html)", err=True)
    if not config.dry_run:
        click.echo(f"bundles: {config.outputs.out_dir / 'bundles'}", err=True)
    sys.exit(summary.exit_code)


@main.command()
@inventory_options
@with_options(SCOPE_OPTIONS)
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

    with usage_errors():
        scope, keys, limits = plan_parts(options)
    result = plan_inventory(scope)
    click.echo(render_plan(result, rate=limits.rate))
    if options["save"] is not None:
        save_plan(
            options["save"],
            inventory_sha256=inventory_fingerprint(scope.inventory),
            options=plan_options(scope, keys),
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
