"""Shared plumbing for the benchmarks: inventories, the simulator and the job as processes.

Every benchmark runs the real thing: `fleet-renew simulate` in its own process on loopback and
`fleet-renew run` (or `plan`) in another, so that CPU time and peak RSS are those of one process,
read from `os.wait4` (user + system seconds, `ru_maxrss`). While the job runs, the harness polls
its RSS (/proc/PID/status) and the rows in report.csv, which are appended as devices finish: that
gives the completion curve (steady-state rate) and the memory curve without touching the job.

Each subprocess is bounded in time: past its deadline it gets SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ORG = "o-bench"
APP_KEY, APP_SECRET = "bench-key", "bench-secret"  # loopback simulator only, not a real secret
UNLIMITED = 100_000.0  # --rate for "rate unlimited": far above what one process can reach
POLL_S = 0.2
REAP_S = 0.01
CMD = [sys.executable, "-m", "batch"]


# ---------------------------------------------------------------- inventories


def write_inventory(path: Path, n: int, *, start: int = 0) -> Path:
    """A CSV (or, by extension, Parquet) inventory of `n` devices with product/device keys."""
    if path.suffix == ".parquet":
        return _write_parquet(path, n, start)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["orgId", "productKey", "deviceKey", "certSn"])
        for i in range(start, start + n):
            writer.writerow([ORG, f"pk{i % 4}", f"dev-{i:07d}", 10_000 + i])
    return path


def _write_parquet(path: Path, n: int, start: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [("orgId", pa.string()), ("productKey", pa.string()),
         ("deviceKey", pa.string()), ("certSn", pa.int64())]
    )
    with pq.ParquetWriter(path, schema) as writer:
        for lo in range(start, start + n, 100_000):
            ids = range(lo, min(lo + 100_000, start + n))
            writer.write_table(pa.table({
                "orgId": [ORG] * len(ids),
                "productKey": [f"pk{i % 4}" for i in ids],
                "deviceKey": [f"dev-{i:07d}" for i in ids],
                "certSn": [10_000 + i for i in ids],
            }, schema=schema))
    return path


# ---------------------------------------------------------------- processes


@dataclass(frozen=True, slots=True)
class Usage:
    """What one finished process used: wall, CPU (user + system) and peak RSS."""

    wall_s: float
    user_s: float
    sys_s: float
    maxrss_mb: float
    returncode: int

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def env() -> dict[str, str]:
    return {**os.environ, "ENOS_APP_KEY": APP_KEY, "ENOS_APP_SECRET": APP_SECRET}


def wait(proc: subprocess.Popen[bytes], started: float, deadline_s: float,
         on_poll: Callable[[], None] | None = None) -> Usage:
    """Reap `proc` with os.wait4 (its own rusage), polling; kill it past the deadline.

    The exit is checked every REAP_S (its wall time is exact to ~10 ms: a 3,000-device run
    takes 2-4 s, so the 0.2 s of POLL_S would be 5-10 % of it); `on_poll` runs every POLL_S.
    """
    next_poll = 0.0
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return Usage(time.monotonic() - started, ru.ru_utime, ru.ru_stime,
                         ru.ru_maxrss / 1024, proc.returncode)
        now = time.monotonic()
        if now - started > deadline_s:
            _stop(proc)
            raise TimeoutError(f"{proc.args!r} ran past {deadline_s:.0f} s")
        if on_poll is not None and now >= next_poll:
            on_poll()
            next_poll = now + POLL_S
        time.sleep(REAP_S)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, five seconds of grace, then SIGKILL; the process is reaped either way."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    end = time.monotonic() + 5.0
    while time.monotonic() < end:
        try:
            if os.waitpid(proc.pid, os.WNOHANG)[0]:
                break
        except ChildProcessError:
            break
        time.sleep(0.05)
    else:
        proc.kill()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(proc.pid, 0)
    proc.returncode = -signal.SIGTERM


@dataclass
class Simulator:
    """A `fleet-renew simulate` process; `state` and `usage` are filled when it stops."""

    url: str
    proc: subprocess.Popen[bytes]
    started: float
    state_path: Path
    state: dict[str, Any] = field(default_factory=dict)
    usage: Usage | None = None

    def cpu_now(self) -> float:
        """CPU seconds (user + system) the simulator used so far, from /proc/PID/stat."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    @property
    def stats(self) -> dict[str, Any]:
        return dict(self.state.get("stats", {}))


