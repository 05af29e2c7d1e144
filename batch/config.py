"""One frozen RunConfig per run, composed of parts and validated on construction; the only reader
of the environment.

A run's settings come in parts, each the whole input of the stage that consumes it:

    RunConfig
    ├── scope     Scope      what is renewed: inventory, shard, due rule, canary (saved plans)
    ├── keys      KeyPolicy  how each certificate is asked for and accepted: key, validity, pins
    ├── limits    Limits     pace and stop rules: rate, workers, attempts, timeouts, aborts
    ├── outputs   Outputs    where results go: --out, progress, notification, rescue folder
    ├── endpoint  Endpoint   where requests go: API URL, credentials, sandbox, CA bundle
    └── dry_run, plan_file

Every rule is checked here, once, as a `UsageError` (exit 2) naming the option: each part checks
its own fields, RunConfig the rules across parts (only what a --pin-ca file holds is read later,
by renew.verify at the start of the run). `run_config` builds one from flat options (`rate=`,
`key_mode=`), as the CLI and tests name them.

Secrets (app key and secret, the PKCS#12 passphrase) come from the environment only, never from
the command line (where `ps` and shell history would show them), and never appear in a repr.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from batch.errors import UsageError
from batch.model import KeyMode, ParamPlacement

# Environment variables; the CLI names them in --help.
ENV_API_URL = "ENOS_API_URL"
ENV_ORG_ID = "ENOS_ORG_ID"
ENV_APP_KEY = "ENOS_APP_KEY"
ENV_APP_SECRET = "ENOS_APP_SECRET"
ENV_P12_PASSPHRASE = "FLEET_RENEW_P12_PASSPHRASE"

DEFAULT_RATE = 10.0  # requests/s: well under any limit an EnOS operator is likely to have set
# --concurrency from the rate (auto_concurrency): seconds one device may take, and the bounds.
DEVICE_SECONDS = 0.25
MIN_WORKERS = 32
MAX_WORKERS = 128


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    app_key: str
    app_secret: str = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Shard:
    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise UsageError(f"--shard must be I/N with 0 <= I < N, not {self.index}/{self.count}")

    @classmethod
    def parse(cls, text: str) -> Shard:
        index, sep, count = text.partition("/")
        if not sep or not index.strip().isdigit() or not count.strip().isdigit():
            raise UsageError(f"--shard must look like 0/4, not {text!r}")
        return cls(index=int(index), count=int(count))


@dataclass(frozen=True, slots=True, kw_only=True)
class DueRule:
    """When a certificate is due; at least one of the two is set."""

    within_days: int | None = None
    at_fraction: float | None = None

    @property
    def needs_lifetime(self) -> bool:
        return self.at_fraction is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class Scope:
    """What is renewed: which rows of which inventory, and which of their certificates are due.

    A saved plan records the reading of the inventory, the shard, the due rule and
    renew_current (`batch.plan.saved.plan_options`); retry_failed and the canary only widen or
    order one run.
    """

    inventory: Path
    inventory_format: Literal["csv", "parquet"] | None = None
    org_id: str | None = None  # for rows without an orgId
    shard: Shard | None = None
    renew_within: int | None = None  # maintenance mode: days before expiry
    renew_at_fraction: float | None = None  # maintenance mode: share of the lifetime lived
    renew_current: bool = False  # renew a device's current certificate when it superseded
    # the inventory's (default: report it skipped, it was renewed already)
    retry_failed: bool = False
    canary: str | None = None  # "50" devices or "2%" of the inventory's rows
    canary_max_failures: float = 0.0  # share of the canary that may fail

    def __post_init__(self) -> None:
        if self.renew_within is not None and self.renew_within < 0:
            raise UsageError("--renew-within must be zero or more days")
        if self.renew_at_fraction is not None and not 0 < self.renew_at_fraction < 1:
            raise UsageError("--renew-at-fraction must be between 0 and 1, e.g. 0.67")
        if self.canary is not None:
            parse_canary(self.canary)  # refused before anything starts, not once rows are counted

    @property
    def due_rule(self) -> DueRule | None:
        """Maintenance mode's rule, or None when every device is renewed."""
        if self.renew_within is None and self.renew_at_fraction is None:
            return None
        return DueRule(within_days=self.renew_within, at_fraction=self.renew_at_fraction)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyPolicy:
    """How each new certificate is asked for (key, validity, where Renew's parameters go) and
    what it must be to be accepted and kept (pinned CAs, PKCS#12 bundle)."""

    key_mode: KeyMode = KeyMode.REUSE
    valid_days: int | None = None
    params_in: ParamPlacement = ParamPlacement.BOTH
    pin_ca: tuple[Path, ...] = ()  # issued certificates must chain to a CA in one of these
    pkcs12_passphrase: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.valid_days is not None and not 1 <= self.valid_days <= 36500:
            raise UsageError("--valid-days must be between 1 and 36500")
        for pin in self.pin_ca:
            if not pin.is_file():
                raise UsageError(f"--pin-ca {pin} is not a readable file")


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """How fast, how hard and how long: the pace of requests and the rules that stop a run."""

    rate: float = DEFAULT_RATE
    concurrency: int | None = None  # devices in flight; None: from the rate (`workers`)
    max_attempts: int = 5
    timeout_s: float = 30.0
    grace_seconds: float = 30.0
    abort_after_failures: int = 50
    abort_failure_rate: float | None = None  # share of finished devices that may fail
    abort_min_sample: int = 100  # finished devices before abort_failure_rate applies

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise UsageError("--rate must be positive")
        if self.concurrency is not None and self.concurrency < 1:
            raise UsageError("--concurrency must be at least 1")
        if self.max_attempts < 1:
            raise UsageError("--max-attempts must be at least 1")
        if self.abort_after_failures < 1:
            raise UsageError("--abort-after-failures must be at least 1")
        if self.grace_seconds < 0 or self.timeout_s <= 0:
            raise UsageError("--grace-seconds must be >= 0 and --timeout positive")
        if self.abort_min_sample < 1:
            raise UsageError("--abort-min-sample must be at least 1")

    @property
    def workers(self) -> int:
        """Devices in flight: --concurrency, or enough to hold --rate (`auto_concurrency`)."""
        return self.concurrency if self.concurrency is not None else auto_concurrency(self.rate)


