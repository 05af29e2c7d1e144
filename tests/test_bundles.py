"""batch.store.bundles: safe folder names, atomic files, 0600 keys, PKCS#12, openssl verify."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from hypothesis import given, settings
from hypothesis import strategies as st

from batch.model import Device
from batch.storage import atomic_output
from batch.store.bundles import (
    MAX_NAME,
    UnsafePathError,
    bundle_dir,
    device_dir_name,
    read_bundle_file,
    safe,
    write_bundle,
)
from tests import certs

# --- a real CA and leaf -----------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    cert_pem: str
    ca_pem: str
    key_pem: bytes


CA_NAME = "Test Device CA"


def issue(ca: certs.Ca, cn: str, kind: certs.KeyKind) -> Issued:
    """A leaf for `cn` with a fresh key of `kind`, signed by `ca`, and that key's PEM."""
    key = certs.new_key(kind)
    cert_pem = certs.issue(ca, key.public_key(), subject=certs.name(cn))
    return Issued(cert_pem, ca.pem, certs.key_pem(key))


@pytest.fixture(scope="module")
def ca() -> certs.Ca:
    return certs.make_ca(common_name=CA_NAME)


@pytest.fixture(scope="module")
def leaf(ca: certs.Ca) -> Issued:
    return issue(ca, "asset-1", "RSA")


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive umask: file modes then come from the code alone."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


ASSET = Device(row=2, org_id="o1", asset_id="asset-1", cert_sn=52770)
PAIR = Device(row=3, org_id="o1", product_key="pk", device_key="dev.1", cert_sn=1)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- names ------------------------------------------------------------------------------------


def test_clean_identifiers_are_used_as_they_are(tmp_path: Path) -> None:
    assert bundle_dir(tmp_path, ASSET) == tmp_path / "bundles" / "o1" / "asset-1"
    assert bundle_dir(tmp_path, PAIR) == tmp_path / "bundles" / "o1" / "pk__dev.1"


def _tag(original: str) -> str:
    return hashlib.sha256(original.encode()).hexdigest()[:8]


@pytest.mark.parametrize(
    ("name", "expected_prefix"),
    [
        ("", "_"),
        (".", "_"),
        ("..", "__"),
        (".hidden", "_hidden"),
        ("../../etc", "___.._etc"),
        ("a/b", "a_b"),
        ("a\\b", "a_b"),
        ("caf\u00e9", "caf_"),
        ("x\x00y", "x_y"),
        ("abc-0123abcd", "abc-0123abcd"),  # looks like a tag: tagged so it cannot clash with one
    ],
)
def test_unsafe_names_are_rewritten_and_tagged(name: str, expected_prefix: str) -> None:
    assert safe(name) == f"{expected_prefix}-{_tag(name)}"


def test_long_names_are_capped_and_tagged() -> None:
    name = "a" * 500
    result = safe(name)
    assert len(result) == MAX_NAME
    assert result.endswith("-" + _tag(name))
    assert safe("a" * MAX_NAME) == "a" * MAX_NAME  # exactly at the cap: unchanged


def test_asset_id_that_reads_like_a_pair_does_not_share_the_pairs_folder() -> None:
    asset = Device(row=2, org_id="o", asset_id="pk__dk", cert_sn=1)
    pair = Device(row=3, org_id="o", product_key="pk", device_key="dk", cert_sn=1)
    assert device_dir_name(pair) == "pk__dk"
    assert device_dir_name(asset).startswith("pk__dk-")
    split_one = Device(row=4, org_id="o", product_key="a_", device_key="b", cert_sn=1)
    split_two = Device(row=5, org_id="o", product_key="a", device_key="_b", cert_sn=1)
    assert device_dir_name(split_one) != device_dir_name(split_two)


SAFE_COMPONENT = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9._\-]*")


@given(st.text())
@settings(max_examples=500)
def test_safe_always_gives_one_harmless_component(name: str) -> None:
    result = safe(name)
    assert SAFE_COMPONENT.fullmatch(result)
    assert result not in {".", ".."}
    assert 0 < len(result) <= MAX_NAME


@given(st.text(), st.text())
@settings(max_examples=500)
def test_different_names_never_share_a_safe_name(first: str, second: str) -> None:
    if first != second:
        assert safe(first) != safe(second)


@given(st.text(max_size=3, alphabet="a_/."), st.text(max_size=3, alphabet="a_/."))
@settings(max_examples=300)
def test_near_identical_short_names_stay_distinct(first: str, second: str) -> None:
    if first != second:
        assert safe(first) != safe(second)


