"""Storage failures and damaged journals, on real files, real SQLite and real small tmpfs mounts.

A full disk is a real tmpfs mounted for the test (the machine runs tests as root); where the
machine refuses the mount the test is skipped and says so. The simulator is the real one over
loopback, and its own record counts the renewals: no device may ever be renewed twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from batch.config import Shard
from batch.errors import StorageError
from batch.model import KeyMode, identity_key
from batch.outputs.merge import merge_outputs
from batch.simulator import RunningSimulator
from batch.store import rescue
from batch.store.journal import Journal, JournalError
from batch.testing import (
    assert_bundle_is_sound,
    fleet,
    read_csv,
    run_job,
    simulator,
    write_inventory,
)

FLEET_RENEW = Path(sys.executable).with_name("fleet-renew")


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` for the block (skips where mounting is refused)."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"this machine refuses a tmpfs mount: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def resize(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def fill(path: Path) -> Path:
    """Write a file until the disk is full; return it (delete it to free the space)."""
    filler = path / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as stream:
        while True:
            stream.write(b"\0" * 4096)
            stream.flush()
    return filler


async def fill_once_sent(sim: RunningSimulator, disk: Path) -> Path:
    """Once the renew request arrived (its intent is durable), fill the disk; return the filler."""
    while not sim.stats.requests["renew"]:
        await asyncio.sleep(0.01)
    return fill(disk)


def inventory_of(tmp_path: Path, n: int) -> tuple[list[dict[str, object]], Path]:
    """A fleet of `n` devices and its inventory file."""
    rows = fleet(n)
    return rows, write_inventory(tmp_path / "inventory.csv", rows)


def renewals(sim_state: dict[str, object], n: int) -> list[int]:
    devices = sim_state["devices"]
    assert isinstance(devices, dict)
    return [int(devices[f"pkA/dev-{i:04d}"]["renewals"]) for i in range(n)]


def snapshot(out: Path) -> dict[str, bytes]:
    """Every output file but the journal's, by relative path (to prove they were untouched)."""
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and not p.name.startswith("journal.sqlite")
    }


# --- disk full, read-only ---------------------------------------------------------------------


async def test_a_disk_filling_mid_run_stops_with_exit_4_and_the_rerun_renews_nothing_twice(
    tmp_path: Path,
) -> None:
    n = 60
    rows, inventory = inventory_of(tmp_path, n)
    rescue_dir = tmp_path / "rescue"
    with small_disk(tmp_path / "disk", "640k") as disk:
        out = disk / "out"
        options = {"key_mode": KeyMode.EC256, "concurrency": 8, "rescue_dir": rescue_dir}
        async with simulator(rows, tmp_path, latency_ms=20) as sim:
            with pytest.raises(StorageError) as failed:
                await run_job(sim, inventory, out, **options)
            first = renewals(sim.state_dict(), n)
            resize(disk, "64m")  # space freed
            second = await run_job(sim, inventory, out, **options)
            after = renewals(sim.state_dict(), n)
        for row in second.rows:
            assert_bundle_is_sound(out / row["bundlePath"], with_key=True)
    assert failed.value.exit_code == 4
    message = failed.value.message  # the journal, a bundle or the report: whichever came first
    assert message.startswith("cannot write ")
    assert "disk is full" in message or "No space left on device" in message
    assert 0 < sum(first) < n, "the disk must fill mid-run for this test to mean anything"
    assert max(first) == 1
    assert after == [1] * n  # every device renewed, none twice
    assert second.summary.exit_code == 0
    assert {r["status"] for r in second.rows} == {"renewed", "skipped"}
    assert not list(rescue_dir.glob("*/*.json"))  # every kept certificate was taken back


