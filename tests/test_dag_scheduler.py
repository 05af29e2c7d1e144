"""jobs/fleet_renewal_dag.py really scheduled: Airflow's own processes run one DAG run.

`dag.test()` (tests/test_dag.py) runs every task in one process, one after the other; the
shards never meet. Here Airflow 3 runs as in production, minus what a DAG run does not need:

- `airflow dag-processor` parses the dags folder into the database (Airflow 3's scheduler
  parses nothing itself);
- `airflow scheduler` with LocalExecutor, parallelism 4, starts each task in a process of its
  own, so the three mapped shards run at once;
- `airflow api-server` serves the execution API that every task process reports to (state,
  XCom, connections); without it no task gets past its start.

No triggerer (nothing defers) and no web login. LocalExecutor accepts the SQLite database in
Airflow 3 (only the removed SequentialExecutor was tied to it), so no PostgreSQL is needed.
The test waits until the API server answers and reports the scheduler and the dag-processor
healthy (a task queued before the execution API answers can fail at its start); then a small
driver in Airflow's venv waits for the DAG to be parsed, triggers one run, waits for it to end
(bounded; a task up for retry ends the wait, the test wants every try to succeed), and prints
its task instances. Every service is started here, in a session of its own, and stopped here:
SIGTERM, then SIGKILL of its process group and of any descendant still alive.

The simulator is in `--single-token` mode (a token get invalidates the app's previous token)
with an 8 s token lifetime, so the shards, sharing one app key, keep invalidating each
other's tokens while they run; each must still succeed on its first try, every device renewed
exactly once by the simulator's own count.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest_airflow import (
    APP_KEY,
    APP_SECRET,
    FLEET_RENEW,
    ORG,
    SimulatorProcess,
    airflow_bin,
    airflow_home,
    device_names,
    read_report,
    simulator_process,
    write_csv,
)

pytestmark = pytest.mark.slow

SHARDS = 3
PARALLELISM = 4
DEVICES = 90
RATE = 6.0  # all shards together: each shard runs ~15 s, past one 8 s token lifetime, long
# enough that the shards overlap even when Airflow starts their tasks seconds apart
TOKEN_TTL = "8"
RUN_DEADLINE = 150.0  # seconds from the trigger to a finished DAG run
START_DEADLINE = 90.0  # seconds for the services to come up healthy
SERVICES = ("api-server", "scheduler", "dag-processor")

# Runs in the Airflow venv: trigger the DAG once it is parsed, wait for the run to end, print
# its state and every task instance's state, try and start/end times.
DRIVER = """
import json, sys, time
from sqlalchemy import select
from airflow.api.common.trigger_dag import trigger_dag
from airflow.exceptions import DagNotFound
from airflow.models import DagModel, DagRun, TaskInstance
from airflow.utils.session import create_session
from airflow.utils.types import DagRunTriggeredByType

dag_id, conf, budget = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + budget
run_id = None
while run_id is None and time.monotonic() < deadline:
    with create_session() as session:
        parsed = session.scalar(select(DagModel).where(DagModel.dag_id == dag_id))
    if parsed is None:
        time.sleep(0.5)
        continue
    try:
        run = trigger_dag(dag_id, triggered_by=DagRunTriggeredByType.CLI, conf=conf)
    except DagNotFound:
        time.sleep(0.5)
        continue
    run_id = run.run_id
state = None
while run_id is not None:
    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.run_id == run_id))
        state = str(run.state)
        tis = session.scalars(select(TaskInstance).where(TaskInstance.run_id == run_id)).all()
        tasks = [
            {
                "task": f"{ti.task_id}[{ti.map_index}]",
                "state": str(ti.state),
                "try": ti.try_number,
                "start": ti.start_date.isoformat() if ti.start_date else None,
                "end": ti.end_date.isoformat() if ti.end_date else None,
            }
            for ti in tis
        ]
    retrying = any(task["state"] == "up_for_retry" for task in tasks)  # a failed try: enough
    if state in ("success", "failed") or retrying or time.monotonic() >= deadline:
        break
    time.sleep(1.0)
else:
    tasks = []
