"""The Makefile's `make test` on a fresh machine: the system packages the tests need come first.

As root it installs them (apt-get, as CI runs it); as anyone else it names the exact command and
stops before building a virtualenv or running a check. Run with the real `make`, on a copy of the
Makefile in a scratch folder, as an unprivileged user where the tests run as root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


@pytest.fixture
def project() -> Iterator[Path]:
    """A copy of the Makefile and pyproject.toml that an unprivileged user may read."""
    folder = Path(tempfile.mkdtemp(prefix="fleet-renew-make-"))
    try:
        for name in ("Makefile", "pyproject.toml", "jobs/airflow-constraints.txt"):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, folder / name)
        for path in (folder, *folder.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield folder
    finally:
        shutil.rmtree(folder)


def make_as_unprivileged(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    uid = gid = None
    groups: list[int] | None = None
    if os.getuid() == 0:  # as root the Makefile would install: be nobody instead
        nobody = pwd.getpwnam("nobody")
        uid, gid, groups = nobody.pw_uid, nobody.pw_gid, []
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(folder)},
        user=uid,
        group=gid,
        extra_groups=groups,
    )


def test_make_test_without_chromium_says_what_to_install_and_runs_nothing(project: Path) -> None:
    result = make_as_unprivileged(project, "test", "CHROMIUM=/nonexistent/chromium")
    assert result.returncode != 0
    assert "make test needs /nonexistent/chromium (Debian package: chromium)" in result.stderr
    assert "apt-get install -y --no-install-recommends chromium" in result.stderr
    assert not (project / ".venv").exists()  # stopped before building or running anything
    assert "pytest" not in result.stdout + result.stderr


def test_make_test_with_chromium_present_installs_nothing(project: Path) -> None:
    result = make_as_unprivileged(project, "system-deps", "CHROMIUM=/bin/sh")
    assert result.returncode == 0, result.stderr
    assert result.stdout == result.stderr == ""  # no apt-get, no message


def test_ci_runs_make_test_and_nothing_else() -> None:
    # CI's set-up lives in the Makefile, so `make test` on a fresh machine is what CI runs.
    commands = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert commands[-1] == "make test"
    assert not any("apt-get" in line for line in commands)
