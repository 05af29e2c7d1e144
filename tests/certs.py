"""Real test keys, CAs, leaf certificates and CSRs, made with cryptography.

One builder for every test module that needs certificate material: the parameters cover the
quirks the tests ask for (RSA or EC keys, a CA flag that is true, false or absent, the CA's
expiry, a leaf's serial, validity and subject). Times default to the real clock, so tools
that read it (openssl verify) accept the result; tests about dates pass `now` explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from batch.simulator.ca import CA_KEY_USAGE

KeyKind = Literal["RSA", "EC"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
SigningHash = hashes.SHA256 | hashes.SHA384 | hashes.SHA512

LEAF_SERIAL = 52771  # the new certSN of the documented Renew sample


def new_key(
    kind: KeyKind = "EC", *, bits: int = 2048, curve: ec.EllipticCurve | None = None
) -> PrivateKey:
    """A fresh private key: RSA of `bits` bits, or EC on `curve` (P-256 unless told)."""
    if kind == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return ec.generate_private_key(curve or ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    """The unencrypted PKCS#8 PEM of a private key."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def name(common_name: str, *, organization: str = "EnOS") -> x509.Name:
    """A short subject: C=CN, O=`organization`, CN=`common_name`."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def pem(cert: x509.Certificate) -> str:
    """The PEM text of a certificate, with its trailing newline."""
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def csr_pem(key: PrivateKey, subject: x509.Name, algorithm: SigningHash | None = None) -> str:
    """A PEM CSR for `key`, signed with SHA-256 unless another hash is asked for."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    csr = builder.sign(key, algorithm or hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True)
class Ca:
    """A self-signed test CA: its key and certificate."""

    key: PrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> str:
        return pem(self.cert)


def make_ca(
    kind: KeyKind = "EC",
    *,
    common_name: str = "EnOS CA",
    now: datetime | None = None,
    expires: datetime | None = None,
    is_ca: bool | None = True,
) -> Ca:
    """A self-signed CA valid from a day before `now` until `expires` (ten years on).

    `is_ca=False` writes BasicConstraints CA:FALSE and `is_ca=None` leaves the extension out,
    for tests of certificates whose "CA" is not one.
    """
    key = new_key(kind)
    start = now or datetime.now(UTC)
    subject = name(common_name)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - timedelta(days=1))
        .not_valid_after(expires or start + timedelta(days=3650))
    )
    if is_ca is not None:
        constraints = x509.BasicConstraints(ca=is_ca, path_length=None)
        builder = builder.add_extension(constraints, critical=True)
    if is_ca:
        builder = builder.add_extension(CA_KEY_USAGE, critical=True)
    return Ca(key, builder.sign(key, hashes.SHA256()))


def issue(
    ca: Ca,
    public_key: CertificatePublicKeyTypes,
    *,
    subject: x509.Name,
    serial: int = LEAF_SERIAL,
    not_before: datetime | None = None,
    days: float = 365,
    not_after: datetime | None = None,
) -> str:
    """The PEM of a CA:FALSE leaf for `public_key`, signed by `ca`.

    Valid from `not_before` (a minute ago unless told) for `days` days, or until `not_after`.
    """
    start = not_before or datetime.now(UTC) - timedelta(minutes=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(not_after or start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca.key, hashes.SHA256())
    )
    return pem(cert)
