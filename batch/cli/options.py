"""The command line's options: how they are spelt and explained (--help), and how their text
becomes the config's values.

Click parses; `batch.config` checks every rule. A rule broken on the command line is shown as
click shows a bad option (usage line, hint, exit 2) by `usage_errors`, the one place that turns
a `batch.errors.UsageError` into click's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from batch import config as cfg
from batch.errors import UsageError
from batch.model import KeyMode, ParamPlacement


def inventory_options(fn: Any) -> Any:
    """INVENTORY with --org and --format, shared by `plan` and `run`."""
    fn = click.option(
        "--org",
        "org_id",
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
SCOPE_OPTIONS = [
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

RUN_OPTIONS = [
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


def with_options(options: list[Callable[[F], F]]) -> Callable[[F], F]:
    """Apply a list of click options, first listed first in --help."""

    def decorate(fn: F) -> F:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


@contextlib.contextmanager
def usage_errors() -> Iterator[None]:
    """A configuration the config refuses, shown as a bad option: usage, hint, exit 2."""
    try:
        yield
    except UsageError as exc:
        raise click.UsageError(exc.message) from exc


def run_config(options: Mapping[str, Any]) -> cfg.RunConfig:
    """The `run` command's RunConfig; credentials and the PKCS#12 passphrase from the environment
    (never from the command line)."""
    return cfg.run_config(**config_values(options), credentials=cfg.credentials_from_env())


def plan_parts(options: Mapping[str, Any]) -> tuple[cfg.Scope, cfg.KeyPolicy, cfg.Limits]:
    """What the `plan` command reads and saves: the scope, the key policy and the rate."""
    values = config_values(options)
    scope, keys = cfg.pick(cfg.Scope, values), cfg.pick(cfg.KeyPolicy, values)
    return scope, keys, cfg.pick(cfg.Limits, values)


def config_values(options: Mapping[str, Any]) -> dict[str, Any]:
    """Click's options under the config's names, their text read into the config's types."""
    values = {name: _READERS.get(name, _as_is)(value) for name, value in options.items()}
    values.pop("save", None)  # `plan --save`: where to write, not a setting
    if values.pop("pkcs12", False):
        values["pkcs12_passphrase"] = cfg.pkcs12_passphrase_from_env()
    return values


def _as_is(value: Any) -> Any:
    return value


# Options given as text that the config takes as values; click types the others already.
_READERS: dict[str, Callable[[Any], Any]] = {
    "key_mode": KeyMode,
    "params_in": ParamPlacement,
    "shard": lambda text: cfg.Shard.parse(text) if text else None,
    "canary_max_failures": lambda text: cfg.parse_share(text, what="--canary-max-failures"),
    "abort_failure_rate": lambda text: (
        cfg.parse_share(text, what="--abort-failure-rate") if text else None
    ),
}