identifiers = st.text(min_size=1, max_size=40) | st.sampled_from(
    ["..", ".", "../..", "/etc/passwd", "a/../../b", "__", "_", "-", "~", "\\..\\.."]
)
devices = st.one_of(
    st.builds(Device, row=st.just(2), org_id=identifiers, asset_id=identifiers, cert_sn=st.just(1)),
    st.builds(
        Device,
        row=st.just(2),
        org_id=identifiers,
        product_key=identifiers,
        device_key=identifiers,
        cert_sn=st.just(1),
    ),
)


@given(devices)
@settings(max_examples=500)
def test_no_identifier_escapes_the_bundles_folder(device: Device) -> None:
    out = Path("/srv/run-out")
    folder = bundle_dir(out, device)
    resolved = Path(os.path.normpath(folder))
    assert resolved.parent.parent == out / "bundles"
    assert resolved == folder  # nothing for normpath to collapse: no "..", no "."


@given(devices, devices)
@settings(max_examples=500)
def test_different_devices_never_share_a_folder(first: Device, second: Device) -> None:
    if (first.org_id, first.asset_id, first.product_key, first.device_key) != (
        second.org_id,
        second.asset_id,
        second.product_key,
        second.device_key,
    ):
        assert bundle_dir("/out", first) != bundle_dir("/out", second)


# --- writing ----------------------------------------------------------------------------------


def test_bundle_files_hold_cert_ca_chain_and_key(tmp_path: Path, leaf: Issued) -> None:
    folder = write_bundle(
        tmp_path, ASSET, cert_pem=leaf.cert_pem, ca_pem=leaf.ca_pem, key_pem=leaf.key_pem
    )
    assert folder == tmp_path / "bundles" / "o1" / "asset-1"
    assert sorted(p.name for p in folder.iterdir()) == [
        "ca.pem", "cert.pem", "fullchain.pem", "key.pem"
    ]
    assert (folder / "cert.pem").read_text() == leaf.cert_pem
    assert (folder / "ca.pem").read_text() == leaf.ca_pem
    chain = x509.load_pem_x509_certificates((folder / "fullchain.pem").read_bytes())
    assert chain[0].serial_number == 52771
    assert chain[1] == x509.load_pem_x509_certificate(leaf.ca_pem.encode())
    assert (folder / "key.pem").read_bytes() == leaf.key_pem


def test_key_is_0600_and_public_files_are_not(
    tmp_path: Path, leaf: Issued, open_umask: None
) -> None:
    folder = write_bundle(
        tmp_path, ASSET, cert_pem=leaf.cert_pem, ca_pem=leaf.ca_pem, key_pem=leaf.key_pem
    )
    assert mode(folder / "key.pem") == 0o600
    assert mode(folder / "cert.pem") == mode(folder / "fullchain.pem") == 0o644


def test_temporary_key_file_is_0600_from_creation(tmp_path: Path, open_umask: None) -> None:
    """The secret is never readable by others: not even the temp file before the rename."""
    target = tmp_path / "key.pem"
    with atomic_output(target, mode=0o600) as stream:
        (temp,) = [p for p in tmp_path.iterdir() if p.name != "key.pem"]
        assert mode(temp) == 0o600
        stream.write(b"secret")
        assert not target.exists()  # nothing appears under the real name before the end
    assert target.read_bytes() == b"secret"
    assert [p.name for p in tmp_path.iterdir()] == ["key.pem"]


def test_a_temporary_file_left_by_a_killed_run_never_lends_its_mode_to_the_key(
    tmp_path: Path, leaf: Issued, open_umask: None
) -> None:
    folder = bundle_dir(tmp_path, ASSET)
    folder.mkdir(parents=True)
    leftover = folder / ".key.pem.tmp"  # a run killed mid-write left it, readable by all
    leftover.write_bytes(b"half")
    leftover.chmod(0o666)
    write_bundle(tmp_path, ASSET, cert_pem=leaf.cert_pem, ca_pem=leaf.ca_pem, key_pem=leaf.key_pem)
    assert mode(folder / "key.pem") == 0o600
    assert (folder / "key.pem").read_bytes() == leaf.key_pem
    assert sorted(p.name for p in folder.iterdir()) == [
        "ca.pem", "cert.pem", "fullchain.pem", "key.pem"
    ]


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "cert.pem"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(target) as stream:
        stream.write(b"half of a new")
        raise RuntimeError("disk on fire")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["cert.pem"]


