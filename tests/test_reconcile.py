"""Which certificate in List Certificate is our lost renewal (the rest runs in test_pipeline)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from batch.model import CertRecord
from batch.renew.reconcile import CLOCK_SKEW, CaCache, newest_candidate
from tests.certs import issue, make_ca, name, new_key

INTENT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _record(sn: str, status: str = "valid", minutes: float = 1) -> CertRecord:
    return CertRecord(cert_sn=sn, status=status, sign_date=INTENT + timedelta(minutes=minutes))


def test_the_newest_valid_certificate_after_the_intent_is_the_renewal() -> None:
    records = [
        _record("100", status="revoked", minutes=-500),  # the old one, superseded
        _record("101", minutes=1),
        _record("102", minutes=2),
    ]
    found = newest_candidate(records, old_cert_sn=100, since=INTENT - CLOCK_SKEW)
    assert found is not None and found.cert_sn == "102"


def test_no_renewal_when_only_the_old_or_older_certificates_are_valid() -> None:
    records = [_record("100", minutes=-500), _record("99", minutes=-60), _record("98", "revoked")]
    assert newest_candidate(records, old_cert_sn=100, since=INTENT - CLOCK_SKEW) is None


def test_clock_skew_allowance_accepts_a_slightly_early_sign_date() -> None:
    records = [_record("101", minutes=-3)]  # EnOS's clock 3 minutes behind ours
    assert newest_candidate(records, old_cert_sn=100, since=INTENT - CLOCK_SKEW) is not None


def test_ca_cache_finds_the_issuer_of_a_certificate() -> None:
    rsa_ca, ec_ca = make_ca("RSA", common_name="EnOS CA"), make_ca("EC", common_name="EnOS ECC CA")
    cache = CaCache()
    cache.remember(rsa_ca.pem)
    cache.remember(ec_ca.pem)
    cache.remember(ec_ca.pem)  # the same CA again changes nothing
    cache.remember("not a certificate")
    from cryptography import x509

    leaf = x509.load_pem_x509_certificate(
        issue(ec_ca, new_key("EC").public_key(), subject=name("dev")).encode()
    )
    assert cache.issuer_of(leaf) == ec_ca.pem
    assert len(cache.by_subject) == 2
