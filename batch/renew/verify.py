"""Checks on a certificate EnOS issued, before the job trusts it.

Pure: the caller passes the time. Every check that fails adds one readable line to
`Verified.problems`; an empty tuple means the certificate is good. The checks:

- the certificate and the CA certificate parse (PEM; a missing trailing newline is fine);
- the certificate's public key is the one we sent in the CSR (when we sent one);
- it is signed by the returned CA, and that CA is a CA (BasicConstraints CA:TRUE);
- its serial number is the `certSN` EnOS reported;
- its validity is what was requested, or shorter only because the CA expires sooner
  (`clamped`); when nothing was requested (EnOS applied its default) any validity is
  accepted and reported; it starts within a day of now;
- with pinned CAs (`--pin-ca`), it chains to one of them through the returned CA certificates.

`Verified.ca_sha256` names the CA that signed it, so the renewer can notice a CA it has not
seen before in the campaign.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from batch.model import Issued
from batch.renew.keys import key_type, public_key_sha256

# How far notBefore may be from our clock, and how close to the CA's notAfter a shortened
# certificate must end to count as clamped by the CA's remaining life (clock skew, rounding).
TOLERANCE = timedelta(days=1)
SECONDS_PER_DAY = 86_400
_MAX_CHAIN = 8  # intermediate CAs followed towards a pinned CA; real chains have one or two


@dataclass(frozen=True, slots=True)
class _Ca:
    """A returned CA certificate and what is read from it once per campaign, not per device."""

    cert: x509.Certificate
    is_ca: bool  # BasicConstraints CA:TRUE
    sha256: str  # hex SHA-256 of its DER
    subject: str  # RFC 4514


@dataclass(frozen=True, slots=True, kw_only=True)
class Verified:
    """The verdict on one issued certificate, and the facts read from it."""

    problems: tuple[str, ...] = ()  # empty = OK
    cert_sha256: str | None = None  # hex SHA-256 of the certificate's DER (its fingerprint)
    serial: str | None = None  # decimal
    not_before: datetime | None = None
    not_after: datetime | None = None
    granted_days: int | None = None
    clamped: bool = False  # shorter than requested because the CA expires sooner
    key_type: str | None = None
    public_key_sha256: str | None = None
    ca_sha256: str | None = None  # hex SHA-256 of the DER of the returned CA that signed it
    ca_subject: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_issued(
    issued: Issued,
    *,
    expected_public_key_sha256: str | None,
    requested_days: int | None,
    now: datetime,
    pinned: Sequence[x509.Certificate] = (),
) -> Verified:
    """Check what EnOS returned; `now` is aware (a naive datetime is taken as UTC).

    With `pinned` CAs, the certificate must chain to one of them (through the returned CAs).
    """
    try:
        cert = _load_certificates(issued.cert_pem, "certificate")[0]
    except ValueError as exc:
        return Verified(problems=(str(exc),))
    problems: list[str] = []
    ca = _issuing_ca(cert, issued.ca_pem, problems)
    if pinned and not _chains_to(cert, issued.ca_pem, pinned):
        problems.append("certificate does not chain to a pinned CA (--pin-ca)")
    public_key = cert.public_key()
    key_sha256 = public_key_sha256(public_key)
    if expected_public_key_sha256 is not None and key_sha256 != expected_public_key_sha256:
        problems.append("certificate public key is not the key of the CSR we sent")
    problems.extend(_serial_problems(cert, issued.cert_sn))
    granted, clamped = _check_validity(cert, ca, requested_days, _aware(now), problems)
    return Verified(
        problems=tuple(problems),
        cert_sha256=_fingerprint(cert),
        serial=str(cert.serial_number),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        granted_days=granted,
        clamped=clamped,
        key_type=key_type(public_key),
        public_key_sha256=key_sha256,
        ca_sha256=None if ca is None else ca.sha256,
        ca_subject=None if ca is None else ca.subject,
    )


def load_pinned(pem: bytes, source: str) -> tuple[x509.Certificate, ...]:
    """The CA certificates of a --pin-ca file; ValueError when it holds none."""
    try:
        return tuple(x509.load_pem_x509_certificates(pem))
    except ValueError as exc:
        raise ValueError(f"--pin-ca {source} holds no PEM certificate") from exc


def ca_fingerprints(ca_pem: str) -> set[str]:
    """SHA-256 (hex, of the DER) of each certificate in a returned CA PEM; empty if unreadable."""
    try:
        return {ca.sha256 for ca in _parsed_cas(ca_pem)}
    except ValueError:
        return set()


def _chains_to(cert: x509.Certificate, ca_pem: str, pinned: Sequence[x509.Certificate]) -> bool:
    """Whether `cert` is signed by a pinned CA, directly or through the returned CAs."""
    try:
        returned = [ca.cert for ca in _parsed_cas(ca_pem)]
    except ValueError:
        returned = []
    current = cert
    for _ in range(_MAX_CHAIN):
        if any(_signed_by(current, anchor) for anchor in pinned):
            return True
        parent = next((ca for ca in returned if ca != current and _signed_by(current, ca)), None)
        if parent is None:
            return False
        current = parent
    return False


def _signed_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _load_certificates(pem: str | None, what: str) -> Sequence[x509.Certificate]:
    """Every certificate in a PEM string; ValueError naming `what` when there is none."""
    if not pem or not pem.strip():
        raise ValueError(f"{what} is missing")
    # The API's JSON escapes newlines; a client that decoded the envelope twice leaves "\n".
    text = pem if "\n" in pem.strip() else pem.replace("\\n", "\n")
    try:
        certificates = x509.load_pem_x509_certificates(text.encode("utf-8"))
    except ValueError as exc:
        raise ValueError(f"{what} does not parse as a PEM certificate") from exc
    return certificates


def _issuing_ca(cert: x509.Certificate, ca_pem: str, problems: list[str]) -> _Ca | None:
    """The returned CA certificate that signed `cert`, or None with the reason in problems.

    `verify_directly_issued_by` checks the issuer name as well as the signature, so the
    common case costs one signature check; names are only compared to explain a failure.
    """
    try:
        cas = _parsed_cas(ca_pem)
    except ValueError as exc:
        problems.append(str(exc))
        return None
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca.cert)
        except (InvalidSignature, ValueError, TypeError):
            continue
        if not ca.is_ca:
            problems.append("the returned CA certificate lacks BasicConstraints CA:TRUE")
        return ca
    issuer = cert.issuer
    named = [ca for ca in cas if ca.cert.subject == issuer]
    if not named:
        problems.append(
            f"certificate issuer {issuer.rfc4514_string()!r} is not the returned CA"
            f" {cas[0].subject!r}"
        )
        return None
    problems.append("certificate signature does not verify with the returned CA's key")
    return named[0]


@functools.lru_cache(maxsize=8)
def _parsed_cas(ca_pem: str) -> tuple[_Ca, ...]:
    """Each CA in the PEM with its facts: every answer repeats the same CA, so it is parsed
    (and fingerprinted) once, not once per device."""
    return tuple(
        _Ca(ca, _is_ca(ca), _fingerprint(ca), ca.subject.rfc4514_string())
        for ca in _load_certificates(ca_pem, "CA certificate")
    )


def _is_ca(ca: x509.Certificate) -> bool:
    try:
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return constraints.ca


def _serial_problems(cert: x509.Certificate, cert_sn: str) -> list[str]:
    try:
        reported = int(str(cert_sn).strip(), 10)
    except ValueError:
        return [f"certSN {cert_sn!r} is not a decimal number"]
    if reported != cert.serial_number:
        return [f"certificate serial {cert.serial_number} is not the reported certSN {reported}"]
    return []


def _check_validity(
    cert: x509.Certificate,
    ca: _Ca | None,
    requested_days: int | None,
    now: datetime,
    problems: list[str],
) -> tuple[int, bool]:
    """(granted days, clamped); appends a problem when the validity is not acceptable."""
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    granted = round((not_after - not_before).total_seconds() / SECONDS_PER_DAY)
    clamped = False
    if requested_days is not None and granted != requested_days:
        clamped = (
            granted < requested_days
            and ca is not None
            and abs(not_after - ca.cert.not_valid_after_utc) <= TOLERANCE
        )
        if not clamped:
            problems.append(f"granted {granted} days, requested {requested_days}")
    if abs(not_before - now) > TOLERANCE:
        problems.append(
            f"notBefore {not_before.isoformat()} is more than a day from now ({now.isoformat()})"
        )
    return granted, clamped


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