def test_no_key_given_means_no_key_file(tmp_path: Path, leaf: Issued) -> None:
    folder = write_bundle(tmp_path, PAIR, cert_pem=leaf.cert_pem, ca_pem=leaf.ca_pem, key_pem=None)
    assert not (folder / "key.pem").exists()
    assert folder.name == "pk__dev.1"


def test_rewrite_replaces_the_bundle_but_keeps_an_earlier_key(
    tmp_path: Path, ca: certs.Ca, leaf: Issued
) -> None:
    write_bundle(
        tmp_path,
        ASSET,
        cert_pem=leaf.cert_pem,
        ca_pem=leaf.ca_pem,
        key_pem=leaf.key_pem,
        pkcs12_passphrase=b"pw",
    )
    newer = issue(ca, "asset-1", "EC")
    folder = write_bundle(
        tmp_path, ASSET, cert_pem=newer.cert_pem, ca_pem=newer.ca_pem, key_pem=None
    )
    assert (folder / "cert.pem").read_text() == newer.cert_pem
    assert (folder / "fullchain.pem").read_text().startswith(newer.cert_pem)
    assert (folder / "key.pem").read_bytes() == leaf.key_pem  # a private key is never deleted
    assert not (folder / "bundle.p12").exists()  # it held the superseded certificate
    assert sorted(p.name for p in folder.iterdir()) == [
        "ca.pem", "cert.pem", "fullchain.pem", "key.pem"
    ]


def test_pem_without_trailing_newline_still_makes_a_valid_chain(
    tmp_path: Path, leaf: Issued
) -> None:
    folder = write_bundle(
        tmp_path,
        ASSET,
        cert_pem=leaf.cert_pem.rstrip("\n"),
        ca_pem=leaf.ca_pem.rstrip("\n"),
        key_pem=None,
    )
    chain = x509.load_pem_x509_certificates((folder / "fullchain.pem").read_bytes())
    assert len(chain) == 2


def test_pkcs12_holds_key_cert_and_ca_under_the_device_name(
    tmp_path: Path, ca: certs.Ca, open_umask: None
) -> None:
    issued = issue(ca, "pk/dev.1", "EC")
    folder = write_bundle(
        tmp_path,
        PAIR,
        cert_pem=issued.cert_pem,
        ca_pem=issued.ca_pem,
        key_pem=issued.key_pem,
        pkcs12_passphrase=b"correct horse",
    )
    p12 = folder / "bundle.p12"
    assert mode(p12) == 0o600
    loaded = pkcs12.load_pkcs12(p12.read_bytes(), b"correct horse")
    assert loaded.cert is not None and loaded.key is not None
    assert loaded.cert.friendly_name == b"pk/dev.1"
    assert loaded.cert.certificate == x509.load_pem_x509_certificate(issued.cert_pem.encode())
    assert [c.certificate for c in loaded.additional_certs] == [ca.cert]
    key_der = loaded.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert key_der == loaded.cert.certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ValueError):
        pkcs12.load_pkcs12(p12.read_bytes(), b"wrong")


def test_pkcs12_without_a_key_is_refused(tmp_path: Path, leaf: Issued) -> None:
    with pytest.raises(ValueError, match="private key"):
        write_bundle(
            tmp_path,
            ASSET,
            cert_pem=leaf.cert_pem,
            ca_pem=leaf.ca_pem,
            key_pem=None,
            pkcs12_passphrase=b"pw",
        )
    assert not (tmp_path / "bundles").exists()


