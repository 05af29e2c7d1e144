"""Key pairs and certificate signing requests (CSRs) for the renewed certificates.

Pure and synchronous: key generation is CPU work (RSA-2048 takes tens of milliseconds), so the
pipeline runs these functions in a thread pool, never on the event loop.

EnOS accepts exactly two kinds of key (reference/enos-api.md §1.5, §5):

    key_type   issueAuthority   key                      CSR signature
    RSA-2048   RSA              RSA, 2048 bits           SHA256withRSA
    EC-P256    ECC              EC on prime256v1 (P-256) SHA256withECDSA

and a subject with all of C, ST, L, O, OU and CN (each at most 64 characters, C two letters).

    ValueError
    └── CsrError           no usable CSR for this device (file, journal or subject), and why
        └── SubjectError   the device's subject cannot be used (so no CSR can be made)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import NameOID

from batch.model import Device, KeyMode
from batch.safe_read import read_regular_file


class CsrError(ValueError):
    """A CSR that EnOS would refuse (or that we cannot read); the message says why."""


class SubjectError(CsrError):
    """A certificate subject that EnOS would refuse; the message says why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyMaterial:
    """A CSR ready to send, and the private key behind it when this job generated it."""

    key_type: str  # "RSA-2048" | "EC-P256" (for a CSR file: what its key is)
    issue_authority: str  # "RSA" | "ECC", matching the key (EnOS rule)
    csr_pem: str
    key_pem: bytes | None  # PKCS#8 PEM, unencrypted; None when the CSR came from a file
    public_key_sha256: str  # hex SHA-256 of the DER SubjectPublicKeyInfo

    def __repr__(self) -> str:
        # A dataclass repr would print the private key into any log line or traceback.
        key = "<redacted>" if self.key_pem is not None else "None"
        return (
            f"KeyMaterial(key_type={self.key_type!r}, issue_authority={self.issue_authority!r},"
            f" public_key_sha256={self.public_key_sha256!r}, key_pem={key})"
        )


# The key types EnOS accepts, and the issueAuthority that goes with each.
ISSUE_AUTHORITY: Mapping[str, str] = {"RSA-2048": "RSA", "EC-P256": "ECC"}

# The subject template of EnOS's documentation samples; CN is the device's own name.
TEMPLATE: tuple[tuple[x509.ObjectIdentifier, str], ...] = (
    (NameOID.COUNTRY_NAME, "CN"),
    (NameOID.STATE_OR_PROVINCE_NAME, "Shanghai"),
    (NameOID.LOCALITY_NAME, "Shanghai"),
    (NameOID.ORGANIZATION_NAME, "EnOS"),
    (NameOID.ORGANIZATIONAL_UNIT_NAME, "EnOS"),
)
REQUIRED_ATTRIBUTES: Mapping[x509.ObjectIdentifier, str] = {
    NameOID.COUNTRY_NAME: "C",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.LOCALITY_NAME: "L",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.COMMON_NAME: "CN",
}
MAX_ATTRIBUTE_LENGTH = 64

_CSR_BLOCK = re.compile(
    rb"-----BEGIN (?:NEW )?CERTIFICATE REQUEST-----(.+?)-----END (?:NEW )?CERTIFICATE REQUEST-----",
    re.DOTALL,
)
_MAX_CSR_FILE_BYTES = 64 * 1024  # a CSR is ~1 KiB; anything this big is not one


def subject_for(device: Device) -> x509.Name:
    """The subject of the device's new CSR: its current subject when known, else the template."""
    if device.subject:
        try:
            name = x509.Name.from_rfc4514_string(device.subject)
        except ValueError as exc:
            raise SubjectError(f"subject {device.subject!r} is not an RFC 4514 name") from exc
    else:
        common_name = device.device_key or device.asset_id
        if not common_name:
            raise SubjectError("device has neither deviceKey nor assetId for the CN")
        if len(common_name) > MAX_ATTRIBUTE_LENGTH:
            raise SubjectError(f"CN {common_name!r} is longer than {MAX_ATTRIBUTE_LENGTH} chars")
        attributes = [x509.NameAttribute(oid, value) for oid, value in TEMPLATE]
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        name = x509.Name(attributes)
    check_subject(name)
    return name


def check_subject(name: x509.Name) -> None:
    """Raise SubjectError unless the name has every attribute EnOS requires, none too long."""
    present = {attribute.oid for attribute in name}
    missing = [label for oid, label in REQUIRED_ATTRIBUTES.items() if oid not in present]
    if missing:
        raise SubjectError(f"subject {name.rfc4514_string()!r} lacks {', '.join(missing)}")
    for attribute in name:
        value = attribute.value
        if isinstance(value, str) and len(value) > MAX_ATTRIBUTE_LENGTH:
            label = attribute.rfc4514_attribute_name
            raise SubjectError(f"subject {label} is longer than {MAX_ATTRIBUTE_LENGTH} chars")


