"""The simulated EnOS certificate authorities (one per issue authority) and the CSR rules.

RSA requests need an RSA-2048 key signed with sha256WithRSA; ECC requests a P-256 key signed
with ecdsa-with-SHA256 (reference §1.5). Anything else is an "Invalid cert request".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class Authority(enum.StrEnum):
    """The `issueAuthority` values EnOS accepts."""

    RSA = "RSA"
    ECC = "ECC"


_CA_SUBJECTS = {
    # As in the List Certificate sample's `issuer` fields (reference §1.5).
    Authority.RSA: ("EnOS CA", "EnOS CA", "EnOS"),
    Authority.ECC: ("EnOS ECC CA", "Envision Digital", "Envision"),
}

CA_KEY_USAGE = x509.KeyUsage(
    # A CA key signs certificates and CRLs and nothing else.
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


class CsrError(ValueError):
    """A CSR that EnOS would refuse; the message is the documented "Invalid cert request!" text."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(f"Invalid cert request!message: {message}, detail message: {detail}")


def device_subject(common_name: str) -> x509.Name:
    """The subject EnOS samples use for devices, with the given common name."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Shanghai"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Shanghai"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "EnOS"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "EnOS"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def authority_of_key(key: PublicKey) -> Authority:
    """The issue authority matching a public key's type."""
    return Authority.RSA if isinstance(key, rsa.RSAPublicKey) else Authority.ECC


def public_key_sha256(key: PublicKey) -> str:
    """Lowercase hex SHA-256 of the DER SubjectPublicKeyInfo."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    return digest.finalize().hex()


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A self-signed CA that signs device certificates for one issue authority."""

    authority: Authority
    key: PrivateKey
    certificate: x509.Certificate
    pem: str  # no trailing newline, like the documented `caCert` sample

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    @property
    def issuer_text(self) -> str:
        """The issuer as List Certificate spells it (most specific RDN first)."""
        return self.certificate.subject.rfc4514_string().replace(",", ", ")

    def issue(
        self,
        *,
        subject: x509.Name,
        public_key: PublicKey,
        serial: int,
        not_before: datetime,
        not_after: datetime,
    ) -> x509.Certificate:
        """Sign a device certificate: CA:FALSE, SKI and AKI, SHA-256."""
        ca_ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(serial)
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski.value),
                critical=False,
            )
        )
        return builder.sign(self.key, hashes.SHA256())


def make_authority(authority: Authority, *, now: datetime, days: int) -> CertificateAuthority:
    """Create a fresh self-signed CA valid from `now` for `days` days."""
    key: PrivateKey
    if authority is Authority.RSA:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    cn, ou, org = _CA_SUBJECTS[authority]
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Shanghai"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Shanghai"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )
    public = key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(public)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode().rstrip("\n")
    return CertificateAuthority(authority, key, cert, pem)


def load_csr(pem: str) -> x509.CertificateSigningRequest:
    """Parse a PEM CSR; both `CERTIFICATE REQUEST` and `NEW CERTIFICATE REQUEST` headers work."""
    text = pem.replace("NEW CERTIFICATE REQUEST", "CERTIFICATE REQUEST")
    try:
        csr = x509.load_pem_x509_csr(text.encode())
    except ValueError as exc:
        raise CsrError("the CSR cannot be parsed", str(exc)) from exc
    if not csr.is_signature_valid:
        raise CsrError("the CSR signature is invalid", "signature does not verify")
    return csr


def check_csr(csr: x509.CertificateSigningRequest, authority: Authority) -> PublicKey:
    """Return the CSR's public key if it fits `authority`, else raise CsrError."""
    key = csr.public_key()
    hash_name = csr.signature_hash_algorithm.name if csr.signature_hash_algorithm else "none"
    if authority is Authority.RSA:
        if not isinstance(key, rsa.RSAPublicKey) or key.key_size != 2048:
            raise CsrError("RSA issue authority requires an RSA 2048-bit key", _key_text(key))
        if hash_name != "sha256":
            raise CsrError("RSA issue authority requires SHA256withRSA", hash_name)
        return key
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise CsrError("ECC issue authority requires an EC prime256v1 key", _key_text(key))
    if hash_name != "sha256":
        raise CsrError("ECC issue authority requires SHA256withECDSA", hash_name)
    return key


def _key_text(key: object) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size} bits"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    return type(key).__name__