async def test_a_certificate_the_journal_refuses_is_kept_in_a_rescue_file_and_recovered(
    tmp_path: Path,
) -> None:
    """The disk fills while the renew request is in flight: its answer cannot be journaled."""
    rows, inventory = inventory_of(tmp_path, 1)
    rescue_dir = tmp_path / "rescue"
    with small_disk(tmp_path / "disk", "4m") as disk:
        out = disk / "out"
        options = {"key_mode": KeyMode.EC256, "rescue_dir": rescue_dir}
        async with simulator(rows, tmp_path, latency_ms=500) as sim:
            job = asyncio.create_task(run_job(sim, inventory, out, **options))
            filler = await fill_once_sent(sim, disk)
            with pytest.raises(StorageError) as failed:
                await job
            kept = rescue.pending(rescue.folder_for(rescue_dir, out))
            assert [stat.S_IMODE(p.stat().st_mode) for p, _ in kept] == [0o600]
            issued = sim.state_dict()["devices"]["pkA/dev-0000"]
            filler.unlink()
            second = await run_job(sim, inventory, out, **options)
            after = sim.state_dict()["devices"]["pkA/dev-0000"]["renewals"]
        row = second.by_device()["dev-0000"]
        bundle = out / row["bundlePath"]
        written = (bundle / "cert.pem").read_text()
        assert_bundle_is_sound(bundle, with_key=True)  # the key came from the journal's intent
    assert str(rescue.folder_for(rescue_dir, out)) in failed.value.message
    assert [k.key for _, k in kept] == [identity_key("o-test", None, "pkA", "dev-0000")]
    certificate = kept[0][1]
    assert issued["renewals"] == 1 and after == 1  # taken from the rescue file, not renewed again
    assert (row["status"], row["resolution"]) == ("renewed", "resumed")
    assert written.strip() == certificate.cert_pem.strip()
    assert not rescue.folder_for(rescue_dir, out).exists()


async def test_a_certificate_whose_journal_write_is_cut_short_by_a_stop_is_still_kept(
    tmp_path: Path,
) -> None:
    """SIGTERM with --grace-seconds 0 cancels the device while its journal write is being
    retried on a full disk: the certificate goes to a rescue file before the task ends."""
    rows, inventory = inventory_of(tmp_path, 1)
    rescue_dir = tmp_path / "rescue"
    with small_disk(tmp_path / "disk", "4m") as disk:
        out = disk / "out"
        options = {"key_mode": KeyMode.EC256, "rescue_dir": rescue_dir}
        async with simulator(rows, tmp_path, latency_ms=300) as sim:
            job = asyncio.create_task(run_job(sim, inventory, out, grace_seconds=0, **options))
            filler = await fill_once_sent(sim, disk)
            while not sim.state_dict()["devices"]["pkA/dev-0000"]["renewals"]:
                await asyncio.sleep(0.01)  # renewed: the answer is on its way
            # ...and its journal write is being retried (0.2 + 0.5 + 1.0 s): stop in the middle
            # of those 1.7 s, with room on both sides for a slow machine.
            await asyncio.sleep(0.8)
            os.kill(os.getpid(), signal.SIGTERM)
            with pytest.raises(StorageError):  # nor can the report be finished on a full disk
                await job
            kept = rescue.pending(rescue.folder_for(rescue_dir, out))
            filler.unlink()
            second = await run_job(sim, inventory, out, **options)
            renewed = sim.state_dict()["devices"]["pkA/dev-0000"]["renewals"]
    assert [k.key for _, k in kept] == [identity_key("o-test", None, "pkA", "dev-0000")]
    assert renewed == 1
    assert second.by_device()["dev-0000"]["status"] == "renewed"


async def test_the_journal_reports_a_full_disk_as_a_storage_error_and_recovers_after(
    tmp_path: Path,
) -> None:
    """SQLite's "disk is full" becomes StorageError; the writer thread lives on, and once space
    is back the same journal takes writes again."""
    with small_disk(tmp_path / "disk", "1m") as disk:
        journal = await Journal.open(disk / "journal.sqlite")
        async with journal:
            filler = fill(disk)
            with pytest.raises(StorageError, match="disk is full"):
                await intent(journal, "o/a")
            filler.unlink()
            await intent(journal, "o/b")
            assert set(journal.index()) == {"o/b"}