def generate(mode: KeyMode, subject: x509.Name) -> KeyMaterial:
    """A new private key of the mode's type and a SHA-256-signed CSR for `subject`."""
    key = new_key(mode)
    return _signed(key, _pkcs8_pem(key), subject)


def new_key(mode: KeyMode) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    """A new private key of the mode's type (RSA-2048: tens of milliseconds of CPU)."""
    if mode is KeyMode.RSA2048:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if mode is KeyMode.EC256:
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"key mode {mode.value!r} does not generate keys")


def _signed(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, key_pem: bytes, subject: x509.Name
) -> KeyMaterial:
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return _material(csr, key_pem)


def _pkcs8_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_csr_file(path: str | Path) -> KeyMaterial:
    """Read, check and normalise an operator-supplied CSR file (PEM, either header, or DER)."""
    try:
        # Not a plain open(): a FIFO there would block this thread (and the run) forever.
        data = read_regular_file(path, limit=_MAX_CSR_FILE_BYTES)
    except OSError as exc:
        raise CsrError(f"cannot read CSR file {str(path)!r}: {exc.strerror or exc}") from exc
    try:
        csr = parse_csr(data)
    except CsrError as exc:
        raise CsrError(f"CSR file {str(path)!r}: {exc}") from exc
    return _material(csr, None)


def from_journal(key_pem: bytes | None, csr_pem: str) -> KeyMaterial:
    """Rebuild the material recorded in the journal, checking the key still matches the CSR."""
    csr = parse_csr(csr_pem.encode("utf-8"))
    if key_pem is not None and private_key_sha256(key_pem) != public_key_sha256(csr.public_key()):
        raise CsrError("the journalled private key does not match the journalled CSR")
    return _material(csr, key_pem)


def parse_csr(data: bytes) -> x509.CertificateSigningRequest:
    """Parse a PEM (standard or Java "NEW" header) or DER CSR and apply the EnOS rules."""
    if b"-----BEGIN" in data:
        match = _CSR_BLOCK.search(data)
        if match is None:
            raise CsrError("no CERTIFICATE REQUEST PEM block (not a CSR)")
        pem = b"-----BEGIN CERTIFICATE REQUEST-----" + match.group(1)
        pem += b"-----END CERTIFICATE REQUEST-----\n"
        load = x509.load_pem_x509_csr
    else:
        pem, load = data, x509.load_der_x509_csr
    try:
        csr = load(pem)
    except ValueError as exc:
        raise CsrError(f"not a CSR ({exc or 'unparseable'})") from exc
    check_csr(csr)
    return csr


def check_csr(csr: x509.CertificateSigningRequest) -> None:
    """Raise CsrError unless the CSR's signature, key and hash are what EnOS accepts."""
    if not csr.is_signature_valid:
        raise CsrError("CSR signature is invalid")
    kind = key_type(csr.public_key())
    if kind not in ISSUE_AUTHORITY:
        raise CsrError(f"CSR key is {kind}; EnOS accepts {' or '.join(ISSUE_AUTHORITY)}")
    algorithm = csr.signature_hash_algorithm
    if not isinstance(algorithm, hashes.SHA256):
        name = algorithm.name if algorithm is not None else "no hash"
        raise CsrError(f"CSR is signed with {name}; EnOS requires SHA-256")


def key_type(public_key: PublicKeyTypes) -> str:
    """A short name for any public key: "RSA-2048", "EC-P256", "RSA-1024", "EC-secp384r1"..."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"RSA-{public_key.key_size}"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        curve = public_key.curve.name
        return "EC-P256" if curve == "secp256r1" else f"EC-{curve}"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(public_key, ed448.Ed448PublicKey):
        return "Ed448"
    return type(public_key).__name__


def public_key_sha256(public_key: PublicKeyTypes) -> str:
    """Hex SHA-256 of the key's DER SubjectPublicKeyInfo: how we compare keys."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def private_key_sha256(key_pem: bytes) -> str:
    """`public_key_sha256` of the public half of an unencrypted PEM private key."""
    try:
        key: PrivateKeyTypes = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:  # TypeError: the key is encrypted
        raise CsrError("the private key PEM cannot be loaded") from exc
    return public_key_sha256(key.public_key())


def _material(csr: x509.CertificateSigningRequest, key_pem: bytes | None) -> KeyMaterial:
    kind = key_type(csr.public_key())
    return KeyMaterial(
        key_type=kind,
        issue_authority=ISSUE_AUTHORITY[kind],
        csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        key_pem=key_pem,
        public_key_sha256=public_key_sha256(csr.public_key()),
    )
