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
a rerun rewrites any bundle whose cert.pem is missing or differs from the journal's (cert.pem is
written last, so the check covers the whole bundle), and the run ends with one sync of everything
it wrote. Secret files are created 0600 from the start.

Device identifiers come from an inventory, so they are untrusted: `safe()` turns one into a
single, harmless path component, and tags every rewritten name with a hash of the original so
that two different identifiers never share a folder.

Blocking I/O by design: the pipeline calls `write_bundle` in a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from batch.model import Device
from batch.safe_read import read_regular_file
from batch.storage import FILE_MODE, FOLDER_MODE, SECRET_MODE, make_dirs

MAX_NAME = 120  # far below the 255-byte limit of common filesystems, with room for the tag
PUBLIC_MODE = FILE_MODE  # narrowed further by a stricter umask, never widened (batch.storage)

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
    return Path(out_dir, *_bundle_parts(device))


def _bundle_parts(device: Device) -> tuple[str, str, str]:
    # Plain strings: the walk below takes components, and Path arithmetic cost a bundle ~6 us.
    return ("bundles", safe(device.org_id), device_dir_name(device))


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
    cert.pem is written last: a rerun compares it with the journal, so a cert.pem that holds
    the journal's certificate means every other file of the bundle was written before it.
    """
    if pkcs12_passphrase is not None and key_pem is None:
        raise ValueError("a PKCS#12 bundle needs the private key")
    parts = _bundle_parts(device)
    cert = _with_newline(cert_pem).encode()
    ca = _with_newline(ca_pem).encode()
    with _Folder(out_dir, parts) as files:
        fresh = files.fresh
        if key_pem is not None:
            files.write("key.pem", key_pem, mode=SECRET_MODE)
        files.write("ca.pem", ca, mode=PUBLIC_MODE)
        files.write("fullchain.pem", cert + ca, mode=PUBLIC_MODE)
        if pkcs12_passphrase is not None and key_pem is not None:
            data = _pkcs12(device.identity, cert_pem, ca_pem, key_pem, pkcs12_passphrase)
            files.write("bundle.p12", data, mode=SECRET_MODE)
        elif not fresh:
            files.remove("bundle.p12")
        files.write("cert.pem", cert, mode=PUBLIC_MODE)
    return Path(out_dir, *parts)


class UnsafePathError(Exception):
    """A folder on the way to a bundle is a symbolic link or not a folder: nothing written."""

    def __init__(self, relative: str) -> None:
        super().__init__(
            f"{relative} is a symbolic link or not a folder: the bundle was not written through "
            "it (the certificate is kept in the journal; remove it and rerun to write the bundle)"
        )


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_dir_at(parent: int, name: str, *, create: bool) -> tuple[int, bool]:
    """Open the folder `name` inside `parent` without following a link; (fd, created)."""
    created = False
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent), created
    except FileNotFoundError:
        if not create:
            raise
    with contextlib.suppress(FileExistsError):  # a dangling link, or a racing creator
        os.mkdir(name, FOLDER_MODE, dir_fd=parent)
        created = True
    return os.open(name, _DIR_FLAGS, dir_fd=parent), created


def open_below(
    out_dir: str | os.PathLike[str], parts: tuple[str, ...], *, create: bool
) -> tuple[int, bool]:
    """A descriptor of out_dir/parts..., walked one folder at a time, never through a link,
    and whether the last folder was created now.

    `out_dir` itself may be a link (the operator named it). Raises UnsafePathError when a
    folder below it is a link (dangling or not) or not a folder; FileNotFoundError when one is
    missing and `create` is false.
    """
    try:
        fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        if not create:
            raise
        make_dirs(Path(out_dir))
        fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    created = False
    try:
        for depth, part in enumerate(parts):
            try:
                child, created = _open_dir_at(fd, part, create=create)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                raise UnsafePathError("/".join(parts[: depth + 1])) from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd, created


def read_bundle_file(
    out_dir: str | os.PathLike[str], relative: str, name: str, *, limit: int = 1 << 20
) -> bytes:
    """A file of a written bundle (`relative` to out_dir), never read through a link or from
    anything but a regular file; OSError or UnsafePathError otherwise."""
    parts = tuple(Path(relative).parts)
    if not parts or any(part in ("", ".", "..", "/") for part in parts):
        raise UnsafePathError(relative)
    fd, _ = open_below(out_dir, parts, create=False)
    try:
        return read_regular_file(name, limit=limit, dir_fd=fd, follow_links=False)
    finally:
        os.close(fd)


class _Folder:
    """Atomic file writes inside one folder, through a descriptor of the folder.

    A bundle is written for every renewed device, so this is the hot path of the job's file
    I/O: plain `os` calls relative to the folder's descriptor, no Path objects and no
    exceptions on the common path (they cost about half of a bundle's CPU when it went through
    `atomic_output`). Each file is created under a temporary name with its final mode
    (O_EXCL: a secret is never readable by others, not even briefly) and renamed into place.
    Neither step follows a link: O_EXCL refuses an existing name, and a rename replaces a
    link planted at the final name instead of writing through it.
    """

    def __init__(self, out_dir: str | os.PathLike[str], parts: tuple[str, ...]) -> None:
        self._fd, self.fresh = open_below(out_dir, parts, create=True)

    def __enter__(self) -> _Folder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        os.close(self._fd)

    def write(self, name: str, data: bytes, *, mode: int) -> None:
        temp = f".{name}.tmp"
        fd = self._create(temp, mode)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.rename(temp, name, src_dir_fd=self._fd, dst_dir_fd=self._fd)
        except BaseException:
            self.remove(temp)
            raise

    def _create(self, temp: str, mode: int) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            return os.open(temp, flags, mode, dir_fd=self._fd)
        except FileExistsError:  # left by a killed run: its mode is not to be trusted
            self.remove(temp)
            return os.open(temp, flags, mode, dir_fd=self._fd)

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self._fd)


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
