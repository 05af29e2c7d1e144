"""Tests for batch.renew.keys: real keys and CSRs made with cryptography, real files in tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from batch.model import Device, KeyMode
from batch.renew import keys
from batch.renew.keys import CsrError, KeyMaterial, SubjectError
from tests import certs

SUBJECT = "CN=meter-0001,OU=EnOS,O=EnOS,L=Shanghai,ST=Shanghai,C=CN"


def device(**fields: object) -> Device:
    values: dict[str, object] = {"row": 2, "org_id": "o1", "cert_sn": 52770}
    values.update(fields)
    return Device(**values)  # type: ignore[arg-type]


def csr_pem_for(key: certs.PrivateKey, algorithm: certs.SigningHash | None = None) -> bytes:
    return certs.csr_pem(key, x509.Name.from_rfc4514_string(SUBJECT), algorithm).encode()


def attributes(name: x509.Name) -> dict[str, str]:
    return {a.rfc4514_attribute_name: str(a.value) for a in name}


# -- subject_for ----------------------------------------------------------------------------


def test_subject_template_uses_device_key_as_cn() -> None:
    name = keys.subject_for(device(product_key="pk", device_key="meter-7"))
    assert attributes(name) == {
        "C": "CN",
        "ST": "Shanghai",
        "L": "Shanghai",
        "O": "EnOS",
        "OU": "EnOS",
        "CN": "meter-7",
    }


def test_subject_template_falls_back_to_asset_id() -> None:
    name = keys.subject_for(device(asset_id="AbC123"))
    assert name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "AbC123"


def test_subject_from_device_keeps_every_attribute_including_email() -> None:
    subject = "1.2.840.113549.1.9.1=ops@example.com," + SUBJECT
    name = keys.subject_for(device(asset_id="a", subject=subject))
    assert name == x509.Name.from_rfc4514_string(subject)
    assert name.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)[0].value == "ops@example.com"


def test_subject_missing_required_attributes_is_refused_with_their_names() -> None:
    with pytest.raises(SubjectError, match="lacks ST, OU"):
        keys.subject_for(device(asset_id="a", subject="CN=x,O=EnOS,L=Shanghai,C=CN"))


def test_subject_that_is_not_rfc4514_is_refused() -> None:
    with pytest.raises(SubjectError, match="not an RFC 4514 name"):
        keys.subject_for(device(asset_id="a", subject="just some words"))


def test_subject_cn_longer_than_64_is_refused() -> None:
    with pytest.raises(SubjectError, match="longer than 64"):
        keys.subject_for(device(product_key="pk", device_key="d" * 65))
    long_ou = SUBJECT.replace("OU=EnOS", "OU=" + "u" * 65)
    with pytest.raises(SubjectError, match="OU is longer than 64"):
        keys.subject_for(device(asset_id="a", subject=long_ou))


def test_subject_error_is_a_csr_error_so_the_device_is_reported_not_crashed() -> None:
    assert issubclass(SubjectError, CsrError)
    assert issubclass(CsrError, ValueError)


# -- generate -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "key_type", "authority", "key_class"),
    [
        (KeyMode.RSA2048, "RSA-2048", "RSA", rsa.RSAPrivateKey),
        (KeyMode.EC256, "EC-P256", "ECC", ec.EllipticCurvePrivateKey),
    ],
)
def test_generate_makes_a_matching_key_and_sha256_csr(
    mode: KeyMode, key_type: str, authority: str, key_class: type
) -> None:
    subject = x509.Name.from_rfc4514_string(SUBJECT)
    material = keys.generate(mode, subject)

    assert (material.key_type, material.issue_authority) == (key_type, authority)
    csr = x509.load_pem_x509_csr(material.csr_pem.encode())
    assert csr.is_signature_valid
    assert isinstance(csr.signature_hash_algorithm, hashes.SHA256)
    assert csr.subject == subject
    assert material.key_pem is not None
    assert material.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, unencrypted
    private = serialization.load_pem_private_key(material.key_pem, password=None)
    assert isinstance(private, key_class)
    assert keys.public_key_sha256(private.public_key()) == material.public_key_sha256
    assert keys.public_key_sha256(csr.public_key()) == material.public_key_sha256
    assert keys.key_type(csr.public_key()) == key_type


def test_generate_makes_a_new_key_every_time() -> None:
    subject = x509.Name.from_rfc4514_string(SUBJECT)
    first = keys.generate(KeyMode.EC256, subject)
    second = keys.generate(KeyMode.EC256, subject)
    assert first.public_key_sha256 != second.public_key_sha256


@pytest.mark.parametrize("mode", [KeyMode.REUSE, KeyMode.CSR_COLUMN])
def test_generate_refuses_modes_without_a_key(mode: KeyMode) -> None:
    with pytest.raises(ValueError, match="does not generate keys"):
        keys.generate(mode, x509.Name.from_rfc4514_string(SUBJECT))


def test_key_material_repr_never_shows_the_private_key() -> None:
    material = keys.generate(KeyMode.EC256, x509.Name.from_rfc4514_string(SUBJECT))
    assert material.key_pem is not None
    body = material.key_pem.decode().splitlines()[1]
    assert body not in repr(material)
    assert "PRIVATE" not in repr(material)
    assert "<redacted>" in repr(material)


# -- load_csr_file --------------------------------------------------------------------------


def test_load_csr_file_reads_a_pem_csr(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "d.csr"
    path.write_bytes(csr_pem_for(key))
    material = keys.load_csr_file(path)
    assert material.key_pem is None
    assert (material.key_type, material.issue_authority) == ("EC-P256", "ECC")
    assert material.public_key_sha256 == keys.public_key_sha256(key.public_key())
    assert material.csr_pem == path.read_text()


def test_load_csr_file_accepts_the_enos_new_header_and_normalises_it(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    standard = csr_pem_for(key).decode()
    java_style = standard.replace("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST")
    path = tmp_path / "d.csr"
    path.write_text("some preamble keytool wrote\n" + java_style.rstrip("\n"))
    material = keys.load_csr_file(str(path))
    assert material.csr_pem == standard
    assert material.csr_pem.startswith("-----BEGIN CERTIFICATE REQUEST-----\n")
    assert (material.key_type, material.issue_authority) == ("RSA-2048", "RSA")


def test_load_csr_file_accepts_der(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = csr_pem_for(key)
    path = tmp_path / "d.der"
    path.write_bytes(x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER))
    assert keys.load_csr_file(path).csr_pem == pem.decode()


def test_load_csr_file_missing_or_a_directory(tmp_path: Path) -> None:
    with pytest.raises(CsrError, match=r"cannot read CSR file .*nope\.csr.*No such file"):
        keys.load_csr_file(tmp_path / "nope.csr")
    with pytest.raises(CsrError, match="cannot read CSR file"):
        keys.load_csr_file(tmp_path)


def test_load_csr_file_refuses_what_is_not_a_csr(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.csr"
    garbage.write_bytes(b"\x00\x01not a csr at all")
    with pytest.raises(CsrError, match="not a CSR"):
        keys.load_csr_file(garbage)

    key = ec.generate_private_key(ec.SECP256R1())
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(CsrError, match="no CERTIFICATE REQUEST PEM block"):
        keys.load_csr_file(key_file)

    broken = tmp_path / "broken.csr"
    broken.write_text(
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
    )
    with pytest.raises(CsrError, match="not a CSR"):
        keys.load_csr_file(broken)


def test_load_csr_file_refuses_a_bad_signature(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = bytearray(
        x509.load_pem_x509_csr(csr_pem_for(key)).public_bytes(serialization.Encoding.DER)
    )
    der[-1] ^= 0x01  # the last byte of the signature
    path = tmp_path / "tampered.csr"
    path.write_bytes(bytes(der))
    with pytest.raises(CsrError, match="signature is invalid"):
        keys.load_csr_file(path)


@pytest.mark.parametrize(
    ("make_key", "named"),
    [
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024), "RSA-1024"),
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=3072), "RSA-3072"),
        (lambda: ec.generate_private_key(ec.SECP384R1()), "EC-secp384r1"),
    ],
)
def test_load_csr_file_refuses_keys_enos_does_not_accept(
    tmp_path: Path, make_key: Callable[[], CertificateIssuerPrivateKeyTypes], named: str
) -> None:
    path = tmp_path / "d.csr"
    path.write_bytes(csr_pem_for(make_key()))
    with pytest.raises(CsrError, match=f"key is {named}; EnOS accepts RSA-2048 or EC-P256"):
        keys.load_csr_file(path)


def test_load_csr_file_refuses_a_csr_not_signed_with_sha256(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "d.csr"
    path.write_bytes(csr_pem_for(key, hashes.SHA384()))
    with pytest.raises(CsrError, match="signed with sha384; EnOS requires SHA-256"):
        keys.load_csr_file(path)


def test_load_csr_file_refuses_a_huge_file(tmp_path: Path) -> None:
    path = tmp_path / "huge.csr"
    path.write_bytes(b"A" * 100_000)
    with pytest.raises(CsrError, match="larger than"):
        keys.load_csr_file(path)


# -- from_journal ---------------------------------------------------------------------------


def test_from_journal_rebuilds_generated_material() -> None:
    original = keys.generate(KeyMode.EC256, x509.Name.from_rfc4514_string(SUBJECT))
    assert keys.from_journal(original.key_pem, original.csr_pem) == original


def test_from_journal_rebuilds_material_from_a_csr_file(tmp_path: Path) -> None:
    path = tmp_path / "d.csr"
    path.write_bytes(csr_pem_for(ec.generate_private_key(ec.SECP256R1())))
    original = keys.load_csr_file(path)
    assert keys.from_journal(None, original.csr_pem) == original


def test_from_journal_refuses_a_key_that_does_not_match_the_csr() -> None:
    subject = x509.Name.from_rfc4514_string(SUBJECT)
    first = keys.generate(KeyMode.EC256, subject)
    second = keys.generate(KeyMode.EC256, subject)
    with pytest.raises(CsrError, match="does not match"):
        keys.from_journal(second.key_pem, first.csr_pem)
    with pytest.raises(CsrError, match="cannot be loaded"):
        keys.from_journal(b"not a key", first.csr_pem)


def test_material_is_frozen() -> None:
    material = keys.generate(KeyMode.EC256, x509.Name.from_rfc4514_string(SUBJECT))
    with pytest.raises(AttributeError):
        material.key_type = "RSA-2048"  # type: ignore[misc]
    assert isinstance(material, KeyMaterial)


def test_load_csr_file_refuses_a_device_at_once(tmp_path: Path) -> None:
    # /dev/zero never ends and /dev/null is empty: neither is read as a CSR file.
    for device, kind in (("/dev/zero", "a character device"), ("/dev/null", "a character device")):
        with pytest.raises(CsrError, match=f"not a regular file \\({kind}\\)"):
            keys.load_csr_file(device)
    with pytest.raises(CsrError, match=r"not a regular file \(a folder\)"):
        keys.load_csr_file(tmp_path)
