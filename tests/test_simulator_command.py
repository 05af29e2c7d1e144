"""`python -m batch.simulator` (the `simulate` command) as a real process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from batch.enos import token_encryption

pytestmark = pytest.mark.slow


def _start(tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    inventory = tmp_path / "fleet.csv"
    inventory.write_text("assetId,certSn\nasset-1,1001\n")
    env = {**os.environ, "ENOS_APP_KEY": "cli-key", "ENOS_APP_SECRET": "cli-secret"}
    args = ["--port", "0", "--fleet", str(inventory), *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "batch.simulator", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _get_token(url: str) -> dict[str, object]:
    ts = int(time.time() * 1000)
    body = {"appKey": "cli-key", "encryption": token_encryption("cli-key", ts, "cli-secret")}
    request = urllib.request.Request(
        f"{url}/apim-token-service/v2.0/token/get",
        data=json.dumps({**body, "timestamp": ts}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, object] = json.load(response)
    return answer


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_simulate_prints_its_url_and_writes_state_on_signal(
    tmp_path: Path, signum: signal.Signals
) -> None:
    state_out = tmp_path / "state.json"
    with _start(tmp_path, "--state-out", str(state_out), "--seed", "3") as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            match = re.fullmatch(r"listening on (http://127\.0\.0\.1:(\d+))", line)
            assert match and int(match.group(2)) > 0, line
            assert _get_token(match.group(1))["status"] == 0
            process.send_signal(signum)
            assert process.wait(timeout=20) == 0
        finally:
            if process.poll() is None:
                process.kill()
    state = json.loads(state_out.read_text())
    certificate = state["devices"]["asset-1"]["certificates"][0]
    assert certificate["serial"] == "1001" and certificate["status"] == "valid"
    assert state["stats"]["requests"] == {"token/get": 1}


def test_simulate_without_credentials_is_a_usage_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENOS_APP_")}
    result = subprocess.run(
        [sys.executable, "-m", "batch.simulator", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--app-key" in result.stderr


def test_simulate_help_shows_every_option_with_its_default() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "batch.simulator", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    for option in (
        "--rate-limit",
        "--lost-rate",
        "--state-out",
        "--retry-after",
        "--token-ttl",
        "--single-token",
        "--param-placement",
    ):
        assert option in result.stdout
    # each guess where the docs are silent says so: 1203, single-token, Edge issueAuthority
    text = " ".join(result.stdout.split())  # as read, whatever the terminal's wrapping
    assert text.count("(guess: docs are silent") >= 4
    assert "[default: 3650]" in result.stdout
    assert "--default-valid-days" in text and "[default: 730; x>=1]" in text
    assert "--validity-error-states-max" in text
