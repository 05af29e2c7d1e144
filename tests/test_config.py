"""RunConfig refuses bad settings on construction, with the option named; secrets stay hidden."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from batch.config import (
    OWN_OPTIONS,
    PARTS,
    Credentials,
    DueRule,
    RunConfig,
    Shard,
    credentials_from_env,
    pkcs12_passphrase_from_env,
    run_config,
)
from batch.errors import UsageError
from batch.model import KeyMode


def _config(**kw: object) -> RunConfig:
    base: dict[str, object] = {"inventory": Path("i.csv"), "out_dir": Path("o"), "sandbox": True}
    base.update(kw)
    return run_config(**base)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"rate": 0}, "--rate"),
        ({"concurrency": 0}, "--concurrency"),
        ({"max_attempts": 0}, "--max-attempts"),
        ({"valid_days": 0}, "--valid-days"),
        ({"abort_after_failures": 0}, "--abort-after-failures"),
        ({"renew_at_fraction": 1.5}, "--renew-at-fraction"),
        ({"notify_url": "ftp://x"}, "--notify-url"),
        ({"ca_bundle": Path("/nonexistent.pem")}, "--ca-bundle"),
        ({"sandbox": False}, "ENOS_API_URL"),
        ({"sandbox": False, "api_url": "https://x"}, "ENOS_APP_KEY"),
    ],
)
def test_bad_settings_are_refused_naming_the_option(changes: dict[str, object], named: str) -> None:
    with pytest.raises(UsageError, match=named):
        _config(**changes)


def test_credentials_only_from_the_environment_and_never_in_a_repr() -> None:
    assert credentials_from_env({}) is None
    assert credentials_from_env({"ENOS_APP_KEY": "k"}) is None
    creds = credentials_from_env({"ENOS_APP_KEY": "k", "ENOS_APP_SECRET": "hush"})
    assert creds == Credentials(app_key="k", app_secret="hush")
    assert "hush" not in repr(creds)
    config = _config(credentials=creds, pkcs12_passphrase=b"p12-secret")
    assert "hush" not in repr(config) and "p12-secret" not in repr(config)
    with pytest.raises(UsageError, match="FLEET_RENEW_P12_PASSPHRASE"):
        pkcs12_passphrase_from_env({})


def test_shard_parsing() -> None:
    assert Shard.parse("1/4") == Shard(index=1, count=4)
    for bad in ("4/4", "x/2", "1", "-1/3"):
        with pytest.raises(UsageError, match="--shard"):
            Shard.parse(bad)


def test_due_rule_only_in_maintenance_mode() -> None:
    assert _config().scope.due_rule is None
    rule = _config(renew_within=30).scope.due_rule
    assert rule is not None and rule.within_days == 30


@pytest.mark.parametrize(
    ("rate", "workers"), [(10, 32), (128, 32), (250, 63), (500, 125), (1000, 128), (100_000, 128)]
)
def test_workers_follow_the_rate_unless_concurrency_is_given(rate: float, workers: int) -> None:
    assert _config(rate=rate).limits.workers == workers
    assert _config(rate=rate, concurrency=7).limits.workers == 7


def test_flat_options_go_to_the_part_that_names_them() -> None:
    config = _config(
        rate=5, key_mode=KeyMode.EC256, renew_within=3, notify_url="https://n", dry_run=True
    )
    assert (config.limits.rate, config.keys.key_mode) == (5, KeyMode.EC256)
    assert config.scope.due_rule == DueRule(within_days=3)
    assert (config.outputs.notify_url, config.outputs.out_dir) == ("https://n", Path("o"))
    assert config.endpoint.sandbox and config.dry_run
    with pytest.raises(TypeError, match="unexpected options: rat"):
        _config(rat=5)  # a misspelt option is an error, not a default


def test_every_flat_option_names_exactly_one_field() -> None:
    names = [f.name for part in PARTS for f in fields(part)] + list(OWN_OPTIONS)
    assert len(names) == len(set(names))  # otherwise one value would land in two parts
    own = {f.name for f in fields(RunConfig)} - {"scope", "keys", "limits", "outputs", "endpoint"}
    assert own == set(OWN_OPTIONS)
