"""jobs/fleet_renewal_dag.py run by real Apache Airflow 3 (its own venv) against the simulator.

Airflow lives in `.venv-airflow` (`make .venv-airflow`; `make test` builds it). AIRFLOW_HOME is a
temporary folder with a SQLite database made by `airflow db migrate`; one process of that venv
runs `dag.test()` once per scenario (Airflow's start-up, ~15 s, is paid once) while each
scenario's simulator runs; the tests then check one scenario each. The DAG's tasks call this
venv's `fleet-renew`.
"""

from __future__ import annotations

import json
import subprocess
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest_airflow import (
    APP_KEY,
    APP_SECRET,
    DAG_FILE,
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

# Runs in the Airflow venv: dag.test() per scenario, each with its own extra environment
# (restored afterwards), then one JSON line per scenario with what the tests check.
RUNNER = """
import importlib.util, json, os, sys
spec = importlib.util.spec_from_file_location("fleet_renewal_dag", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
base = dict(os.environ)
for scenario in json.loads(open(sys.argv[2]).read()):
    os.environ.update(scenario["env"])
    run = module.renewal_dag.test(run_conf=scenario["conf"])
    os.environ.clear()
    os.environ.update(base)
    with create_session() as session:
        tis = run.get_task_instances(session=session)
        tasks = {f"{ti.task_id}[{ti.map_index}]": str(ti.state) for ti in tis}
        query = XComModel.get_many(
            run_id=run.run_id, dag_ids=run.dag_id, task_ids="merge", key="return_value"
        )
        row = session.scalars(query).first()
        merged = XComModel.deserialize_value(row) if row is not None else None
    result = {"run_id": run.run_id, "state": str(run.state), "tasks": tasks, "merge": merged}
    print("RESULT " + json.dumps({"name": scenario["name"], **result}), flush=True)
"""


@dataclass
class DagRun:
    """One scenario's outcome: the run's id, state, task states and merge's return value."""

    run_id: str
    state: str
    tasks: dict[str, str]
    merge: dict[str, Any] | None
    out_root: Path
    sim: SimulatorProcess | None
    output: str  # the whole Airflow process's output (every scenario), for messages and leaks

    @property
    def shard_tasks(self) -> dict[str, str]:
        return {name: state for name, state in self.tasks.items() if name.startswith("run_shard")}

    def merged_report(self) -> list[dict[str, str]]:
        return read_report(self.out_root / self.run_id / "merged" / "report.csv")


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An AIRFLOW_HOME with a migrated SQLite database and the DAG file in its dags folder."""
    return airflow_home(tmp_path_factory.mktemp("airflow-home"))


def _fleet(folder: Path, absent: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows: list[list[object]] = [[f"asset-{i}", "", "", 5000 + i, ""] for i in range(8)]
    rows += [["", "pk-1", f"dk-{i}", 6000 + i, ""] for i in range(4)]
    rows += [[f"gone-{i}", "", "", 7000 + i, "absent"] for i in range(absent)]
    header = ["assetId", "productKey", "deviceKey", "certSn", "sandbox"]
    return write_csv(folder / "fleet.csv", header, rows)


def _conf(inventory: Path, out_root: Path, **extra: object) -> dict[str, Any]:
    return {
        "inventory": str(inventory),
        "out_root": str(out_root),
        "org": ORG,
        "rate": 60,
        "shard_count": SHARDS,
        "fleet_renew_bin": str(FLEET_RENEW),
        **extra,
    }


@dataclass(frozen=True)
class Scenario:
    """One DAG run to make: its params, extra environment and simulator."""

    name: str
    conf: dict[str, Any]
    env: dict[str, str]
    sim: SimulatorProcess | None = None


@pytest.fixture(scope="module")
def dag_runs(
    airflow_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, DagRun]:
    """Every scenario's DAG run, by name, with its simulator stopped (state readable)."""
    base = tmp_path_factory.mktemp("dag-runs")
    bad = write_csv(base / "bad.csv", ["name"], [["no device columns"]])
    with ExitStack() as stack:
        ok_fleet, failing_fleet = _fleet(base / "ok"), _fleet(base / "failing", absent=2)
        ok = stack.enter_context(simulator_process(base / "ok", ok_fleet))
        failing = stack.enter_context(simulator_process(base / "failing", failing_fleet))
        connection = {"conn_type": "generic", "host": ok.url, "login": APP_KEY}
        scenarios = [
            # Credentials and URL from the Airflow connection `enos_default`.
            Scenario(
                "ok",
                _conf(ok_fleet, base / "ok" / "out"),
                {"AIRFLOW_CONN_ENOS_DEFAULT": json.dumps({**connection, "password": APP_SECRET})},
                ok,
            ),
            # No connection: the worker's environment carries the credentials.
            Scenario(
                "failing",
                _conf(failing_fleet, base / "failing" / "out", api_url=failing.url),
                {"ENOS_APP_KEY": APP_KEY, "ENOS_APP_SECRET": APP_SECRET},
                failing,
            ),
            Scenario("bad_inventory", _conf(bad, base / "bad-out"), {}),
        ]
        results, output = _run_scenarios(airflow_env, base, scenarios)
    return {
        s.name: DagRun(
            **results[s.name], out_root=Path(s.conf["out_root"]), sim=s.sim, output=output
        )
        for s in scenarios
    }


def _run_scenarios(
    env: dict[str, str], folder: Path, scenarios: list[Scenario]
) -> tuple[dict[str, dict[str, Any]], str]:
    plan = folder / "scenarios.json"
    plan.write_text(json.dumps([{"name": s.name, "conf": s.conf, "env": s.env} for s in scenarios]))
    dag_file = Path(env["AIRFLOW__CORE__DAGS_FOLDER"]) / DAG_FILE.name
    completed = subprocess.run(
        [str(airflow_bin("python")), "-c", RUNNER, str(dag_file), str(plan)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = completed.stdout + completed.stderr
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert completed.returncode == 0 and len(lines) == len(scenarios), output[-8000:]
    results = {}
    for line in lines:
        result = json.loads(line.removeprefix("RESULT "))
        results[result.pop("name")] = result
    return results, output


def test_dag_renews_every_device_once_across_shards_with_connection_credentials(
    dag_runs: dict[str, DagRun],
) -> None:
    run = dag_runs["ok"]
    assert run.state == "success", run.output[-8000:]
    assert run.shard_tasks == {f"run_shard[{i}]": "success" for i in range(SHARDS)}
    assert run.merge is not None
    assert run.merge["exit_code"] == 0
    assert run.merge["counts_by_status"] == {"renewed": 12}
    run_dir = run.out_root / run.run_id  # named by the run id: a task retry resumes there
    assert sorted(p.name for p in run_dir.iterdir()) == ["merged", "shard-0", "shard-1", "shard-2"]
    rows = run.merged_report()
    assert [row["status"] for row in rows] == ["renewed"] * 12
    assert [int(row["row"]) for row in rows] == sorted(int(row["row"]) for row in rows)
    _assert_renewed_once(run, device_names(rows))


def test_dag_run_fails_when_devices_fail_after_publishing_the_merged_report(
    dag_runs: dict[str, DagRun],
) -> None:
    run = dag_runs["failing"]
    assert run.state == "failed", run.output[-8000:]
    assert run.shard_tasks == {f"run_shard[{i}]": "success" for i in range(SHARDS)}
    assert run.tasks["merge[-1]"] == "success"
    assert run.tasks["verdict[-1]"] == "failed"
    assert run.merge is not None
    assert run.merge["exit_code"] == 1
    assert run.merge["counts_by_status"] == {"renewed": 12, "failed": 2}
    assert run.merge["counts_by_class"] == {"device_not_found": 2}
    rows = run.merged_report()
    assert len(rows) == 14
    failed = {row["assetId"] for row in rows if row["status"] == "failed"}
    assert failed == {"gone-0", "gone-1"}
    _assert_renewed_once(run, [name for name in device_names(rows) if name not in failed])
    assert "merged exit code 1" in run.output


def test_dag_fails_at_plan_on_a_bad_inventory_before_any_shard_runs(
    dag_runs: dict[str, DagRun],
) -> None:
    run = dag_runs["bad_inventory"]
    assert run.state == "failed", run.output[-8000:]
    assert run.tasks["plan[-1]"] == "failed"
    assert run.tasks["shards[-1]"] == "upstream_failed"
    assert run.merge is None
    assert not run.out_root.exists()


def test_dag_keeps_the_app_secret_out_of_every_log_line(dag_runs: dict[str, DagRun]) -> None:
    output = dag_runs["ok"].output
    assert "Running command" in output  # the task logs are in there ...
    assert APP_SECRET not in output  # ... and the secret is not


def _assert_renewed_once(run: DagRun, names: list[str]) -> None:
    assert run.sim is not None
    renewals = run.sim.renewals()
    assert len(names) == 12
    assert {name: renewals[name] for name in names} == dict.fromkeys(names, 1)
    assert sum(renewals.values()) == 12
