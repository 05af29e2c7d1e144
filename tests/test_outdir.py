"""batch.store.outdir: an --out is claimed by one command at a time, is a folder, holds no
links.

The claims are tested as operators break them: real `fleet-renew` processes against a real
simulator process, a second command started while the first is live.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from batch.store.outdir import OutDir, OutDirError
from tests.conftest_airflow import (
    APP_KEY,
    APP_SECRET,
    FLEET_RENEW,
    ORG,
    SimulatorProcess,
    clean_env,
    read_report,
    simulator_process,
    write_csv,
)

DEVICES = 40
RATE = "10"  # about 4 s for the fleet: long enough to start a second command meanwhile


def inventory(tmp_path: Path) -> Path:
    rows = [[ORG, "pkO", f"dev-{i:03d}", 7000 + i] for i in range(DEVICES)]
    return write_csv(
        tmp_path / "inventory.csv", ["orgId", "productKey", "deviceKey", "certSn"], rows
    )


def fleet_renew(*args: str | Path, credentials: bool = True) -> subprocess.CompletedProcess[str]:
    env = (
        clean_env(ENOS_APP_KEY=APP_KEY, ENOS_APP_SECRET=APP_SECRET) if credentials else clean_env()
    )
    return subprocess.run(
        [str(FLEET_RENEW), *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@contextmanager
def live_run(inv: Path, out: Path, sim: SimulatorProcess) -> Iterator[subprocess.Popen[str]]:
    """A real run, in flight (its report has a few rows) when the block starts."""
    env = clean_env(ENOS_APP_KEY=APP_KEY, ENOS_APP_SECRET=APP_SECRET)
    argv = [str(FLEET_RENEW), "run", str(inv), "--out", str(out), "--api-url", sim.url,
            "--rate", RATE, "--progress", "off"]  # fmt: skip
    with subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True) as process:
        try:
            deadline = time.monotonic() + 60
            while len(_rows(out)) < 3:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "the run never got going"
                time.sleep(0.05)
            yield process
        finally:
            if process.poll() is None and process.returncode is None:
                process.wait(timeout=60)


def _rows(out: Path) -> list[str]:
    try:
        return (out / "report.csv").read_text().splitlines()[1:]
    except FileNotFoundError:
        return []


def assert_finished_cleanly(process: subprocess.Popen[str], out: Path) -> None:
    assert process.wait(timeout=60) == 0, process.stderr.read() if process.stderr else ""
    data = (out / "report.csv").read_bytes()
    assert b"\0" not in data
    rows = read_report(out / "report.csv")
    assert len(rows) == DEVICES and {r["status"] for r in rows} == {"renewed"}
    assert '"dryRun": false' in (out / "summary.json").read_text()


def test_a_dry_run_on_the_out_of_a_live_run_is_refused(tmp_path: Path) -> None:
    inv, out = inventory(tmp_path), tmp_path / "out"
    with simulator_process(tmp_path, inv) as sim, live_run(inv, out, sim) as live:
        dry = fleet_renew("run", inv, "--out", out, "--dry-run", "--api-url", sim.url)
        assert dry.returncode == 2, dry.stderr
        assert "in use by another fleet-renew command" in dry.stderr
        assert "Traceback" not in dry.stderr
        assert not (out / "dry-run").exists()  # refused before writing anything
        assert_finished_cleanly(live, out)
    assert set(sim.renewals().values()) == {1}


def test_deleting_the_lock_files_does_not_let_a_second_run_in(tmp_path: Path) -> None:
    inv, out = inventory(tmp_path), tmp_path / "out"
    with simulator_process(tmp_path, inv) as sim, live_run(inv, out, sim) as live:
        for lock in out.glob("*.lock"):  # what an operator "cleaning up a stale lock" does
            lock.unlink()
        second = fleet_renew("run", inv, "--out", out, "--api-url", sim.url, "--rate", RATE)
        assert second.returncode == 2, second.stderr
        assert "in use by another fleet-renew command" in second.stderr
        assert_finished_cleanly(live, out)
    assert set(sim.renewals().values()) == {1}  # no device renewed twice
    assert len(sim.renewals()) == DEVICES


def test_a_dry_run_writes_its_own_folder_and_needs_no_api_url(tmp_path: Path) -> None:
    inv, out = inventory(tmp_path), tmp_path / "out"
    with simulator_process(tmp_path, inv) as sim:
        real = fleet_renew("run", inv, "--out", out, "--api-url", sim.url, "--rate", "200")
        assert real.returncode == 0, real.stderr
    finished = {name: (out / name).read_bytes() for name in ("report.csv", "summary.json")}
    dry = fleet_renew("run", inv, "--out", out, "--dry-run", credentials=False)
    assert dry.returncode == 0, dry.stderr
    assert "Traceback" not in dry.stderr
    for name, data in finished.items():  # the campaign's outputs are untouched
        assert (out / name).read_bytes() == data
    rows = read_report(out / "dry-run" / "report.csv")
    assert len(rows) == DEVICES
    assert {r["note"] for r in rows} == {"dry run: would renew"}
    assert '"dryRun": true' in (out / "dry-run" / "summary.json").read_text()
    assert str(out / "dry-run" / "report.csv") in dry.stderr


@pytest.mark.parametrize("command", ["run", "merge"])
def test_an_out_that_is_a_file_is_a_usage_error(tmp_path: Path, command: str) -> None:
    inv = inventory(tmp_path)
    target = tmp_path / "out.txt"
    target.write_text("not a folder\n")
    if command == "run":
        result = fleet_renew("run", inv, "--out", target, "--dry-run")
    else:
        shard = tmp_path / "shard"
        assert fleet_renew("run", inv, "--out", shard, "--sandbox").returncode == 0
        result = fleet_renew("merge", shard, "--out", target)
    assert result.returncode == 2, result.stderr
    assert "is not a folder" in result.stderr
    assert "Traceback" not in result.stderr
    assert target.read_text() == "not a folder\n"


def test_a_link_in_out_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    inv, out = inventory(tmp_path), tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me\n")
    (out / "report.csv").symlink_to(victim)
    result = fleet_renew("run", inv, "--out", out, "--sandbox")
    assert result.returncode == 2, result.stderr
    assert "symbolic links (report.csv)" in result.stderr
    assert victim.read_text() == "keep me\n"
    assert not (out / "journal.sqlite").exists()  # refused before anything was written


def test_the_claim_is_an_flock_on_the_folder_and_ends_with_it(tmp_path: Path) -> None:
    with OutDir.claim(tmp_path / "out") as claim:
        probe = os.open(tmp_path / "out", os.O_RDONLY | os.O_DIRECTORY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(probe)
        with pytest.raises(OutDirError, match="in use"):
            OutDir.claim(tmp_path / "out")
        assert os.listdir(tmp_path / "out") == []  # no lock file to delete
    assert claim.fd == -1
    OutDir.claim(tmp_path / "out").close()  # released: claimable again
