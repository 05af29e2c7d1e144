"""The whole job's Renew request against gateways strict about where they read its parameters.

The cloud Renew pages read certSn/validDay/issueAuthority from the JSON body, the Edge page from
the query; the simulator's `param_placement` ignores the other place, as such a gateway would.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

from batch.model import KeyMode, ParamPlacement
from batch.testing import assert_bundle_is_sound, fleet, job

BIN = Path(sys.executable).parent / "fleet-renew"


@pytest.mark.parametrize("gateway_reads", [ParamPlacement.BODY, ParamPlacement.QUERY])
async def test_the_default_request_renews_on_a_strict_gateway_of_either_kind(
    tmp_path: Path, gateway_reads: ParamPlacement
) -> None:
    result = await job(
        tmp_path,
        fleet(3),
        sim_kw={"param_placement": gateway_reads},
        key_mode=KeyMode.EC256,  # the ECC issueAuthority must be read too, or the CSR is refused
        valid_days=45,
    )
    assert result.summary.exit_code == 0
    assert {r["status"] for r in result.rows} == {"renewed"}
    for row in result.rows:
        assert result.renewals(f"pkA/{row['deviceKey']}") == 1
        bundle = result.out / row["bundlePath"]
        assert_bundle_is_sound(bundle, with_key=True)
        cert = x509.load_pem_x509_certificate((bundle / "cert.pem").read_bytes())
        assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=45)


async def test_query_only_parameters_fail_on_a_body_only_gateway(tmp_path: Path) -> None:
    result = await job(
        tmp_path, fleet(2), sim_kw={"param_placement": ParamPlacement.BODY}, params_in="query"
    )
    assert result.summary.exit_code == 1
    for row in result.rows:
        assert (row["status"], row["errorClass"]) == ("failed", "invalid_request")
        assert "certSn is missing" in row["errorMessage"]
        assert result.renewals(f"pkA/{row['deviceKey']}") == 0


@pytest.mark.slow
def test_the_commands_wire_both_options(tmp_path: Path) -> None:
    """`simulate --param-placement body` and `run --params-in`, as processes."""
    inventory = tmp_path / "fleet.csv"
    inventory.write_text("assetId,certSn\na-1,7001\na-2,7002\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENOS_")}
    env |= {"ENOS_APP_KEY": "wire-key", "ENOS_APP_SECRET": "wire-secret"}
    sim_args = ["--port", "0", "--fleet", str(inventory), "--param-placement", "body"]
    with subprocess.Popen(
        [str(BIN), "simulate", *sim_args], env=env, stdout=subprocess.PIPE, text=True
    ) as simulator:
        try:
            assert simulator.stdout is not None
            url = simulator.stdout.readline().strip().removeprefix("listening on ")
            common = ["--api-url", url, "--org", "o-sandbox", "--progress", "off"]

            def run(out: str, *extra: str) -> int:
                args = [str(BIN), "run", str(inventory), "--out", str(tmp_path / out)]
                done = subprocess.run(
                    [*args, *common, *extra], env=env, capture_output=True, timeout=120
                )
                return done.returncode

            assert run("query-only", "--params-in", "query") == 1
            assert run("default") == 0
        finally:
            simulator.terminate()
            simulator.wait(timeout=30)
    refused = _report(tmp_path / "query-only")
    assert {(r["status"], r["errorClass"]) for r in refused} == {("failed", "invalid_request")}
    assert all("certSn is missing" in r["errorMessage"] for r in refused)
    assert {r["status"] for r in _report(tmp_path / "default")} == {"renewed"}


def _report(folder: Path) -> list[dict[str, str]]:
    with (folder / "report.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))
