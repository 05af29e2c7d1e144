"""Three `fleet-renew run --shard i/3` processes at once on one app key, against one `simulate`.

The DAG's pattern. The simulator runs in `--single-token` mode (a guess: every token get
invalidates the app's previous token) with tokens living 8 s, and the shards are rate-limited so
the run crosses a token's expiry: each shard's token is killed by the others' gets and by
expiry, again and again. Every shard must finish with exit 0 and every device be renewed
exactly once, counted on the simulator's side.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

KEY, SECRET = "shared-key", "shared-secret"
DEVICES = 90
SHARDS = 3
RATE = 3.0  # per shard: ~30 devices take ~10 s, longer than a token lives, and calls
# come often enough to fall in the refresh margin (where a refresh kills the others' token)
TOKEN_TTL = 8
BIN = Path(sys.executable).parent / "fleet-renew"


def _inventory(path: Path) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["productKey", "deviceKey", "certSn"])
        writer.writerows(("pk", f"dev-{i:03d}", 5000 + i) for i in range(DEVICES))
    return path


def _env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ENOS_")}
    return {**clean, "ENOS_APP_KEY": KEY, "ENOS_APP_SECRET": SECRET}


@pytest.mark.parametrize("single_token", [True, False], ids=["single-token", "documented"])
def test_three_shards_on_one_app_key_all_succeed_and_renew_each_device_once(
    tmp_path: Path, single_token: bool
) -> None:
    inventory = _inventory(tmp_path / "fleet.csv")
    state_out = tmp_path / "state.json"
    sim_args = ["--port", "0", "--fleet", str(inventory), "--token-ttl", str(TOKEN_TTL)]
    sim_args += ["--state-out", str(state_out)] + (["--single-token"] if single_token else [])
    simulator = subprocess.Popen(
        [str(BIN), "simulate", *sim_args],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    shards: list[subprocess.Popen[str]] = []
    try:
        assert simulator.stdout is not None
        url = simulator.stdout.readline().strip().removeprefix("listening on ")
        assert url.startswith("http://127.0.0.1:"), url
        for index in range(SHARDS):
            run_args = [str(inventory), "--out", str(tmp_path / f"shard-{index}")]
            run_args += ["--api-url", url, "--org", "o-sandbox", "--shard", f"{index}/{SHARDS}"]
            run_args += ["--rate", str(RATE), "--progress", "off"]
            shards.append(
                subprocess.Popen(
                    [str(BIN), "run", *run_args],
                    env=_env(),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        outputs = [shard.communicate(timeout=120) for shard in shards]
        codes = [shard.returncode for shard in shards]
        assert codes == [0] * SHARDS, [err[-2000:] for _, err in outputs]
        simulator.send_signal(signal.SIGTERM)
        assert simulator.wait(timeout=30) == 0
    finally:
        for process in [*shards, simulator]:
            if process.poll() is None:
                process.kill()
            process.communicate()  # reaps it and closes its pipes
    state = json.loads(state_out.read_text())
    renewals = {device: entry["renewals"] for device, entry in state["devices"].items()}
    assert renewals == {f"pk/dev-{i:03d}": 1 for i in range(DEVICES)}
    requests = state["stats"]["requests"]
    # the shards' tokens really were replaced under them: more token calls than shards
    assert requests.get("token/get", 0) + requests.get("token/refresh", 0) > SHARDS
    if single_token:  # calls were refused with 401 and cured by a fresh token, many times
        assert requests["renew"] > DEVICES
    statuses = set()
    for index in range(SHARDS):
        with (tmp_path / f"shard-{index}" / "report.csv").open(newline="") as fh:
            statuses |= {row["status"] for row in csv.DictReader(fh) if row["status"]}
    assert statuses <= {"renewed", "skipped"} and "renewed" in statuses
