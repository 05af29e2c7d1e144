"""Crash safety of the whole job, as real processes: SIGKILL at random points, SIGTERM, resume.

The simulator runs as its own process with dropped connections, lost answers (the renewal takes
effect, the answer never comes) and 99500 enabled, and some latency. The job runs as the
`fleet-renew` console script and is killed with SIGKILL at seeded random points (once its
report has k rows; then after a random delay, which may land in start-up, while the devices in
flight at the first kill are being reconciled, or never), then the same command is run again
until it ends with 0 or 1 and no device is left unfinished. The simulator's own record
(`--state-out`) must then show the renewals, and each bundle must hold the
device's one valid certificate (and, for a generated key, that certificate's private key).

List Certificate runs in two modes. With `--list-includes-pem` a lost answer is recovered from
List's PEM: exactly one renewal per device. As documented (serials, status and dates, no PEM)
the job must renew the certificate it found once more to obtain it: then extra renewals are
allowed only for devices whose answer was lost, by the simulator's own record (`lostAnswers`)
or by a kill with the request in flight, and the job's report must say which one it renewed
again.

Process start-up (~1.5 s of imports) dominates the time, so each seed runs both key modes at
once, in their own output folders, against one simulator.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

pytestmark = pytest.mark.slow

ORG = "o-crash"
APP_KEY, APP_SECRET = "crash-key", "crash-secret"
FLEET_RENEW = Path(sys.executable).with_name("fleet-renew")
FAULTS = (
    "--latency-ms", "20", "--jitter-ms", "10",
    "--fail-rate", "0.05", "--drop-rate", "0.05", "--lost-rate", "0.05",
)  # fmt: skip
LIST_PEM = "--list-includes-pem"  # not documented: the documented List answers no PEM
KEY_MODES = ("ec256", "reuse")
DEVICES = 150  # per key mode and seed
TRANSIENT = {"server_error", "network", "timeout", "throttled", "ambiguous"}
MAX_RUNS = 8  # kills plus reruns: a job that never finishes fails the test instead of hanging
RUN_TIMEOUT = 60.0
CONCURRENCY = 16  # the job's requests in flight: at most this many answers lost by one kill


def environment() -> dict[str, str]:
    return {**os.environ, "ENOS_APP_KEY": APP_KEY, "ENOS_APP_SECRET": APP_SECRET}


@dataclass
class Campaign:
    """One inventory, run again and again into one output folder with one key mode."""

    key_mode: str
    inventory: Path
    out: Path
    identities: list[str]  # state-file IDs, in inventory order
    reports: list[list[dict[str, str]]] = field(default_factory=list)  # every run's report
    kills: int = 0  # runs that ended by SIGKILL

    @property
    def log(self) -> Path:
        return self.out.with_suffix(".log")

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def campaign(tmp_path: Path, key_mode: str, n: int, first_cert_sn: int) -> Campaign:
    """Write an inventory of n devices (productKey/deviceKey) for `key_mode`."""
    inventory = tmp_path / f"{key_mode}.csv"
    identities = []
    with inventory.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["orgId", "productKey", "deviceKey", "certSn"])
        for i in range(n):
            writer.writerow([ORG, "pkC", f"{key_mode}-{i:04d}", first_cert_sn + i])
            identities.append(f"pkC/{key_mode}-{i:04d}")
    out = tmp_path / key_mode
    out.mkdir()
    return Campaign(key_mode, inventory, out, identities)


def write_fleet(path: Path, campaigns: list[Campaign]) -> Path:
    """The simulator's fleet: every campaign's devices (their certSns do not overlap)."""
    lines = [campaigns[0].inventory.read_text().splitlines()[0]]
    for c in campaigns:
        lines += c.inventory.read_text().splitlines()[1:]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Simulator:
    process: subprocess.Popen[str]
    url: str
    state_out: Path

    def stop(self) -> dict[str, Any]:
        """SIGTERM the simulator and return the state it wrote on the way out."""
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=15) == 0
        state: dict[str, Any] = json.loads(self.state_out.read_text())
        return state


@contextmanager
def simulator(
    tmp_path: Path, fleet: Path, seed: int, *, list_pem: bool = True
) -> Iterator[Simulator]:
    state_out = tmp_path / "state.json"
    command = [
        str(FLEET_RENEW), "simulate", "--port", "0", "--fleet", str(fleet), "--org", ORG,
        "--seed", str(seed), "--state-out", str(state_out), *FAULTS,
    ]  # fmt: skip
    command += [LIST_PEM] if list_pem else []
    process = subprocess.Popen(
        command, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()  # "" if it died: then the match fails
        match = re.fullmatch(r"listening on (http://\S+)", line)
        assert match, f"simulator did not start: {line!r}"
        yield Simulator(process, match.group(1), state_out)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def start_job(c: Campaign, url: str) -> subprocess.Popen[bytes]:
    # Each run writes a fresh report.csv; the earlier one is kept aside, so that watching for k
    # rows never counts an earlier run's rows.
    report = c.out / "report.csv"
    if report.exists():
        report.rename(c.out / f"report.{len(c.reports)}.csv")
    command = [
        str(FLEET_RENEW), "run", str(c.inventory), "--out", str(c.out), "--api-url", url,
        "--rate", "200", "--concurrency", str(CONCURRENCY), "--progress", "log",
        "--key-mode", c.key_mode,
    ]  # fmt: skip
    with c.log.open("ab") as log:
        log.write(f"=== {datetime.now().time()} run {len(c.reports)}\n".encode())
        log.flush()
        return subprocess.Popen(command, env=environment(), stdout=log, stderr=log)


def report_rows(out: Path) -> list[dict[str, str]]:
    try:
        with (out / "report.csv").open(newline="") as fh:
            return list(csv.DictReader(fh))
    except FileNotFoundError:
        return []


def rows_so_far(out: Path) -> int:
    """Report rows written so far (lines after the header; cheap enough to poll)."""
    try:
        return max(0, (out / "report.csv").read_bytes().count(b"\n") - 1)
    except FileNotFoundError:
        return 0


def wait_for_rows(process: subprocess.Popen[bytes], out: Path, rows: int, delay: float) -> None:
    """Return once the job's report has `rows` rows, `delay` s passed, or the job ended."""
    deadline = time.monotonic() + delay
    while process.poll() is None and time.monotonic() < deadline and rows_so_far(out) < rows:
        time.sleep(0.01)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


