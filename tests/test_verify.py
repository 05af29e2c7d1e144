"""Tests for batch.renew.verify: real CAs and certificates built here with cryptography."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from batch.model import Issued, KeyMode
from batch.renew import keys
from batch.renew.verify import verify_issued
from tests import certs

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SUBJECT = x509.Name.from_rfc4514_string("CN=meter-1,OU=EnOS,O=EnOS,L=Shanghai,ST=Shanghai,C=CN")


def make_ca(kind: certs.KeyKind = "RSA", **options: Any) -> certs.Ca:
    """A real CA valid around NOW (see tests.certs.make_ca for the options)."""
    return certs.make_ca(kind, now=NOW, **options)


def issue(
    ca: certs.Ca, key: CertificatePublicKeyTypes, *, not_before: datetime = NOW, **options: Any
) -> str:
    """A leaf for SUBJECT, serial 52771 and 365 days unless the options say otherwise."""
    return certs.issue(ca, key, subject=SUBJECT, not_before=not_before, **options)


def material(mode: KeyMode = KeyMode.EC256) -> keys.KeyMaterial:
    return keys.generate(mode, SUBJECT)


def public_key(m: keys.KeyMaterial) -> CertificatePublicKeyTypes:
    key = x509.load_pem_x509_csr(m.csr_pem.encode()).public_key()
    assert isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    return key


def check(issued: Issued, m: keys.KeyMaterial | None, requested: int | None = 365) -> list[str]:
    verified = verify_issued(
        issued,
        expected_public_key_sha256=m.public_key_sha256 if m else None,
        requested_days=requested,
        now=NOW,
    )
    return list(verified.problems)


@pytest.mark.parametrize(
    ("ca_kind", "mode", "key_type"),
    [("RSA", KeyMode.RSA2048, "RSA-2048"), ("EC", KeyMode.EC256, "EC-P256")],
)
def test_a_good_certificate_passes_and_its_facts_are_read(
    ca_kind: str, mode: KeyMode, key_type: str
) -> None:
    ca = make_ca(ca_kind)
    m = material(mode)
    cert_pem = issue(ca, public_key(m), serial=52771)
    verified = verify_issued(
        Issued(cert_pem=cert_pem, ca_pem=ca.pem, cert_sn="52771"),
        expected_public_key_sha256=m.public_key_sha256,
        requested_days=365,
        now=NOW,
    )
    assert verified.ok, verified.problems
    assert verified.problems == ()
    der = x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(serialization.Encoding.DER)
    assert verified.cert_sha256 == hashlib.sha256(der).hexdigest()
    assert verified.serial == "52771"
    assert verified.not_before == NOW
    assert verified.not_after == NOW + timedelta(days=365)
    assert (verified.granted_days, verified.clamped) == (365, False)
    assert verified.key_type == key_type
    assert verified.public_key_sha256 == m.public_key_sha256


def test_pem_without_trailing_newline_or_with_escaped_newlines_is_accepted() -> None:
    ca = make_ca("EC")
    m = material()
    cert_pem = issue(ca, public_key(m))
    issued = Issued(cert_pem=cert_pem.rstrip("\n"), ca_pem=ca.pem.rstrip("\n"), cert_sn="52771")
    assert check(issued, m) == []
    escaped = replace(issued, ca_pem=ca.pem.replace("\n", "\\n"))
    assert check(escaped, m) == []


def test_a_ca_bundle_with_several_certificates_finds_the_issuer() -> None:
    ca, other = make_ca("RSA"), make_ca("EC", common_name="EnOS ECC CA")
    m = material()
    issued = Issued(cert_pem=issue(ca, public_key(m)), ca_pem=other.pem + ca.pem, cert_sn="52771")
    assert check(issued, m) == []


def test_a_certificate_for_another_key_is_a_problem() -> None:
    ca = make_ca()
    sent, other = material(), material()
    issued = Issued(cert_pem=issue(ca, public_key(other)), ca_pem=ca.pem, cert_sn="52771")
    assert check(issued, sent) == ["certificate public key is not the key of the CSR we sent"]
    # reuse mode: no CSR was sent, so there is no key to compare
    assert check(issued, None) == []


def test_a_certificate_signed_by_another_ca_with_the_same_name_is_a_problem() -> None:
    real, impostor = make_ca("RSA"), make_ca("RSA")  # same subject, different keys
    m = material()
    issued = Issued(cert_pem=issue(impostor, public_key(m)), ca_pem=real.pem, cert_sn="52771")
    assert check(issued, m) == ["certificate signature does not verify with the returned CA's key"]


def test_a_certificate_from_an_unrelated_ca_names_both() -> None:
    ca, other = make_ca("RSA"), make_ca("EC", common_name="Someone Else")
    m = material()
    issued = Issued(cert_pem=issue(other, public_key(m)), ca_pem=ca.pem, cert_sn="52771")
    (problem,) = check(issued, m)
    assert "CN=Someone Else" in problem and "is not the returned CA" in problem
    assert "CN=EnOS CA" in problem


@pytest.mark.parametrize("is_ca", [False, None])
def test_a_ca_without_basic_constraints_ca_true_is_a_problem(is_ca: bool | None) -> None:
    ca = make_ca("EC", is_ca=is_ca)
    m = material()
    issued = Issued(cert_pem=issue(ca, public_key(m)), ca_pem=ca.pem, cert_sn="52771")
    assert check(issued, m) == ["the returned CA certificate lacks BasicConstraints CA:TRUE"]


def test_a_serial_other_than_the_reported_certsn_is_a_problem() -> None:
    ca = make_ca("EC")
    m = material()
    cert_pem = issue(ca, public_key(m), serial=52771)
    wrong = Issued(cert_pem=cert_pem, ca_pem=ca.pem, cert_sn="52772")
    assert check(wrong, m) == ["certificate serial 52771 is not the reported certSN 52772"]
    hexadecimal = Issued(cert_pem=cert_pem, ca_pem=ca.pem, cert_sn="CE23")
    assert check(hexadecimal, m) == ["certSN 'CE23' is not a decimal number"]


def test_a_shorter_validity_is_a_problem_when_the_ca_does_not_explain_it() -> None:
    ca = make_ca("RSA")
    m = material()
    issued = Issued(cert_pem=issue(ca, public_key(m), days=200), ca_pem=ca.pem, cert_sn="52771")
    verified = verify_issued(
        issued, expected_public_key_sha256=m.public_key_sha256, requested_days=365, now=NOW
    )
    assert verified.problems == ("granted 200 days, requested 365",)
    assert (verified.granted_days, verified.clamped) == (200, False)


def test_a_validity_clamped_by_the_ca_expiry_is_ok_and_says_so() -> None:
    ca = make_ca("EC", expires=NOW + timedelta(days=200, hours=3))
    m = material()
    cert_pem = issue(ca, public_key(m), not_after=ca.cert.not_valid_after_utc)
    issued = Issued(cert_pem=cert_pem, ca_pem=ca.pem, cert_sn="52771")
    verified = verify_issued(
        issued, expected_public_key_sha256=m.public_key_sha256, requested_days=365, now=NOW
    )
    assert verified.ok, verified.problems
    assert (verified.granted_days, verified.clamped) == (200, True)


def test_a_validity_ending_days_before_the_ca_is_not_clamped() -> None:
    ca = make_ca("EC", expires=NOW + timedelta(days=200))
    m = material()
    issued = Issued(cert_pem=issue(ca, public_key(m), days=190), ca_pem=ca.pem, cert_sn="52771")
    assert check(issued, m) == ["granted 190 days, requested 365"]


def test_a_longer_validity_than_requested_is_a_problem() -> None:
    ca = make_ca("RSA")
    m = material()
    issued = Issued(cert_pem=issue(ca, public_key(m), days=730), ca_pem=ca.pem, cert_sn="52771")
    assert check(issued, m) == ["granted 730 days, requested 365"]


def test_without_a_requested_validity_any_granted_one_passes_and_the_rest_is_checked() -> None:
    ca = make_ca("RSA")
    m = material()
    issued = Issued(cert_pem=issue(ca, public_key(m), days=730), ca_pem=ca.pem, cert_sn="52771")
    assert check(issued, m, requested=None) == []
    verified = verify_issued(
        issued, expected_public_key_sha256=m.public_key_sha256, requested_days=None, now=NOW
    )
    assert (verified.granted_days, verified.clamped) == (730, False)
    stranger = material()
    late = issue(ca, public_key(m), days=730, not_before=NOW + timedelta(days=3))
    assert check(Issued(cert_pem=late, ca_pem=ca.pem, cert_sn="52771"), stranger, None) == [
        "certificate public key is not the key of the CSR we sent",
        f"notBefore {(NOW + timedelta(days=3)).isoformat()} is more than a day from now "
        f"({NOW.isoformat()})",
    ]


def test_granted_days_round_a_notafter_one_second_short() -> None:
    ca = make_ca("EC")
    m = material()
    cert_pem = issue(ca, public_key(m), not_after=NOW + timedelta(days=365, seconds=-1))
    issued = Issued(cert_pem=cert_pem, ca_pem=ca.pem, cert_sn="52771")
    assert check(issued, m) == []


def test_not_before_far_from_now_is_a_problem_but_clock_skew_is_not() -> None:
    ca = make_ca("EC")
    m = material()
    skewed = issue(ca, public_key(m), not_before=NOW - timedelta(hours=5))
    assert check(Issued(cert_pem=skewed, ca_pem=ca.pem, cert_sn="52771"), m) == []
    old = issue(ca, public_key(m), not_before=NOW - timedelta(days=3))
    (problem,) = check(Issued(cert_pem=old, ca_pem=ca.pem, cert_sn="52771"), m)
    assert problem.startswith("notBefore 2026-02-26T12:00:00+00:00 is more than a day from now")


def test_a_naive_now_is_taken_as_utc() -> None:
    ca = make_ca("EC")
    m = material()
    issued = Issued(cert_pem=issue(ca, public_key(m)), ca_pem=ca.pem, cert_sn="52771")
    verified = verify_issued(
        issued,
        expected_public_key_sha256=m.public_key_sha256,
        requested_days=365,
        now=NOW.replace(tzinfo=None),
    )
    assert verified.ok


@pytest.mark.parametrize(
    ("cert_pem", "reason"),
    [
        ("", "certificate is missing"),
        ("not a certificate", "certificate does not parse as a PEM certificate"),
        (
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "certificate does not parse as a PEM certificate",
        ),
    ],
)
def test_an_unparseable_certificate_is_a_problem_with_no_facts(cert_pem: str, reason: str) -> None:
    ca = make_ca("EC")
    verified = verify_issued(
        Issued(cert_pem=cert_pem, ca_pem=ca.pem, cert_sn="52771"),
        expected_public_key_sha256=None,
        requested_days=365,
        now=NOW,
    )
    assert not verified.ok
    assert len(verified.problems) == 1 and verified.problems[0].startswith(reason)
    assert verified.cert_sha256 is None and verified.serial is None
    assert verified.not_before is None and verified.granted_days is None
    assert verified.key_type is None and verified.public_key_sha256 is None


def test_an_unparseable_ca_is_a_problem_and_a_shorter_grant_cannot_be_excused() -> None:
    ca = make_ca("EC", expires=NOW + timedelta(days=100))
    m = material()
    cert_pem = issue(ca, public_key(m), not_after=ca.cert.not_valid_after_utc)
    issued = Issued(cert_pem=cert_pem, ca_pem="garbage", cert_sn="52771")
    verified = verify_issued(
        issued, expected_public_key_sha256=m.public_key_sha256, requested_days=365, now=NOW
    )
    assert verified.problems == (
        "CA certificate does not parse as a PEM certificate",
        "granted 100 days, requested 365",
    )
    assert verified.serial == "52771"  # the certificate itself was read
    assert verified.clamped is False


# --- pinned CAs (--pin-ca) ---------------------------------------------------------------


def intermediate(root: certs.Ca, common_name: str = "EnOS Device CA") -> certs.Ca:
    """A CA certificate for a new key, signed by `root`."""
    key = certs.new_key("EC")
    cert = (
        x509.CertificateBuilder()
        .subject_name(certs.name(common_name))
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=3000))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(root.key, hashes.SHA256())
    )
    return certs.Ca(key, cert)


def pinned_check(issued: Issued, *pins: certs.Ca) -> tuple[str, ...]:
    return verify_issued(
        issued,
        expected_public_key_sha256=None,
        requested_days=365,
        now=NOW,
        pinned=[pin.cert for pin in pins],
    ).problems


NOT_PINNED = "certificate does not chain to a pinned CA (--pin-ca)"


def test_a_certificate_of_the_pinned_ca_passes_and_names_its_ca() -> None:
    ca = make_ca()
    issued = Issued(cert_pem=issue(ca, public_key(material())), ca_pem=ca.pem, cert_sn="52771")
    assert pinned_check(issued, make_ca(common_name="other"), ca) == ()
    verified = verify_issued(issued, expected_public_key_sha256=None, requested_days=365, now=NOW)
    der = ca.cert.public_bytes(serialization.Encoding.DER)
    assert verified.ca_sha256 == hashlib.sha256(der).hexdigest()
    assert verified.ca_subject == ca.cert.subject.rfc4514_string()


def test_a_certificate_of_another_ca_fails_the_pin_even_when_it_chains_to_its_own_ca() -> None:
    ca = make_ca()
    issued = Issued(cert_pem=issue(ca, public_key(material())), ca_pem=ca.pem, cert_sn="52771")
    assert pinned_check(issued, make_ca()) == (NOT_PINNED,)  # same name, another key
    assert pinned_check(issued) == ()  # no pin: the returned CA is enough


@pytest.mark.parametrize("returned", ["intermediate", "intermediate+root"])
def test_a_pinned_root_is_reached_through_the_returned_intermediate(returned: str) -> None:
    root = make_ca(common_name="EnOS Root")
    device_ca = intermediate(root)
    ca_pem = device_ca.pem + ("\n" + root.pem if returned == "intermediate+root" else "")
    issued = Issued(
        cert_pem=issue(device_ca, public_key(material())), ca_pem=ca_pem, cert_sn="52771"
    )
    assert pinned_check(issued, root) == ()
    assert pinned_check(issued, make_ca(common_name="EnOS Root")) == (NOT_PINNED,)