def test_hostile_identifiers_write_inside_the_bundles_folder(tmp_path: Path, leaf: Issued) -> None:
    out = tmp_path / "out"
    hostile = Device(row=2, org_id="../..", asset_id="../../../../tmp/x", cert_sn=1)
    folder = write_bundle(out, hostile, cert_pem=leaf.cert_pem, ca_pem=leaf.ca_pem, key_pem=None)
    assert folder.resolve().is_relative_to((out / "bundles").resolve())
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all(p.is_relative_to(out / "bundles") for p in written)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not on PATH")
@pytest.mark.parametrize("kind", ["RSA", "EC"])
def test_bundle_verifies_with_openssl(tmp_path: Path, ca: certs.Ca, kind: certs.KeyKind) -> None:
    issued = issue(ca, "asset-1", kind)
    folder = write_bundle(
        tmp_path, ASSET, cert_pem=issued.cert_pem, ca_pem=issued.ca_pem, key_pem=issued.key_pem
    )
    done = subprocess.run(
        ["openssl", "verify", "-CAfile", "ca.pem", "cert.pem"],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "cert.pem: OK" in done.stdout
    # The check can fail: a certificate from another CA of the same name does not verify.
    stranger = issue(certs.make_ca(common_name=CA_NAME), "asset-1", "EC")
    (tmp_path / "other.pem").write_text(stranger.cert_pem)
    refused = subprocess.run(
        ["openssl", "verify", "-CAfile", str(folder / "ca.pem"), str(tmp_path / "other.pem")],
        capture_output=True,
        check=False,
    )
    assert refused.returncode != 0


# --- links planted under --out: never followed ------------------------------------------------


def _write(out: Path, device: Device, leaf: Issued) -> Path:
    return write_bundle(
        out, device, cert_pem=leaf.cert_pem, ca_pem=leaf.ca_pem, key_pem=leaf.key_pem
    )


@pytest.mark.parametrize("level", ["bundles", "org", "device"])
def test_a_linked_folder_on_the_way_is_refused_and_nothing_lands_outside(
    tmp_path: Path, leaf: Issued, level: str
) -> None:
    out, outside = tmp_path / "out", tmp_path / "elsewhere"
    outside.mkdir()
    folder = bundle_dir(out, ASSET)
    linked = {"bundles": out / "bundles", "org": folder.parent, "device": folder}[level]
    linked.parent.mkdir(parents=True, exist_ok=True)
    linked.symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="symbolic link or not a folder"):
        _write(out, ASSET, leaf)
    assert list(outside.iterdir()) == []


def test_a_device_folder_linked_to_another_devices_is_refused(tmp_path: Path, leaf: Issued) -> None:
    out = tmp_path / "out"
    other = _write(out, PAIR, leaf)
    before = {p.name: p.read_bytes() for p in other.iterdir()}
    bundle_dir(out, ASSET).symlink_to(other, target_is_directory=True)
    with pytest.raises(UnsafePathError):
        _write(out, ASSET, issue(certs.make_ca(common_name="Other CA"), "asset-1", "EC"))
    assert {p.name: p.read_bytes() for p in other.iterdir()} == before


@pytest.mark.parametrize("target", ["dangling", "file"])
def test_a_dangling_link_or_a_file_as_the_device_folder_is_refused(
    tmp_path: Path, leaf: Issued, target: str
) -> None:
    out = tmp_path / "out"
    folder = bundle_dir(out, ASSET)
    folder.parent.mkdir(parents=True)
    if target == "dangling":
        folder.symlink_to(tmp_path / "nowhere")
    else:
        folder.write_text("a file\n")
    with pytest.raises(UnsafePathError):
        _write(out, ASSET, leaf)
    assert not (tmp_path / "nowhere").exists()


def test_a_link_at_a_file_name_is_replaced_never_written_through(
    tmp_path: Path, leaf: Issued
) -> None:
    out = tmp_path / "out"
    folder = _write(out, ASSET, leaf)
    victim = tmp_path / "victim.pem"
    victim.write_text("keep\n")
    (folder / "key.pem").unlink()
    (folder / "key.pem").symlink_to(victim)
    _write(out, ASSET, leaf)
    assert victim.read_text() == "keep\n"
    assert not (folder / "key.pem").is_symlink()
    assert (folder / "key.pem").read_bytes() == leaf.key_pem


def test_reading_a_bundle_never_follows_a_link_or_blocks_on_a_fifo(
    tmp_path: Path, leaf: Issued
) -> None:
    out = tmp_path / "out"
    folder = _write(out, ASSET, leaf)
    relative = str(folder.relative_to(out))
    assert read_bundle_file(out, relative, "cert.pem").decode() == leaf.cert_pem
    (folder / "cert.pem").unlink()
    os.mkfifo(folder / "cert.pem")
    with pytest.raises(OSError, match="a FIFO"):
        read_bundle_file(out, relative, "cert.pem")
    (folder / "cert.pem").unlink()
    (folder / "cert.pem").symlink_to(tmp_path / "elsewhere.pem")
    with pytest.raises(OSError):  # ELOOP: the link is not followed
        read_bundle_file(out, relative, "cert.pem")
    with pytest.raises(UnsafePathError):
        read_bundle_file(out, "bundles/../..", "cert.pem")