def unfinished(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Rows a rerun still has to work on: failed for a transient reason."""
    return [r for r in rows if r["status"] == "failed" and r["errorClass"] in TRANSIENT]


def run_to_completion(c: Campaign, url: str, kills: list[tuple[int, float]]) -> int:
    """Run the same command, SIGKILLing run i at kills[i], then until nothing is unfinished.

    A kill is (k, delay): once the report has k rows or after delay seconds, whichever comes
    first. Every run that ends by itself must exit 0 or 1 with one report row per inventory row.
    Returns how many runs it took.
    """
    for run in range(MAX_RUNS):
        process = start_job(c, url)
        try:
            if run < len(kills):
                rows, delay = kills[run]
                wait_for_rows(process, c.out, rows, delay)
            if process.poll() is None and run < len(kills):
                process.kill()
            code = process.wait(timeout=RUN_TIMEOUT)
        finally:
            stop(process)
        c.reports.append(report_rows(c.out))
        if code == -signal.SIGKILL:
            c.kills += 1
            continue
        assert code in (0, 1), f"{c.key_mode} run {run} exited {code}:\n{c.log_tail()}"
        rows = c.reports[-1]
        assert len(rows) == len(c.identities), f"{c.key_mode} run {run}:\n{c.log_tail()}"
        if not unfinished(rows):
            return run + 1
    raise AssertionError(f"{c.key_mode}: unfinished after {MAX_RUNS} runs:\n{c.log_tail()}")


def spki_sha256(public_key: Any) -> str:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def assert_one_renewal_each(c: Campaign, state: dict[str, Any]) -> None:
    """Every device renewed once, and its bundle holds its one valid certificate."""
    for identity in c.identities:
        assert state["devices"][identity]["renewals"] == 1, (identity, state["devices"][identity])
    assert_bundles_hold_the_valid_certificates(c, state)


def identity_of(row: dict[str, str]) -> str:
    return f"{row['productKey']}/{row['deviceKey']}"


def assert_bundles_hold_the_valid_certificates(c: Campaign, state: dict[str, Any]) -> None:
    """One report row per inventory row; every device has exactly one valid certificate, and
    it (and, for a generated key, the matching private key, 0600) is the one in its bundle."""
    rows = c.reports[-1]
    assert sorted(int(r["row"]) for r in rows) == list(range(2, len(c.identities) + 2))
    by_identity = {identity_of(r): r for r in rows}
    assert sorted(by_identity) == sorted(c.identities)
    for identity in c.identities:
        device, row = state["devices"][identity], by_identity[identity]
        assert device["renewals"] >= 1, (identity, device, row)
        assert row["status"] in ("renewed", "skipped") and row["errorClass"] == "", row
        valid = [cert for cert in device["certificates"] if cert["status"] == "valid"]
        assert len(valid) == 1, (identity, device)
        assert valid[0]["serial"] == row["newCertSn"], (identity, device, row)
        bundle = c.out / row["bundlePath"]
        cert = x509.load_pem_x509_certificate((bundle / "cert.pem").read_bytes())
        assert str(cert.serial_number) == valid[0]["serial"]
        assert spki_sha256(cert.public_key()) == valid[0]["publicKeySha256"]
        key_path = bundle / "key.pem"
        if c.key_mode == "reuse":
            seeded = device["certificates"][0]
            assert valid[0]["publicKeySha256"] == seeded["publicKeySha256"]  # the same key
            assert not key_path.exists()
        else:
            assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            assert spki_sha256(key.public_key()) == valid[0]["publicKeySha256"]


def assert_extra_renewals_only_for_lost_answers(c: Campaign, state: dict[str, Any]) -> int:
    """A device is renewed more than once only because an answer was lost: each renewal that
    a later one superseded is in the simulator's `lostAnswers`, or was lost to a kill of the job
    (at most CONCURRENCY per kill). The job never renews away a certificate it reported, and the
    row that first reported the kept certificate names the one it renewed again. Returns how
    many answers the simulator withheld."""
    rows = [row for report in c.reports for row in report]
    reported = {row["newCertSn"] for row in rows if row["newCertSn"]}
    lost_answers, lost_to_kills = 0, []
    for identity in c.identities:
        device = state["devices"][identity]
        issued = [cert["serial"] for cert in device["certificates"][1:]]  # [0] was seeded
        assert len(issued) == device["renewals"], (identity, device)
        superseded, kept = issued[:-1], issued[-1]
        lost = set(device["lostAnswers"])
        lost_answers += len(lost)
        assert lost <= set(superseded), (identity, device)  # the kept one was answered
        assert not reported & set(superseded), (identity, device)
        lost_to_kills += [serial for serial in superseded if serial not in lost]
        mine = [row for row in rows if identity_of(row) == identity]
        first = next(row for row in mine if row["newCertSn"] == kept)
        if superseded:
            assert f"renewed {superseded[-1]} again" in first["note"], (identity, device, first)
        else:
            assert not [row for row in mine if "took effect unseen" in row["note"]], mine
    assert len(lost_to_kills) <= c.kills * CONCURRENCY, (c.key_mode, c.kills, lost_to_kills)
    return lost_answers


def kill_points(rng: random.Random, n: int) -> list[tuple[int, float]]:
    """The first run dies once its report has k rows (1 <= k < n); the rerun after a random
    delay: in its start-up, while it reconciles the devices in flight at the first kill, later,
    or never (it finished first)."""
    return [(rng.randrange(1, n), RUN_TIMEOUT), (n + 1, rng.uniform(1.0, 4.0))]


@pytest.mark.parametrize("seed", [11, 22, 33])
def test_sigkill_at_random_points_then_rerun_renews_each_device_exactly_once(
    tmp_path: Path, seed: int
) -> None:
    state, campaigns = crash_campaigns(tmp_path, seed, list_pem=True)
    for c in campaigns:
        assert_one_renewal_each(c, state)


@pytest.mark.parametrize("seed", [44])
def test_sigkill_with_list_as_documented_renews_again_only_what_was_lost(
    tmp_path: Path, seed: int
) -> None:
    state, campaigns = crash_campaigns(tmp_path, seed, list_pem=False)
    lost = 0
    for c in campaigns:
        assert_bundles_hold_the_valid_certificates(c, state)
        lost += assert_extra_renewals_only_for_lost_answers(c, state)
    assert lost > 0  # some renewals really took effect unseen and were renewed again


def crash_campaigns(
    tmp_path: Path, seed: int, *, list_pem: bool
) -> tuple[dict[str, Any], list[Campaign]]:
    """Both key modes' campaigns run to completion through kills; the simulator's final state."""
    rng = random.Random(seed)
    campaigns = [
        campaign(tmp_path, mode, DEVICES, 5000 + 1000 * i) for i, mode in enumerate(KEY_MODES)
    ]
    fleet = write_fleet(tmp_path / "fleet.csv", campaigns)
    with (
        simulator(tmp_path, fleet, seed, list_pem=list_pem) as sim,
        ThreadPoolExecutor(len(campaigns)) as pool,
    ):
        runs = [
            pool.submit(run_to_completion, c, sim.url, kill_points(rng, DEVICES)) for c in campaigns
        ]
        for c, future in zip(campaigns, runs, strict=True):
            assert future.result() >= 2, c.key_mode  # the first run really was killed
        state = sim.stop()
    faults = state["stats"]["faults"]
    assert faults["lost"] > 0 and faults["drop"] > 0 and faults["fail"] > 0
    for c in campaigns:
        resolutions = {r["resolution"] for rows in c.reports for r in rows}
        assert {"direct", "reconciled", "resumed"} <= resolutions, c.key_mode
    return state, campaigns


def test_sigterm_stops_cleanly_with_143_and_a_rerun_completes(tmp_path: Path) -> None:
    c = campaign(tmp_path, "ec256", DEVICES, 5000)
    with simulator(tmp_path, c.inventory, 7) as sim:
        process = start_job(c, sim.url)
        try:
            wait_for_rows(process, c.out, 40, RUN_TIMEOUT)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=RUN_TIMEOUT) == 143, c.log_tail()
        finally:
            stop(process)
        c.reports.append(report_rows(c.out))
        summary = json.loads((c.out / "summary.json").read_text())
        assert (summary["exit_code"], summary["extra"]["stoppedBy"]) == (143, "SIGTERM")
        assert 40 <= len(c.reports[0]) < DEVICES  # it stopped early, and kept what it finished
        assert run_to_completion(c, sim.url, kills=[]) == 1
        state = sim.stop()
    assert json.loads((c.out / "summary.json").read_text())["exit_code"] == 0
    assert_one_renewal_each(c, state)
