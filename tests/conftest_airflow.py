"""Helpers for the scheduling tests (the Airflow DAG and the cron entry point).

Both run the job as a separate process, so the simulator runs as one too: `fleet-renew
simulate` on a free loopback port, stopped with SIGTERM, which makes it write its state file.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

FLEET_RENEW = Path(sys.executable).with_name("fleet-renew")
ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_VENV = ROOT / ".venv-airflow"
DAG_FILE = ROOT / "jobs" / "fleet_renewal_dag.py"
APP_KEY = "sched-app-key"
APP_SECRET = "sched-app-secret-0123456789"
ORG = "o-sched"


@dataclass
class SimulatorProcess:
    """A running `fleet-renew simulate`; `state` is filled in once it has stopped."""

    url: str
    state_out: Path
    state: dict[str, Any] = field(default_factory=dict)

    def renewals(self) -> dict[str, int]:
        """Renew calls that took effect, per device identity (after the simulator stopped)."""
        return {name: device["renewals"] for name, device in self.state["devices"].items()}


@contextmanager
def simulator_process(
    tmp_path: Path, fleet: Path, options: Sequence[str] = ()
) -> Iterator[SimulatorProcess]:
    """Run the simulator seeded from `fleet` (with more `simulate` options) until the block
    ends; then read its state."""
    state_out = tmp_path / "sim-state.json"
    env = {**os.environ, "ENOS_APP_KEY": APP_KEY, "ENOS_APP_SECRET": APP_SECRET}
    argv = [str(FLEET_RENEW), "simulate", "--port", "0", "--fleet", str(fleet), "--org", ORG]
    argv += options
    with (
        (tmp_path / "sim.log").open("w") as log,
        subprocess.Popen(
            [*argv, "--state-out", str(state_out)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        ) as process,
    ):
        try:
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            match = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+)", line)
            assert match, f"simulator did not start: {line!r}"
            sim = SimulatorProcess(url=match.group(1), state_out=state_out)
            yield sim
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
    sim.state = json.loads(state_out.read_text())


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    """Write a small CSV file (an inventory or a simulator fleet)."""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_report(path: Path) -> list[dict[str, str]]:
    """The rows of a report.csv as dicts of text."""
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without Airflow or EnOS settings, plus `extra`."""
    prefixes = ("AIRFLOW", "ENOS_")
    env = {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}
    return {**env, **extra}


def device_names(rows: Sequence[Mapping[str, str]]) -> list[str]:
    """The identity of each report row as the simulator's state names it."""
    return [row["assetId"] or f"{row['productKey']}/{row['deviceKey']}" for row in rows]


def airflow_bin(name: str) -> Path:
    """A console script of Airflow's own virtualenv; the test fails (not skips) without it."""
    path = AIRFLOW_VENV / "bin" / name
    if not path.exists():
        pytest.fail(
            f"{path} is missing: Airflow lives in its own virtualenv. Build it with "
            "`make .venv-airflow` (`make test` does it when it is missing)."
        )
    return path


def airflow_home(home: Path, **extra: str) -> dict[str, str]:
    """Make `home` an AIRFLOW_HOME with a migrated SQLite database and a copy of the DAG file
    in its dags folder; return the environment (plus `extra` settings) that uses it."""
    dags = home / "dags"
    dags.mkdir(parents=True)
    shutil.copy(DAG_FILE, dags)  # a copy proves the DAG file needs nothing of this repo
    env = clean_env(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        **extra,
    )
    migrate = subprocess.run(
        [str(airflow_bin("airflow")), "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
    return env
