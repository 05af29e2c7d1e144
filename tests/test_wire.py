"""The whole job's Renew request against gateways strict about where they read its parameters.

The cloud Renew pages read certSn/validDay/issueAuthority from the JSON body, the Edge page from
the query; the simulator's `param_placement` ignores the other place, as such a gateway would.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

from batch.model import KeyMode, ParamPlacement
from tests.test_pipeline import assert_bundle_is_sound, fleet, job


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