async def intent(journal: Journal, key: str) -> None:
    await journal.record_intent(
        key,
        row=2,
        cert_sn=7,
        key_pem=b"k" * 20_000,  # more than the slack left in the files' last pages
        csr_pem=None,
        key_type="EC",
        at=datetime.now(UTC),
    )


def test_a_read_only_out_is_exit_4_with_a_clear_message(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path / "inventory.csv", fleet(3))
    with small_disk(tmp_path / "disk", "1m") as disk:
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        done = cli("run", str(inventory), "--out", str(disk), "--sandbox", "--progress", "off")
    assert done.returncode == 4, done.stderr
    assert "error: cannot open the journal" in done.stderr
    assert "Read-only file system" in done.stderr
    assert "Traceback" not in done.stderr


def cli(
    *args: str, env: dict[str, str] | None = None, file_size_limit: int | None = None
) -> subprocess.CompletedProcess[str]:
    def limit() -> None:  # in the child: writes past the limit fail with EFBIG (a quota)
        if file_size_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run(
        [str(FLEET_RENEW), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        preexec_fn=limit,
    )


def test_a_journal_over_its_size_limit_still_leaves_a_summary_and_exit_4(tmp_path: Path) -> None:
    """The journal outgrows a file-size limit mid-run while small files still fit: the run
    stops with exit 4, keeps what it received, and summary.json says what happened."""
    inventory = write_inventory(tmp_path / "inventory.csv", fleet(40))
    out = tmp_path / "out"
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    args = ("run", str(inventory), "--out", str(out), "--sandbox", "--key-mode", "ec256")
    args += ("--progress", "off", "--rate", "200")
    done = cli(*args, env=env, file_size_limit=384 * 1024)
    assert done.returncode == 4, done.stderr
    assert "error: cannot write the journal" in done.stderr and "Traceback" not in done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["exit_code"] == 4
    assert summary["extra"]["storageError"].startswith("cannot write the journal")
    assert summary["counts_by_status"].get("renewed", 0) < 40  # stopped before the end
    again = cli(*args, env=env)
    assert again.returncode == 0, again.stderr
    rows = read_csv(out / "report.csv")
    assert len(rows) == 40 and {r["status"] for r in rows} <= {"renewed", "skipped"}
    assert not list((tmp_path / "tmp").glob("fleet-renew-rescue-*/*.json"))


def test_permission_lost_mid_run_is_exit_4_and_the_rerun_completes(tmp_path: Path) -> None:
    """The bundles' folder turns read-only under a run that has no CAP_DAC_OVERRIDE (as a
    non-root operator's would): exit 4 with the reason, then a rerun finishes the campaign."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE for the run")
    inventory = write_inventory(tmp_path / "inventory.csv", fleet(40))
    out = tmp_path / "out"
    args = [str(FLEET_RENEW), "run", str(inventory), "--out", str(out), "--sandbox"]
    args += ["--progress", "off", "--rescue-dir", str(tmp_path)]
    without_override = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    with subprocess.Popen(  # slowly, so that the permission goes while devices remain
        [*without_override, *args, "--rate", "10", "--concurrency", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as job:
        folder = out / "bundles" / "o-test"
        while not folder.is_dir() and job.poll() is None:
            time.sleep(0.01)
        folder.chmod(0o555)  # a permission taken away mid-run
        _, stderr = job.communicate(timeout=120)
    assert job.returncode == 4, stderr
    assert "Permission denied" in stderr and "Traceback" not in stderr
    folder.chmod(0o755)
    again = subprocess.run(
        [*without_override, *args, "--rate", "200"], capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stderr
    rows = read_csv(out / "report.csv")
    assert len(rows) == 40 and {r["status"] for r in rows} <= {"renewed", "skipped"}


# --- a campaign without its journal, a damaged journal ----------------------------------------


async def finished_campaign(tmp_path: Path) -> tuple[Path, Path]:
    rows, inventory = inventory_of(tmp_path, 4)
    out = tmp_path / "out"
    async with simulator(rows, tmp_path) as sim:
        await run_job(sim, inventory, out)
    return inventory, out


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
async def test_outputs_without_their_journal_are_refused_untouched(
    tmp_path: Path, damage: str
) -> None:
    inventory, out = await finished_campaign(tmp_path)
    journal = out / "journal.sqlite"
    if damage == "deleted":
        journal.unlink()
    else:
        journal.write_bytes(b"")
    before = snapshot(out)
    async with simulator(fleet(4), tmp_path) as sim:
        with pytest.raises(JournalError) as refused:
            await run_job(sim, inventory, out)
        assert sim.stats.requests["renew"] == 0
    assert refused.value.exit_code == 2
    message = refused.value.message
    assert "summary.json" in message and "bundles/" in message and "new --out" in message
    assert snapshot(out) == before


async def test_a_dry_runs_outputs_are_not_a_campaign_the_real_run_may_start(
    tmp_path: Path,
) -> None:
    rows, inventory = inventory_of(tmp_path, 3)
    out = tmp_path / "out"
    async with simulator(rows, tmp_path) as sim:
        await run_job(sim, inventory, out, dry_run=True)
        # A dry run writes into out/dry-run/ (batch.store.outdir): out itself holds no campaign.
        assert (out / "dry-run" / "summary.json").exists()
        assert not (out / "journal.sqlite").exists()
        real = await run_job(sim, inventory, out)
    assert real.summary.exit_code == 0
    assert [r["status"] for r in real.rows] == ["renewed"] * 3


@pytest.mark.parametrize("where", ["header", "page"])
async def test_a_damaged_journal_is_exit_2_and_outputs_stay_untouched(
    tmp_path: Path, where: str
) -> None:
    inventory, out = await finished_campaign(tmp_path)
    journal = out / "journal.sqlite"
    data = bytearray(journal.read_bytes())
    page = 4096
    assert len(data) >= 3 * page
    if where == "header":
        data[0:100] = os.urandom(100)
    else:
        data[2 * page : 3 * page] = os.urandom(page)  # a page of the tables
    journal.write_bytes(bytes(data))
    before = snapshot(out)
    async with simulator(fleet(4), tmp_path) as sim:
        with pytest.raises(JournalError) as refused:
            await run_job(sim, inventory, out)
        assert sim.stats.requests["renew"] == 0
    assert refused.value.exit_code == 2
    assert "is damaged" in refused.value.message
    assert snapshot(out) == before
    assert journal.read_bytes() == bytes(data)


def test_a_damaged_journal_from_the_command_line_is_exit_2_without_a_traceback(
    tmp_path: Path,
) -> None:
    inventory = write_inventory(tmp_path / "inventory.csv", fleet(2))
    out = tmp_path / "out"
    out.mkdir()
    (out / "journal.sqlite").write_bytes(b"this is not SQLite at all" * 200)
    done = cli("run", str(inventory), "--out", str(out), "--sandbox", "--progress", "off")
    assert done.returncode == 2, done.stderr
    assert "is damaged" in done.stderr and "Traceback" not in done.stderr
    assert not (out / "report.csv").exists()


# --- modes and leftovers ----------------------------------------------------------------------

SECRETS = {"key.pem", "bundle.p12", "journal.sqlite", "journal.sqlite.lock"}


@pytest.mark.parametrize("umask", [0o000, 0o077])
async def test_every_file_and_folder_has_its_mode_whatever_the_umask(
    tmp_path: Path, umask: int
) -> None:
    """umask 000 never widens the modes (nothing world-writable); 077 narrows them."""
    rows, inventory = inventory_of(tmp_path, 3)
    out = tmp_path / "campaign" / "out"  # its parent is created by the job too
    previous = os.umask(umask)
    try:
        async with simulator(rows, tmp_path) as sim:
            await run_job(
                sim, inventory, out, key_mode=KeyMode.EC256, pkcs12_passphrase=b"pass-phrase"
            )
    finally:
        os.umask(previous)
    modes = {
        str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode)
        for p in [out.parent, *out.rglob("*")]
    }
    assert any(name.endswith("key.pem") for name in modes)
    assert any(name.endswith("metrics.prom") for name in modes)
    for name, mode in modes.items():
        path = tmp_path / name
        base = 0o755 if path.is_dir() else 0o600 if path.name in SECRETS else 0o644
        expected = base & ~umask
        assert mode == expected, f"{name}: {mode:o}, expected {expected:o}"


async def test_a_world_writable_report_left_by_an_older_version_is_narrowed(
    tmp_path: Path,
) -> None:
    rows, inventory = inventory_of(tmp_path, 2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.csv").touch()
    (out / "report.csv").chmod(0o666)
    async with simulator(rows, tmp_path) as sim:
        await run_job(sim, inventory, out)
    assert stat.S_IMODE((out / "report.csv").stat().st_mode) == 0o644


async def test_temporary_files_of_a_killed_run_are_removed_by_the_next_run(
    tmp_path: Path,
) -> None:
    rows, inventory = inventory_of(tmp_path, 3)
    out = tmp_path / "out"
    async with simulator(rows, tmp_path) as sim:
        await run_job(sim, inventory, out)
        # What SIGKILL during report.parquet's (and summary.json's) atomic write leaves.
        left = [out / ".report.parquet.0123456789ab.tmp", out / ".summary.json.ba9876543210.tmp"]
        for path in left:
            path.write_bytes(b"PAR1 half a file")
        (out / "report.parquet").unlink()
        second = await run_job(sim, inventory, out)
    assert not [p for p in left if p.exists()]
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == []
    assert pq.read_table(out / "report.parquet").num_rows == len(rows)
    assert json.loads((out / "summary.json").read_text())["exit_code"] == 0
    assert second.summary.exit_code == 0


@pytest.mark.parametrize("planted", ["open to others", "a link"])
async def test_a_rescue_folder_others_could_plant_files_in_is_refused(
    tmp_path: Path, planted: str
) -> None:
    """Its name is predictable and it usually lies in /tmp: a folder another user made (or a
    link to one) could carry a forged "renewal" into the journal. The run refuses it."""
    rows, inventory = inventory_of(tmp_path, 2)
    rescue_dir, out = tmp_path / "rescue", tmp_path / "out"
    folder = rescue.folder_for(rescue_dir, out)
    target = tmp_path / "elsewhere" if planted == "a link" else folder
    target.mkdir(parents=True)
    if planted == "a link":
        folder.parent.mkdir(parents=True)
        folder.symlink_to(target)
    else:
        target.chmod(0o777)
    forged = rescue.Kept(
        key=identity_key("o-test", None, "pkA", "dev-0000"),
        outcome=rescue.outcome_from_json(
            '{"row": 2, "orgId": "o-test", "status": "renewed", "newCertSn": "666"}'
        ),
        cert_pem="forged",
        ca_pem="forged",
    )
    (target / "forged.json").write_text(
        json.dumps(
            {
                "key": forged.key,
                "outcome": rescue.outcome_to_json(forged.outcome),
                "certPem": "forged",
                "caPem": "forged",
            }
        )
    )
    async with simulator(rows, tmp_path) as sim:
        with pytest.raises(rescue.UnsafeRescueFolder, match="not a private folder"):
            await run_job(sim, inventory, out, rescue_dir=rescue_dir)
        assert sim.stats.requests["renew"] == 0
    assert (target / "forged.json").exists()  # left for the operator to look at


async def test_merging_a_shard_that_stopped_on_a_storage_error_keeps_exit_4(tmp_path: Path) -> None:
    rows, inventory = inventory_of(tmp_path, 6)
    shards = [tmp_path / "shard-0", tmp_path / "shard-1"]
    async with simulator(rows, tmp_path) as sim:
        for i, folder in enumerate(shards):
            await run_job(sim, inventory, folder, shard=Shard(index=i, count=2))
    summary_path = shards[1] / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["exit_code"] = 4  # what that shard's summary says after a disk filled up
    summary_path.write_text(json.dumps(summary))
    merged = merge_outputs(shards, tmp_path / "merged")
    assert merged.exit_code == 4