@dataclass(frozen=True, slots=True, kw_only=True)
class Outputs:
    """Where the run's results and news go."""

    out_dir: Path
    progress: Literal["auto", "bar", "log", "off"] = "auto"
    log_interval: float = 5.0
    notify_url: str | None = None  # POST the summary here when the run ends
    rescue_dir: Path | None = None  # None: the system's temporary folder (see `rescue_root`)
    durable_journal: bool = True

    def __post_init__(self) -> None:
        if self.notify_url is not None and not self.notify_url.startswith(("https://", "http://")):
            raise UsageError("--notify-url must be an http(s) URL")

    @property
    def rescue_root(self) -> Path:
        """Where certificates wait when the journal cannot take them (store.rescue): by default
        the system's temporary folder ($TMPDIR, else /tmp), usually not the filesystem of --out."""
        return self.rescue_dir or Path(tempfile.gettempdir())


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """Where requests go: an EnOS API gateway with its credentials, or the sandbox simulator."""

    api_url: str | None = None
    credentials: Credentials | None = None
    sandbox: bool = False
    ca_bundle: Path | None = None

    def __post_init__(self) -> None:
        if self.ca_bundle is not None and not self.ca_bundle.is_file():
            raise UsageError(f"--ca-bundle {self.ca_bundle} is not a readable file")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunConfig:
    """Everything one run needs to know, checked once."""

    scope: Scope
    keys: KeyPolicy = field(default_factory=KeyPolicy)
    limits: Limits = field(default_factory=Limits)
    outputs: Outputs
    endpoint: Endpoint = field(default_factory=Endpoint)
    dry_run: bool = False  # read and plan, send nothing
    plan_file: Path | None = None  # refuse to run when the plan saved there no longer matches

    def __post_init__(self) -> None:
        if not self.endpoint.sandbox and not self.dry_run:  # a run that sends needs an endpoint
            if not self.endpoint.api_url:
                raise UsageError(
                    f"no EnOS API URL: pass --api-url or set {ENV_API_URL} (or use --sandbox)"
                )
            if self.endpoint.credentials is None:
                raise UsageError(f"set {ENV_APP_KEY} and {ENV_APP_SECRET} in the environment")


