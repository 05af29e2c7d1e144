"""Write each renewed device's certificate files into its own folder, atomically.

    <out>/bundles/<safe(orgId)>/<safe(identity)>/
        cert.pem        the new certificate
        ca.pem          the CA certificate(s) EnOS returned
        fullchain.pem   cert.pem then ca.pem
        key.pem         the private key, only when the job generated it (mode 0600)
        bundle.p12      optional PKCS#12 of key + cert + CA (mode 0600)

Every file is written to a temporary file in the same folder and renamed over the old one, so a
crash of the process leaves either the old or the new file, never half of one. Bundle files are
not fsynced one by one (that cost ~1.5 ms of CPU per device, the largest share of a renewal):
the journal, which is fsynced before it acknowledges, holds every issued certificate and key,
a rerun rewrites any bundle whose cert.pem is missing or differs from the journal's, and the run
ends with one sync of everything it wrote. Secret files are created 0600 from the start.

Device identifiers come from an inventory, so they are untrusted: `safe()` turns one into a
single, harmless path component, and tags every rewritten name with a hash of the original so
that two different identifiers never share a folder.

Blocking I/O by design: the pipeline calls `write_bundle` in a worker thread.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from batch.model import Device

MAX_NAME = 120  # far below the 255-byte limit of common filesystems, with room for the tag
PUBLIC_MODE = 0o644  # narrowed further by the process umask
SECRET_MODE = 0o600

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]", re.ASCII)
_TAG = re.compile(r"-[0-9a-f]{8}\Z")
_TAG_LEN = 9  # "-" + 8 hex
_PKCS12_KEYS = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    dsa.DSAPrivateKey,
)


def safe(name: str) -> str:
    """`name` as one path component of [A-Za-z0-9._-], never "", "." or ".." or hidden.

    A name that needed any change (or that already ends like a tag, `-` + 8 hex) gets
    `-` + the first 8 hex of sha256(name) appended, so different names stay different.
    """
    return _safe(name, tag_source=name, force_tag=False)


def _safe(display: str, *, tag_source: str, force_tag: bool) -> str:
    cleaned = _UNSAFE.sub("_", display)
    stripped = cleaned.lstrip(".")
    cleaned = "_" * (len(cleaned) - len(stripped)) + stripped  # no hidden files, no "." or ".."
    changed = cleaned != display or not cleaned or len(cleaned) > MAX_NAME
    if not (changed or force_tag or _TAG.search(display)):
        return cleaned
    digest = hashlib.sha256(tag_source.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned[: MAX_NAME - _TAG_LEN] or '_'}-{digest}"


def device_dir_name(device: Device) -> str:
    """The device's folder name: its assetId, or productKey + "__" + deviceKey, made safe.

    An assetId containing "__" could read as a pair, and a pair whose parts contain "__" or
    touch the separator with "_" could split two ways; those names are always tagged (and the
    tag hashes which kind of identifier it was), so an assetId never shares a pair's folder.
    """
    if device.asset_id:
        return _safe(
            device.asset_id,
            tag_source=f"asset\n{device.asset_id}",
            force_tag="__" in device.asset_id,
        )
    product, dev = device.product_key or "", device.device_key or ""
    ambiguous = "__" in product or "__" in dev or product.endswith("_") or dev.startswith("_")
    return _safe(f"{product}__{dev}", tag_source=f"pair\n{product}\n{dev}", force_tag=ambiguous)


def bundle_dir(out_dir: str | os.PathLike[str], device: Device) -> Path:
    """Where the device's bundle goes: out_dir/bundles/<safe(orgId)>/<device folder>/."""
    return Path(out_dir) / "bundles" / safe(device.org_id) / device_dir_name(device)


def write_bundle(
    out_dir: str | os.PathLike[str],
    device: Device,
    *,
    cert_pem: str,
    ca_pem: str,
    key_pem: bytes | None,
    pkcs12_passphrase: bytes | None = None,
) -> Path:
    """Write (or replace) the device's bundle and return its folder.

    key.pem is written only when `key_pem` is given; an existing key.pem is never deleted (it
    may be the very key a reused-key renewal certifies). A bundle.p12 left from an earlier
    write is removed when no passphrase is given now, so it never holds a superseded cert.
    """
    if pkcs12_passphrase is not None and key_pem is None:
        raise ValueError("a PKCS#12 bundle needs the private key")
    folder = bundle_dir(out_dir, device)
    folder.mkdir(parents=True, exist_ok=True)
    chain = _with_newline(cert_pem) + _with_newline(ca_pem)
    if key_pem is not None:
        _write_file(folder / "key.pem", key_pem, mode=SECRET_MODE)
    _write_file(folder / "ca.pem", _with_newline(ca_pem).encode(), mode=PUBLIC_MODE)
    _write_file(folder / "cert.pem", _with_newline(cert_pem).encode(), mode=PUBLIC_MODE)
    _write_file(folder / "fullchain.pem", chain.encode(), mode=PUBLIC_MODE)
    p12 = folder / "bundle.p12"
    if pkcs12_passphrase is not None and key_pem is not None:
        data = _pkcs12(device.identity, cert_pem, ca_pem, key_pem, pkcs12_passphrase)
        _write_file(p12, data, mode=SECRET_MODE)
    else:
        p12.unlink(missing_ok=True)
    return folder


def _with_newline(pem: str) -> str:
    return pem if pem.endswith("\n") else pem + "\n"


def _pkcs12(name: str, cert_pem: str, ca_pem: str, key_pem: bytes, passphrase: bytes) -> bytes:
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, _PKCS12_KEYS):
        raise ValueError(f"a {type(key).__name__} key cannot go into a PKCS#12 bundle")
    return pkcs12.serialize_key_and_certificates(
        name=name.encode(),
        key=key,
        cert=x509.load_pem_x509_certificate(cert_pem.encode()),
        cas=x509.load_pem_x509_certificates(ca_pem.encode()),
        encryption_algorithm=serialization.BestAvailableEncryption(passphrase),
    )


def _write_file(path: Path, data: bytes, *, mode: int) -> None:
    with atomic_output(path, mode=mode, durable=False) as stream:
        stream.write(data)


@contextmanager
def atomic_output(
    path: str | os.PathLike[str], *, mode: int = PUBLIC_MODE, durable: bool = True
) -> Iterator[IO[bytes]]:
    """Yield a binary stream that becomes `path` only if the block completes.

    The temporary file lives next to `path` (same filesystem, so the rename is atomic) and is
    created with `mode` (O_EXCL), so a secret is never readable by others, not even briefly.
    `durable` fsyncs the file and its folder, so the new content also survives a power cut.
    """
    path = Path(path)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as stream:
            yield stream
            stream.flush()
            if durable:
                os.fsync(stream.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    if durable:
        fsync_dir(path.parent)


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make renames inside `folder` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
