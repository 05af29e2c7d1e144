"""Airflow 3 DAG `fleet_renewal`: plan, one mapped task per shard, merge, verdict.

    plan ──> shards ──> run_shard[0..N-1] ──> merge ──> verdict

- `plan` runs `fleet-renew plan` (exit 2 on a bad inventory fails the run before anything is
  sent).
- `run_shard` is mapped over range(shard_count); shard i runs `fleet-renew run --shard i/N
  --rate rate/N --out {out_root}/{run_id}/shard-i`. The folder is named by Airflow's run id,
  so a retried task (or a cleared run) resumes from that shard's journal.
- `merge` runs `fleet-renew merge` into `{out_root}/{run_id}/merged` and returns the merged
  summary.json as its value (XCom `return_value`).
- `verdict` fails the run when the merged exit code is not 0.

Exit codes, task by task:
- a shard that exits 0 (all renewed/skipped) or 1 (some devices failed or invalid) succeeds:
  one device's failure is a value that the merged report carries; `verdict` turns it red.
- a shard that exits 2 (usage), 3 (aborted: auth refused, circuit breaker), 4 (storage error:
  disk full, read-only) or 130/143 (stopped by a signal) fails and is retried (`retries=2`): the
  retry resumes from the journal (and takes back any certificate kept in a rescue file).
- `verdict` fails without retry on a merged exit code 1 or 3, so operators see a failed run
  while the merged report, summary and retry.csv are already published.

The job's own virtualenv is not Airflow's: the tasks call its console script, whose path is
the `fleet_renew_bin` parameter (default: `fleet-renew` on the worker's PATH).

Credentials never appear in this file, in a command line or a rendered template: the tasks
read the Airflow connection named by `conn_id` (default `enos_default`: login = app key,
password = app secret, host = API URL) and hand key and secret to the job through the
environment of the task's process (Airflow runs each task try in a process of its own). Without
that connection, the worker's own ENOS_APP_KEY / ENOS_APP_SECRET / ENOS_API_URL are used.

Importing this module does no work beyond declaring the DAG; it imports nothing of the job.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import Connection, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowNotFoundException

log = logging.getLogger(__name__)

DAG_ID = "fleet_renewal"
MERGED = "merged"
# Exit codes of a shard that leave its task green: the merged verdict judges devices.
SHARD_OK_CODES = (0, 1)

PARAMS = {
    "inventory": Param(type="string", minLength=1, description="Inventory CSV/Parquet path."),
    "out_root": Param(
        type="string", minLength=1, description="Root folder; each run writes {out_root}/{run_id}."
    ),
    "org": Param(None, type=["null", "string"], description="orgId for rows without one."),
    "rate": Param(10.0, type="number", exclusiveMinimum=0, description="Requests/s, all shards."),
    "shard_count": Param(4, type="integer", minimum=1, maximum=256, description="Shards (N)."),
    "key_mode": Param("reuse", enum=["reuse", "rsa2048", "ec256", "csr-column"]),
    "fleet_renew_bin": Param(
        "fleet-renew", type="string", description="The job venv's fleet-renew console script."
    ),
    "api_url": Param(
        None,
        type=["null", "string"],
        description="EnOS API URL. [default: the connection's host, else ENOS_API_URL]",
    ),
    "conn_id": Param("enos_default", type="string", description="Airflow connection for EnOS."),
    "extra_args": Param(
        [],
        type="array",
        items={"type": "string"},
        description='More `fleet-renew run` options, e.g. ["--renew-within", "30"].',
    ),
}


def _params() -> dict[str, Any]:
    return dict(get_current_context()["params"])


def _run_dir() -> Path:
    context = get_current_context()
    return Path(context["params"]["out_root"]) / context["run_id"]


def _command(argv: list[str]) -> str:
    """Quote argv for bash; refuse Jinja markers, since Airflow renders the command once more."""
    for arg in argv:
        if any(marker in arg for marker in ("{{", "{%", "{#")):
            raise AirflowFailException(f"argument {arg!r} contains a Jinja marker")
    return shlex.join(argv)


def _connection_url(conn: Connection) -> str | None:
    host = (conn.host or "").rstrip("/")
    if not host:
        return None
    if "://" not in host:
        host = f"{conn.schema or 'https'}://{host}"
    return f"{host}:{conn.port}" if conn.port else host


def _export_credentials(conn_id: str) -> str | None:
    """Put the connection's key and secret in this task process's environment; return its URL.

    The bash child inherits them; they never reach argv, a template or a log line.
    """
    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        log.info("no connection %r: using ENOS_* from the worker's environment", conn_id)
        return None
    if conn.login:
        os.environ["ENOS_APP_KEY"] = conn.login
    if conn.password:
        os.environ["ENOS_APP_SECRET"] = conn.password
    return _connection_url(conn)


def _common_options(params: dict[str, Any], api_url: str | None) -> list[str]:
    options = ["--org", params["org"]] if params["org"] else []
    url = params["api_url"] or api_url
    return options + (["--api-url", url] if url else [])


@task.bash(retries=0, skip_on_exit_code=None)
def plan() -> str:
    """Validate the inventory and log what the run will do (exit 2 fails the run)."""
    params = _params()
    argv = [params["fleet_renew_bin"], "plan", params["inventory"]]
    argv += ["--org", params["org"]] if params["org"] else []
    return _command([*argv, "--rate", str(params["rate"])])


@task(retries=0)
def shards() -> list[int]:
    """The shard indexes to map over: range(shard_count)."""
    return list(range(int(_params()["shard_count"])))


@task.bash(retries=2, retry_delay=timedelta(minutes=1), skip_on_exit_code=None)
def run_shard(index: int) -> str:
    """Run shard `index` of N at rate/N; the last output line is the shard's folder."""
    params = _params()
    count = int(params["shard_count"])
    out = _run_dir() / f"shard-{index}"
    api_url = _export_credentials(params["conn_id"])
    argv = [params["fleet_renew_bin"], "run", params["inventory"], "--out", str(out)]
    argv += ["--shard", f"{index}/{count}", "--rate", str(float(params["rate"]) / count)]
    argv += ["--key-mode", params["key_mode"], "--progress", "log"]
    argv += _common_options(params, api_url) + list(params["extra_args"])
    return _shard_script(_command(argv), out)


