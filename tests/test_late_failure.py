"""A Renew answered 99500 after the renewal took effect: resolved with List, never retried blind.

The simulator's `flaky-after` device renews, then answers 99500 (EnOS's internal error may come
after the renewal). Retrying the old certSn would meet "The original certificate has been
revoked"; the job must instead find the renewal with List, keep it, and renew no more than the
List it has allows.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from batch.model import KeyMode
from batch.testing import assert_bundle_is_sound, fleet, job

LATE = "dev-0000"


@pytest.mark.parametrize(
    ("list_includes_pem", "renewals"),
    [
        (True, 1),  # List gives the PEM: the renewal is recovered as it is
        (False, 2),  # List as documented (serials): one more renewal of the new one gets a PEM
    ],
)
async def test_99500_after_the_renewal_is_resolved_with_list(
    tmp_path: Path, list_includes_pem: bool, renewals: int
) -> None:
    rows = fleet(4)
    rows[0]["sandbox"] = "flaky-after"
    result = await job(
        tmp_path,
        rows,
        sim_kw={"list_includes_pem": list_includes_pem},
        key_mode=KeyMode.EC256,
        concurrency=4,
    )
    assert result.summary.exit_code == 0
    row = result.by_device()[LATE]
    assert (row["status"], row["resolution"]) == ("renewed", "reconciled")
    assert result.sim.stats.requests["list"] >= 1
    state = result.sim.state_dict()["devices"][f"pkA/{LATE}"]
    assert state["renewals"] == renewals
    [valid] = [c for c in state["certificates"] if c["status"] == "valid"]
    bundle = result.out / row["bundlePath"]
    assert_bundle_is_sound(bundle, with_key=True)
    cert = x509.load_pem_x509_certificate((bundle / "cert.pem").read_bytes())
    assert str(cert.serial_number) == valid["serial"] == row["newCertSn"]
    for other in ("dev-0001", "dev-0002", "dev-0003"):
        assert result.renewals(f"pkA/{other}") == 1
