"""jobs/maintenance.py: the cron entry point, run as cron would, against the simulator."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from jobs import maintenance
from tests.conftest_airflow import (
    APP_KEY,
    APP_SECRET,
    ORG,
    clean_env,
    read_report,
    simulator_process,
    write_csv,
)

ROOT = Path(__file__).resolve().parents[1]


def _in_days(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fleet_and_inventory(tmp_path: Path, *, with_unrenewable: bool) -> Path:
    """The simulator's fleet (expiry dates, sandbox shapes) and the job's bare inventory."""
    fleet: list[list[object]] = [
        ["due-1", 101, _in_days(10), ""],
        ["due-2", 102, _in_days(3), ""],
        ["fresh-1", 103, _in_days(300), ""],
    ]
    if with_unrenewable:
        fleet += [["expired-1", 104, "", "expired"], ["revoked-1", 105, _in_days(10), "revoked"]]
    # No notAfter in the inventory: the job must look each certificate up (List Certificate).
    write_csv(tmp_path / "inventory.csv", ["assetId", "certSn"], [row[:2] for row in fleet])
    return write_csv(tmp_path / "fleet.csv", ["assetId", "certSn", "notAfter", "sandbox"], fleet)


def _config(tmp_path: Path, api_url: str, **extra: str | float) -> Path:
    lines = [
        'inventory = "inventory.csv"',  # relative: taken from the config file's folder
        'out_root = "out"',
        "renew_within = 30",
        f'org = "{ORG}"',
        "rate = 50",
        f'api_url = "{api_url}"',
        *(f"{key} = {value!r}" for key, value in extra.items()),
    ]
    path = tmp_path / "maintenance.toml"
    path.write_text("\n".join(lines).replace("'", '"') + "\n")
    return path


def _cron_run(config: Path) -> subprocess.CompletedProcess[str]:
    """`python -m jobs.maintenance --config FILE` from the project folder, as the crontab says."""
    env = clean_env(ENOS_APP_KEY=APP_KEY, ENOS_APP_SECRET=APP_SECRET)
    command = [sys.executable, "-m", "jobs.maintenance", "--config", str(config)]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def _dated_folders(out_root: Path) -> list[str]:
    return sorted(p.name for p in out_root.iterdir() if p.is_dir() and p.name[:1].isdigit())


@pytest.mark.slow
def test_maintenance_renews_only_due_devices_and_passes_the_exit_code_through(
    tmp_path: Path,
) -> None:
    fleet = _fleet_and_inventory(tmp_path, with_unrenewable=True)
    with simulator_process(tmp_path, fleet) as sim:
        config = _config(tmp_path, sim.url)
        before = date.today().isoformat()
        first = _cron_run(config)
        second = _cron_run(config)  # the same day: same folder, resumes from its journal
        after = date.today().isoformat()

    assert first.returncode == 1, first.stderr  # expired and revoked certificates failed
    folders = _dated_folders(tmp_path / "out")
    assert len(folders) == 1 and folders[0] in {before, after}
    assert "--renew-within 30" in first.stderr  # the job ran in maintenance mode
    rows = {
        row["assetId"]: row for row in read_report(tmp_path / "out" / folders[0] / "report.csv")
    }
    statuses = {name: (row["status"], row["errorClass"]) for name, row in rows.items()}
    assert statuses == {
        "due-1": ("skipped", ""),  # renewed by the first run, resumed by the second
        "due-2": ("skipped", ""),
        "fresh-1": ("skipped", ""),
        "expired-1": ("failed", "cert_expired"),
        "revoked-1": ("failed", "cert_revoked"),
    }
    assert rows["due-1"]["resolution"] == "resumed"
    assert rows["fresh-1"]["note"].startswith("not_due")
    assert second.returncode == 1, second.stderr
    assert sim.renewals() == {
        "due-1": 1,
        "due-2": 1,
        "fresh-1": 0,
        "expired-1": 0,
        "revoked-1": 0,
    }


@pytest.mark.slow
def test_maintenance_exits_0_and_keeps_only_the_newest_dated_folders(tmp_path: Path) -> None:
    out_root = tmp_path / "out"
    old = ["2000-01-01", "2000-01-02", "2000-01-03", "2000-01-04"]
    for name in [*old, "notes"]:
        (out_root / name).mkdir(parents=True)
    (out_root / "2000-01-01" / "report.csv").write_text("row\n")
    fleet = _fleet_and_inventory(tmp_path, with_unrenewable=False)
    with simulator_process(tmp_path, fleet) as sim:
        result = _cron_run(_config(tmp_path, sim.url, keep=3))

    assert result.returncode == 0, result.stderr
    today = _dated_folders(out_root)[-1]
    assert _dated_folders(out_root) == ["2000-01-03", "2000-01-04", today]
    assert (out_root / "notes").is_dir()  # not a dated folder: never ours to delete
    assert "removed old output" in result.stderr
    statuses = sorted(row["status"] for row in read_report(out_root / today / "report.csv"))
    assert statuses == ["renewed", "renewed", "skipped"]
    assert sim.renewals() == {"due-1": 1, "due-2": 1, "fresh-1": 0}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('inventory = "i.csv"\nout_root = "out"\n', "renew_within"),
        ('inventory = "i.csv"\nout_root = "out"\nrenew_within = 30\nrenew_in = 3\n', "unknown"),
        ('inventory = "i.csv"\nout_root = "out"\nrenew_within = "30"\n', "renew_within must be"),
        ('inventory = "i.csv"\nrenew_within = 30\n', "missing ['out_root']"),
        ('inventory = "i.csv"\nout_root = "out"\nrenew_within = 30\nkeep = 0\n', "keep"),
        ("inventory = \n", "Invalid value"),
    ],
)
def test_maintenance_rejects_a_bad_config_with_exit_2_before_touching_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, message: str
) -> None:
    config = tmp_path / "maintenance.toml"
    config.write_text(body)
    assert maintenance.main(["--config", str(config)]) == maintenance.EXIT_USAGE
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_maintenance_exits_75_while_another_run_holds_the_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, "http://127.0.0.1:9")
    (tmp_path / "out").mkdir()
    held = maintenance.take_lock(tmp_path / "out")
    assert held is not None
    try:
        code = maintenance.main(["--config", str(config)], today=lambda: date(2030, 1, 2))
    finally:
        os.close(held)
    assert code == maintenance.EXIT_LOCKED
    assert "another maintenance run holds" in capsys.readouterr().err
    assert not (tmp_path / "out" / "2030-01-02").exists()


def test_maintenance_command_line_is_the_jobs_run_in_maintenance_mode(tmp_path: Path) -> None:
    config = maintenance.load_config(
        _config(tmp_path, "https://enos.example", renew_at_fraction=0.67, key_mode="ec256")
    )
    argv = maintenance.run_argv(config, tmp_path / "out" / "2030-01-02", "/venv/bin/python")
    assert argv[:5] == ["/venv/bin/python", "-m", "batch", "run", str(tmp_path / "inventory.csv")]
    pairs = dict(zip(argv[5::2], argv[6::2], strict=False))
    assert pairs["--out"] == str(tmp_path / "out" / "2030-01-02")
    assert pairs["--renew-within"] == "30"
    assert pairs["--renew-at-fraction"] == "0.67"
    assert pairs["--key-mode"] == "ec256"
    assert pairs["--api-url"] == "https://enos.example"
    assert not any(APP_SECRET in arg or APP_KEY in arg for arg in argv)


def test_start_from_last_reads_the_newest_earlier_next_inventory_unless_the_export_is_newer(
    tmp_path: Path,
) -> None:
    (tmp_path / "inventory.csv").write_text("assetId,certSn\na,1\n")
    os.utime(tmp_path / "inventory.csv", (1_000_000, 1_000_000))
    out = tmp_path / "out"
    for day in ("2030-01-01", "2030-01-02", "2030-01-03"):
        (out / day).mkdir(parents=True)
    (out / "2030-01-01" / "inventory.next.csv").write_text("assetId,certSn,notAfter\na,7,\n")
    (out / "2030-01-02" / "inventory.next.csv").write_text("assetId,certSn,notAfter\na,8,\n")
    (out / "2030-01-03" / "inventory.next.csv").write_text("assetId,certSn,notAfter\na,9,\n")
    path = _config(tmp_path, "https://enos.example")
    path.write_text(path.read_text() + "start_from_last = true\n")
    config = maintenance.load_config(path)
    today = date(2030, 1, 3)  # today's own folder is this run's, not the last one
    assert maintenance.inventory_for(config, today) == out / "2030-01-02" / "inventory.next.csv"
    argv = maintenance.run_argv(
        config, out / "2030-01-03", "/py", maintenance.inventory_for(config, today)
    )
    assert argv[4] == str(out / "2030-01-02" / "inventory.next.csv")
    os.utime(tmp_path / "inventory.csv")  # a fresh export by the operator wins
    assert maintenance.inventory_for(config, today) == tmp_path / "inventory.csv"
    plain = maintenance.load_config(_config(tmp_path, "https://enos.example", keep=3))
    assert maintenance.inventory_for(plain, today) == tmp_path / "inventory.csv"