def _shard_script(command: str, out: Path) -> str:
    """Run the shard; pass 0/1 with a summary.json, keep any other exit code for the retry."""
    ok = " ".join(str(code) for code in SHARD_OK_CODES)
    folder = shlex.quote(str(out))
    # A crash (a traceback also exits 1) writes no summary.json: that must fail the task too,
    # so an earlier try's summary is removed first (the journal, not the summary, resumes).
    return (
        f"rm -f {folder}/summary.json\n{command}\nrc=$?\n"
        f'case " {ok} " in *" $rc "*) ;; *) exit "$rc" ;; esac\n'
        f"if [ ! -f {folder}/summary.json ]; then\n"
        f'  echo "fleet-renew exited $rc without writing summary.json" >&2; exit 70\nfi\n'
        f"echo {folder}"
    )


@task(retries=0)
def merge(shard_dirs: list[str]) -> dict[str, Any]:
    """Merge the shard folders into {run_dir}/merged; return the merged summary.json."""
    params = _params()
    out = _run_dir() / MERGED
    # Index by length: iterating a mapped XCom sequence probes one past its end (and logs it).
    folders = [shard_dirs[i] for i in range(len(shard_dirs))]
    argv = [params["fleet_renew_bin"], "merge", *folders, "--out", str(out)]
    log.info("running %s", shlex.join(argv))
    completed = subprocess.run(argv, capture_output=True, text=True, check=False)
    for line in (completed.stdout + completed.stderr).splitlines():
        log.info("%s", line)
    summary_path = out / "summary.json"
    if completed.returncode not in (0, 1, 3) or not summary_path.is_file():
        raise AirflowException(f"fleet-renew merge failed with exit code {completed.returncode}")
    summary: dict[str, Any] = json.loads(summary_path.read_text())
    return summary


@task(retries=0)
def verdict(summary: dict[str, Any]) -> int:
    """Fail the run, without retry, when the merged exit code is not 0."""
    code = int(summary["exit_code"])
    if code != 0:
        where = _run_dir() / MERGED
        raise AirflowFailException(
            f"merged exit code {code}: {summary.get('counts_by_status')} "
            f"{summary.get('counts_by_class')}; see {where}/report.csv and retry.csv"
        )
    return code


@dag(
    dag_id=DAG_ID,
    schedule=None,
    catchup=False,
    max_active_runs=1,
    params=PARAMS,
    tags=["fleet-renew"],
    doc_md=__doc__,
)
def fleet_renewal() -> None:
    """Renew a fleet's device certificates in shards, then merge the reports."""
    indexes = shards()
    plan() >> indexes
    verdict(merge(run_shard.expand(index=indexes)))


renewal_dag = fleet_renewal()