P = TypeVar("P", Scope, KeyPolicy, Limits, Outputs, Endpoint)
PARTS = (Scope, KeyPolicy, Limits, Outputs, Endpoint)
OWN_OPTIONS = ("dry_run", "plan_file")  # RunConfig's own fields; the rest are its parts'


def run_config(**options: Any) -> RunConfig:
    """A RunConfig from flat options, each named as the field of the part that holds it
    (`rate=` goes to Limits, `key_mode=` to KeyPolicy); `dry_run` and `plan_file` are its own.

    The CLI and tests pass options this way. An unknown name is a TypeError, as for any
    constructor, so a misspelt option never goes unnoticed.
    """
    fields = {f.name for part in PARTS for f in dataclasses.fields(part)}
    unknown = set(options) - fields - set(OWN_OPTIONS)
    if unknown:
        raise TypeError(f"run_config() got unexpected options: {', '.join(sorted(unknown))}")
    return RunConfig(  # the parts are built, and so checked, in this order
        scope=pick(Scope, options),
        limits=pick(Limits, options),
        keys=pick(KeyPolicy, options),
        outputs=pick(Outputs, options),
        endpoint=pick(Endpoint, options),
        **{name: options[name] for name in OWN_OPTIONS if name in options},
    )


def pick(part: type[P], options: Mapping[str, Any]) -> P:
    """A part built from those of `options` that are its fields (the others are ignored)."""
    names = {f.name for f in dataclasses.fields(part)}
    return part(**{name: value for name, value in options.items() if name in names})


def parse_share(text: str, *, what: str) -> float:
    """'5%' or '0.05' -> 0.05."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise UsageError(f"{what} must look like 5% or 0.05, not {text!r}") from None
    if not 0 <= value <= 1:
        raise UsageError(f"{what} must be between 0% and 100%, not {text!r}")
    return value


def parse_canary(text: str) -> int | float:
    """--canary: '50' devices (an int) or '2%' of the inventory's rows (a float share)."""
    if text.endswith("%"):
        return parse_share(text, what="--canary")
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"--canary must be a number of devices or a share like 2%, not {text!r}")
    return int(text)


def auto_concurrency(rate: float) -> int:
    """Devices in flight needed to start `rate` requests a second.

    By Little's law a device occupies a worker for its whole time (journal fsync, the API's
    answer, verification, bundle): at 32 workers and ~130 ms a device, 250/s was out of reach.
    Allow each device DEVICE_SECONDS; never fewer than MIN_WORKERS, nor more than MAX_WORKERS
    (beyond that an unlimited rate only queues work in memory).
    """
    return max(MIN_WORKERS, min(MAX_WORKERS, math.ceil(rate * DEVICE_SECONDS)))


def credentials_from_env(environ: Mapping[str, str] | None = None) -> Credentials | None:
    """App key and secret from the environment, or None when either is missing."""
    env = os.environ if environ is None else environ
    key, secret = env.get(ENV_APP_KEY, "").strip(), env.get(ENV_APP_SECRET, "").strip()
    if not key or not secret:
        return None
    return Credentials(app_key=key, app_secret=secret)


def pkcs12_passphrase_from_env(environ: Mapping[str, str] | None = None) -> bytes:
    """The PKCS#12 passphrase; --pkcs12 without it is a usage error."""
    env = os.environ if environ is None else environ
    value = env.get(ENV_P12_PASSPHRASE, "")
    if not value:
        raise UsageError(f"--pkcs12 needs the passphrase in {ENV_P12_PASSPHRASE}")
    return value.encode()