@contextlib.contextmanager
def simulator(fleet: Path, work: Path, *, latency_ms: float = 0.0, jitter_ms: float = 0.0,
              rate_limit: int | None = None, timeout_s: float = 600.0) -> Iterator[Simulator]:
    """Run the simulator seeded from `fleet` on a free loopback port for the block."""
    state_path = work / f"sim-state-{time.monotonic_ns()}.json"
    args = [*CMD, "simulate", "--host", "127.0.0.1", "--port", "0", "--fleet", str(fleet),
            "--org", ORG, "--latency-ms", str(latency_ms), "--jitter-ms", str(jitter_ms),
            "--state-out", str(state_path)]
    if rate_limit is not None:
        args += ["--rate-limit", str(rate_limit)]
    with (work / "simulator.log").open("ab") as log:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, env=env())
    started = time.monotonic()
    try:
        sim = Simulator(_listening_url(proc, 120.0), proc, started, state_path)
        yield sim
    except BaseException:
        _stop(proc)
        raise
    proc.send_signal(signal.SIGTERM)
    sim.usage = wait(proc, started, timeout_s)
    if proc.stdout is not None:
        proc.stdout.close()
    sim.state = json.loads(state_path.read_text())


def _listening_url(proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    lines: queue.Queue[bytes] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=timeout_s).decode().strip()
    except queue.Empty:
        raise TimeoutError("the simulator did not start listening") from None
    if not line.startswith("listening on "):
        raise RuntimeError(f"the simulator said {line!r} (see simulator.log)")
    return line.removeprefix("listening on ")


@dataclass(frozen=True, slots=True)
class JobResult:
    """A finished `fleet-renew run`: its usage, summary.json, and the polled curves."""

    usage: Usage
    summary: dict[str, Any]
    samples: list[tuple[float, int, float]]  # (seconds since start, rows in report, RSS MB)
    out: Path

    def device_ms(self, quantile: float = 0.5) -> float:
        """A quantile of report.csv's durationMs: one device's time from start to bundle."""
        with (self.out / "report.csv").open(newline="") as fh:
            values = sorted(float(r["durationMs"]) for r in csv.DictReader(fh)
                            if r["durationMs"])
        return values[min(int(quantile * len(values)), len(values) - 1)] if values else 0.0

    def steady_rate(self, lo: float = 0.1, hi: float = 0.9) -> float:
        """Devices finished per second between `lo` and `hi` of the run's rows (no start-up)."""
        total = self.samples[-1][1] if self.samples else 0
        inside = [(t, n) for t, n, _ in self.samples if lo * total <= n <= hi * total]
        if len(inside) < 2 or inside[-1][0] == inside[0][0]:
            return float("nan")
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    def status(self, name: str) -> int:
        return int(self.summary.get("counts_by_status", {}).get(name, 0))


def run_job(inventory: Path, out: Path, url: str, *, rate: float, key_mode: str = "reuse",
            extra: Sequence[str] = (), timeout_s: float = 900.0) -> JobResult:
    """Run `fleet-renew run` against `url` as a process; sample its progress and RSS."""
    args = [*CMD, "run", str(inventory), "--out", str(out), "--api-url", url,
            "--rate", str(rate), "--key-mode", key_mode, "--progress", "off", *extra]
    samples: list[tuple[float, int, float]] = []
    with (out.parent / f"{out.name}.log").open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=log, env=env())
    started = time.monotonic()
    rows = _RowCounter(out / "report.csv")

    def poll() -> None:
        samples.append((time.monotonic() - started, rows.count(), _rss_mb(proc.pid)))

    usage = wait(proc, started, timeout_s, poll)
    samples.append((usage.wall_s, rows.count(), usage.maxrss_mb))
    summary_path = out / "summary.json"
    if not summary_path.exists():
        raise RuntimeError(f"the job exited {usage.returncode} without a summary ({out}.log)")
    return JobResult(usage, json.loads(summary_path.read_text()), samples, out)


