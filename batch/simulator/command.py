"""`fleet-renew simulate`: run the EnOS simulator as a process until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import sys
from pathlib import Path

import click

from batch.model import ParamPlacement
from batch.simulator.config import DEFAULT_ORG, SimulatorConfig
from batch.simulator.testing import running_simulator

_RATE = click.FloatRange(0.0, 1.0)


@click.command("simulate")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, help="Port to listen on (0: any free).")
@click.option(
    "--fleet",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Inventory (CSV or Parquet) to seed devices from.  [default: no devices]",
)
@click.option("--app-key", envvar="ENOS_APP_KEY", required=True, help="App key (env ENOS_APP_KEY).")
@click.option(
    "--app-secret", envvar="ENOS_APP_SECRET", required=True, help="App secret (env ENOS_APP_SECRET)"
)
@click.option("--org", default=DEFAULT_ORG, show_default=True, help="Default organisation ID.")
@click.option(
    "--rate-limit",
    type=click.IntRange(min=1),
    help="Business requests per second per app; more get HTTP 429.  [default: unlimited]",
)
@click.option("--latency-ms", default=0.0, show_default=True, help="Added latency per call, ms.")
@click.option("--jitter-ms", default=0.0, show_default=True, help="Uniform +- latency jitter, ms.")
@click.option("--fail-rate", type=_RATE, default=0.0, show_default=True, help="P(answer 99500).")
@click.option(
    "--drop-rate", type=_RATE, default=0.0, show_default=True, help="P(drop before any effect)."
)
@click.option(
    "--lost-rate", type=_RATE, default=0.0, show_default=True, help="P(effect, then no answer)."
)
@click.option(
    "--fail-after-rate",
    type=_RATE,
    default=0.0,
    show_default=True,
    help="P(effect, then answer 99500): a renewal that took effect is answered as failed.",
)
@click.option(
    "--product-max-days",
    default=3650,
    show_default=True,
    help="Product's maximum certificate validity, days: a longer validDay (or default) is the "
    "documented 99400 'exceeds the maximum' error.",
)
@click.option(
    "--default-valid-days",
    type=click.IntRange(min=1),
    default=730,
    show_default=True,
    help="Validity applied when a renew/apply has no validDay (730 on the English pages; the "
    "zh page: the deployment's default). Above --product-max-days it is the documented 99400 "
    "error, never a silent cap (the Edge page's rule).",
)
@click.option(
    "--validity-error-states-max",
    is_flag=True,
    help="Append '(maximum: N days)' to the documented 'exceeds the maximum' 99400 message "
    "(guess: docs are silent; no page shows the maximum in it).  [default: off]",
)
@click.option("--ca-days", default=3650, show_default=True, help="CA lifetime from start, days.")
@click.option(
    "--token-ttl",
    default=7200.0,
    show_default=True,
    help="Access token lifetime, s. A business call with an expired token gets HTTP 401 with "
    '{"status": 1203, "msg": "access token has expired"} (guess: docs are silent on that '
    "answer's HTTP status and shape).",
)
@click.option(
    "--single-token",
    is_flag=True,
    help="Every token get mints a new token and the app's previous token stops working "
    "(HTTP 401) (guess: docs are silent; without it get returns the current token while it "
    "is valid, as documented).  [default: off]",
)
@click.option(
    "--param-placement",
    type=click.Choice([p.value for p in ParamPlacement]),
    metavar="WHERE",
    default=ParamPlacement.BOTH.value,
    show_default=True,
    help="query|body|both: where Renew's certSn/validDay/issueAuthority are read: body "
    "(the cloud Renew pages), "
    "query (the Edge Renew page; issueAuthority read there too (guess: docs are silent)) or "
    "both (body wins). A strict place ignores the other, so a missing certSn is 99400 "
    '"Invalid Argument certSn:certSn is missing".',
)
@click.option("--seed", default=0, show_default=True, help="Seed of the fault injection RNG.")
@click.option(
    "--state-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the state JSON here on exit.  [default: not written]",
)
@click.option(
    "--list-includes-pem",
    is_flag=True,
    help="List Certificate answers each certificate's PEM in `cert` (not documented). Off, "
    "List answers as documented: serials, status and dates, no PEM.  [default: off]",
)
@click.option(
    "--retry-after", type=float, help="Retry-After seconds sent on HTTP 429.  [default: none]"
)
def simulate(  # one parameter per documented option
    host: str,
    port: int,
    fleet: Path | None,
    app_key: str,
    app_secret: str,
    org: str,
    rate_limit: int | None,
    latency_ms: float,
    jitter_ms: float,
    fail_rate: float,
    drop_rate: float,
    lost_rate: float,
    fail_after_rate: float,
    product_max_days: int,
    default_valid_days: int,
    validity_error_states_max: bool,
    ca_days: int,
    token_ttl: float,
    single_token: bool,
    param_placement: str,
    seed: int,
    state_out: Path | None,
    list_includes_pem: bool,
    retry_after: float | None,
) -> None:
    """Run an EnOS-compatible simulator until SIGTERM or SIGINT.

    Where the EnOS docs are silent the simulator has to choose; each choice is a guess, and
    the client must not rely on it. Besides those labelled on the options below:

    \b
    - HTTP 429 is {"message": "API rate limit exceeded"} (the gateway's documented message in
      Kong's shape), counted per app in a sliding 1 s window (guess: docs are silent)
    - a token refresh makes the old token stop working at once (guess: docs are silent)
    - a token request's timestamp may be 5 min off; an encryption seen before is 1001
      (guess: docs are silent on the windows)
    - Renew marks the old certificate revoked, reason SUPERSEDED (guess: docs are silent)
    - parameters a gateway does not read are ignored, never refused (guess: docs are silent)
    """
    try:
        config = SimulatorConfig(
            app_key=app_key,
            app_secret=app_secret,
            org_id=org,
            rate_limit=rate_limit,
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            fail_rate=fail_rate,
            drop_rate=drop_rate,
            lost_rate=lost_rate,
            fail_after_rate=fail_after_rate,
            product_max_days=product_max_days,
            default_valid_days=default_valid_days,
            validity_error_states_max=validity_error_states_max,
            ca_days=ca_days,
            token_ttl=token_ttl,
            single_token=single_token,
            param_placement=ParamPlacement(param_placement),
            seed=seed,
            list_includes_pem=list_includes_pem,
            retry_after=retry_after,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    asyncio.run(_serve(config, fleet, host, port, state_out))


async def _serve(
    config: SimulatorConfig, fleet: Path | None, host: str, port: int, state_out: Path | None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with running_simulator(config, fleet, host=host, port=port) as sim:
        _serve_promptly()
        click.echo(f"listening on {sim.url}")
        sys.stdout.flush()
        await stop.wait()
    if state_out is not None:
        _write_json(state_out, sim.state_dict())


def _serve_promptly() -> None:
    """Keep this process's own pauses from delaying the requests it takes (process-wide).

    The fleet's state (seeded, then every issued certificate) lives until the end, so a full
    collection scans all of it: 70-90 ms with 5,000 renewals, during which requests that had
    arrived apart were taken, and counted in `maxInOneSecond` and the 429 window, as arriving
    together. The seeded objects are frozen out of the scans and full collections are left
    out; the young generations still collect the short-lived cycles of each request.
    """
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 1_000_000)
    # The API thread issues certificates holding the GIL: hand it back to the event loop
    # within 1 ms (default 5 ms), so arrivals are taken when they come.
    sys.setswitchinterval(0.001)


def _write_json(path: Path, value: object) -> None:
    """Write atomically: a reader never sees half a file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=1, sort_keys=True))
    os.replace(partial, path)