print("RESULT " + json.dumps({"run_id": run_id, "state": state, "tasks": tasks}), flush=True)
"""


@dataclass(frozen=True)
class TaskRun:
    """One task instance as the scheduler left it."""

    task: str
    state: str
    try_number: int
    start: datetime | None
    end: datetime | None


@dataclass
class ScheduledRun:
    """The DAG run, its task instances, the simulator's final state and the services' logs."""

    run_id: str | None
    state: str | None
    tasks: dict[str, TaskRun]
    out_root: Path
    sim: SimulatorProcess
    logs: Path

    def shard_tasks(self) -> list[TaskRun]:
        return [t for name, t in sorted(self.tasks.items()) if name.startswith("run_shard[")]

    def diagnostics(self) -> str:
        """The tail of every service's log and of the shards' task logs, for a failure message."""
        parts = [f"run {self.run_id}: {self.state}; tasks {self.tasks}"]
        for path in sorted(self.logs.glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-2500:]}")
        for path in sorted((self.logs.parent / "home" / "logs").rglob("task_id=run_shard/*/*.log")):
            events = _events(path.read_text(errors="replace"))
            parts.append(f"--- {path.parent.name}/{path.name}\n" + "\n".join(events[-12:]))
        return "\n".join(parts)


def _events(text: str) -> list[str]:
    """The `event` of each JSON line of a task log (the job's own output among them)."""
    events = []
    for line in text.splitlines():
        try:
            event = json.loads(line).get("event")
        except (ValueError, AttributeError):
            continue
        if isinstance(event, str):
            events.append(event[:300])
    return events


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _scheduler_settings(home: Path) -> dict[str, str]:
    """The settings that make three local processes one Airflow, on ports of their own."""
    api_port = _free_port()
    return {
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(PARALLELISM),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        # The scheduler signs each task's token and the API server checks it: one secret.
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        # Defaults are shared across users of this machine: /tmp/airflow and port 8793.
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH": str(home / "bundles"),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
    }


@contextmanager
def airflow_services(env: dict[str, str], logs: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Run api-server, scheduler and dag-processor until the block ends, then stop them all."""
    logs.mkdir(exist_ok=True)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name in SERVICES:
            with (logs / f"{name}.log").open("wb") as log:
                processes.append(
                    subprocess.Popen(
                        [str(airflow_bin("airflow")), name],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # its own process group: its children stop too
                    )
                )
        yield processes
    finally:
        _stop_all(processes)


def _stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every service's process group at once; after 20 s SIGKILL what is left of them
    and of their descendants (a task process and its job run in process groups of their own)."""
    descendants = _descendants({process.pid for process in processes})
    for process in processes:
        _signal_group(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for process in processes:
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        _signal_group(process.pid, signal.SIGKILL)  # its workers, even if the leader ended
        process.wait(timeout=10)
    for pid, started in descendants:
        if _start_time(pid) == started:  # still that process, not a reused pid
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _signal_group(pgid: int, signum: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state, ppid, ...), None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _start_time(pid: int) -> str | None:
    fields = _stat(pid)
    return fields[19] if fields else None  # field 22 of stat: start time in clock ticks


def _descendants(roots: set[int]) -> list[tuple[int, str]]:
    """Every living descendant of the `roots` processes, as (pid, start time)."""
    processes = {}  # pid -> (parent pid, start time)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))):
            processes[int(entry.name)] = (int(fields[1]), fields[19])
    found: list[tuple[int, str]] = []
    parents = set(roots)
    while parents:
        children = {pid for pid, (ppid, _) in processes.items() if ppid in parents}
        found += [(pid, processes[pid][1]) for pid in children]
        parents = children
    return found


def _wait_until_healthy(env: dict[str, str], services: list[subprocess.Popen[bytes]]) -> None:
    """Return once the API server reports the scheduler and the dag-processor healthy."""
    url = f"http://127.0.0.1:{env['AIRFLOW__API__PORT']}/api/v2/monitor/health"
    deadline = time.monotonic() + START_DEADLINE
    health: dict[str, Any] = {}
    while time.monotonic() < deadline:
        assert all(p.poll() is None for p in services), "an Airflow service ended at start-up"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                health = json.loads(answer.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            health = {}
        parts = ("metadatabase", "scheduler", "dag_processor")
        if all((health.get(part) or {}).get("status") == "healthy" for part in parts):
            return
        time.sleep(0.5)
    raise AssertionError(f"Airflow not healthy after {START_DEADLINE} s: {health}")


def _fleet(folder: Path) -> Path:
    rows = [[f"asset-{i:03d}", 5000 + i] for i in range(DEVICES)]
    return write_csv(folder / "fleet.csv", ["assetId", "certSn"], rows)


def _moment(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _drive(env: dict[str, str], conf: dict[str, Any], logs: Path) -> dict[str, Any]:
    """Trigger one run and wait for its end; its result as the driver printed it."""
    argv = [str(airflow_bin("python")), "-c", DRIVER, "fleet_renewal", json.dumps(conf)]
    completed = subprocess.run(
        [*argv, str(RUN_DEADLINE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_DEADLINE + 60,
    )
    (logs / "driver.log").write_text(completed.stdout + completed.stderr)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert completed.returncode == 0 and lines, (completed.stdout + completed.stderr)[-5000:]
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    return result


@pytest.fixture(scope="module")
def scheduled_run(tmp_path_factory: pytest.TempPathFactory) -> ScheduledRun:
    """One DAG run under the real scheduler against a single-token simulator (then stopped)."""
    base = tmp_path_factory.mktemp("scheduled")
    home, logs = base / "home", base / "logs"
    fleet = _fleet(base)
    with ExitStack() as stack:
        sim = stack.enter_context(
            simulator_process(base, fleet, ["--single-token", "--token-ttl", TOKEN_TTL])
        )
        connection = {"conn_type": "generic", "host": sim.url, "login": APP_KEY}
        env = airflow_home(
            home,
            **_scheduler_settings(home),
            AIRFLOW_CONN_ENOS_DEFAULT=json.dumps({**connection, "password": APP_SECRET}),
        )
        conf = {
            "inventory": str(fleet),
            "out_root": str(base / "out"),
            "org": ORG,
            "rate": RATE,
            "shard_count": SHARDS,
            "fleet_renew_bin": str(FLEET_RENEW),
        }
        services = stack.enter_context(airflow_services(env, logs))
        _wait_until_healthy(env, services)
        result = _drive(env, conf, logs)
        for name, process in zip(SERVICES, services, strict=True):
            assert process.poll() is None, (
                f"{name} ended early:\n"
                + (logs / f"{name}.log").read_text(errors="replace")[-3000:]
            )
    tasks = {
        t["task"]: TaskRun(t["task"], t["state"], t["try"], _moment(t["start"]), _moment(t["end"]))
        for t in result["tasks"]
    }
    return ScheduledRun(result["run_id"], result["state"], tasks, base / "out", sim, logs)


def test_scheduled_dag_run_succeeds_with_every_shard_on_its_first_try(
    scheduled_run: ScheduledRun,
) -> None:
    run = scheduled_run
    assert run.state == "success", run.diagnostics()
    assert sorted(run.tasks) == [
        "merge[-1]", "plan[-1]", "run_shard[0]", "run_shard[1]", "run_shard[2]",
        "shards[-1]", "verdict[-1]",
    ]  # fmt: skip
    assert {t.task: (t.state, t.try_number) for t in run.shard_tasks()} == {
        f"run_shard[{i}]": ("success", 1) for i in range(SHARDS)
    }, run.diagnostics()
    summary = json.loads((run.out_root / str(run.run_id) / "merged" / "summary.json").read_text())
    assert summary["exit_code"] == 0
    assert summary["counts_by_status"] == {"renewed": DEVICES}


def test_scheduled_shards_ran_at_the_same_time(scheduled_run: ScheduledRun) -> None:
    """Each shard's task, and the job inside it, overlapped the other two."""
    shards = scheduled_run.shard_tasks()
    assert len(shards) == SHARDS, scheduled_run.diagnostics()
    starts = [t.start for t in shards]
    ends = [t.end for t in shards]
    assert all(starts) and all(ends), shards
    assert max(s for s in starts if s) < min(e for e in ends if e), shards
    run_dir = scheduled_run.out_root / str(scheduled_run.run_id)
    windows = []
    for i in range(SHARDS):
        summary = json.loads((run_dir / f"shard-{i}" / "summary.json").read_text())
        started, finished = summary["started"], summary["finished"]
        windows.append((datetime.fromisoformat(started), datetime.fromisoformat(finished)))
    assert max(w[0] for w in windows) < min(w[1] for w in windows), windows


def test_scheduled_run_renews_every_device_exactly_once_across_token_invalidations(
    scheduled_run: ScheduledRun,
) -> None:
    run = scheduled_run
    assert run.state == "success", run.diagnostics()
    rows = read_report(run.out_root / str(run.run_id) / "merged" / "report.csv")
    names = device_names(rows)
    assert sorted(names) == [f"asset-{i:03d}" for i in range(DEVICES)]
    assert [row["status"] for row in rows] == ["renewed"] * DEVICES
    renewals = run.sim.renewals()
    assert renewals == dict.fromkeys(names, 1)
    # The shards really took each other's tokens away. No fault or rate limit is set, so each
    # renew request beyond one per device was refused by the gateway (HTTP 401) and sent again.
    requests = run.sim.state["stats"]["requests"]
    assert requests["renew"] > DEVICES and requests["token/get"] > SHARDS, requests


def test_scheduled_run_keeps_the_app_secret_out_of_every_log(scheduled_run: ScheduledRun) -> None:
    task_logs = (scheduled_run.logs.parent / "home" / "logs").rglob("*")
    logs = [*scheduled_run.logs.glob("*.log"), *task_logs]
    texts = [path.read_text(errors="replace") for path in logs if path.is_file()]
    assert any("fleet-renew" in text for text in texts)  # the task logs are there ...
    assert not [text for text in texts if APP_SECRET in text]  # ... and the secret is not