class _RowCounter:
    """Data rows in a growing CSV, reading only the bytes added since the last call."""

    def __init__(self, path: Path) -> None:
        self._path, self._offset, self._lines = path, 0, 0

    def count(self) -> int:
        with contextlib.suppress(FileNotFoundError), self._path.open("rb") as fh:
            fh.seek(self._offset)
            chunk = fh.read()
            self._offset += len(chunk)
            self._lines += chunk.count(b"\n")
        return max(self._lines - 1, 0)  # minus the header


def _rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_command(args: Sequence[str], log: Path, timeout_s: float = 600.0) -> Usage:
    """Run one command to the end and return its own usage (wall, CPU, peak RSS)."""
    with log.open("wb") as fh:
        proc = subprocess.Popen(list(args), stdout=fh, stderr=fh, env=env())
    usage = wait(proc, time.monotonic(), timeout_s)
    if usage.returncode not in (0, 1):
        raise RuntimeError(f"{args!r} exited {usage.returncode} (see {log})")
    return usage


# ---------------------------------------------------------------- repetitions and output


def parse_args(doc: str | None, extra: Callable[[argparse.ArgumentParser], None] | None = None
               ) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--runs", type=int, default=3, help="repetitions (median/min/max)")
    parser.add_argument("--json", type=Path, help="also append the results as JSON lines here")
    if extra is not None:
        extra(parser)
    return parser.parse_args()


BENCH_OUT = Path(__file__).resolve().parent.parent / "bench-out"


@contextlib.contextmanager
def workdir(name: str) -> Iterator[Path]:
    """A fresh folder for one benchmark under bench-out/, kept afterwards.

    Not deleted here on purpose: on this machine's ext4, creating files within minutes of
    deleting thousands (the previous run's bundles) makes the kernel scan for inodes that were
    not recently freed, which more than doubled the job's CPU (sys time) in our runs. `make
    bench` removes bench-out/ once every figure is taken.
    """
    BENCH_OUT.mkdir(exist_ok=True)
    yield Path(tempfile.mkdtemp(prefix=f"{name}-", dir=BENCH_OUT))


Figures = Mapping[str, float]


def repeat(runs: int, once: Callable[[int], Figures]) -> list[Figures]:
    """Run `once(i)` `runs` times, printing each run's figures as it ends."""
    results: list[Figures] = []
    for i in range(runs):
        figures = once(i)
        shown = ", ".join(f"{k}={fmt(v)}" for k, v in figures.items())
        print(f"  run {i + 1}/{runs}: {shown}", flush=True)
        results.append(figures)
    return results


def report(title: str, results: list[Figures], *, targets: Mapping[str, str] | None = None,
           command: str = "", json_path: Path | None = None, notes: str = "") -> None:
    """Print median / min / max of every figure (and append them as JSON when asked)."""
    print(f"\n== {title}  (code {code_version()})")
    if command:
        print(f"   command: {command}")
    rows = {}
    for key in results[0]:
        values = [r[key] for r in results]
        rows[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
        target = f"   target {targets[key]}" if targets and key in targets else ""
        m = rows[key]
        print(f"   {key:<34} median {fmt(m['median']):>10}  min {fmt(m['min']):>10}"
              f"  max {fmt(m['max']):>10}{target}")
    if notes:
        print(f"   {notes}")
    if json_path is not None:
        with json_path.open("a") as fh:
            fh.write(json.dumps({"title": title, "command": command, "figures": rows,
                                 "targets": dict(targets or {}), "notes": notes,
                                 "loadavg": os.getloadavg()[0], "code": code_version()}) + "\n")


def fmt(value: float) -> str:
    """A figure for people: 3 significant digits, whole numbers from 100 up."""
    if value != value:  # NaN
        return "n/a"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def code_version() -> str:
    """The commit the benchmark ran on, with `+dirty` when the working tree has changes."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).parent)
        return done.stdout.strip()

    with contextlib.suppress(OSError, subprocess.SubprocessError):
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "batch")
        return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")
    return "unknown"


def machine() -> str:
    """One line naming the machine: cores, CPU model, Python, load."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    return (f"{os.cpu_count()} cores, {model}, Python {sys.version.split()[0]}, "
            f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
