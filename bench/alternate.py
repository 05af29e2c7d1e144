"""Run one benchmark for two versions of the code, alternating, and record who else used the CPU.

This machine's two cores are shared with other work: a figure taken while something else ran
is not the code's. Each run waits (up to --wait-s) for a quiet moment (the machine at most
--quiet busy over 2 s), then runs `python BENCH ARGS --runs 1 --json OUT` from the version's
folder (so that `python -m batch` imports that version's `batch/`), and records the CPU the
rest of the machine used meanwhile: all busy time (/proc/stat) minus the benchmark's own
(its process and every process it waited for, os.wait4).

    python bench/alternate.py --versions OLD:NEW -- client_cpu.py --modes rsa2048
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")


def busy_s() -> float:
    """CPU seconds the whole machine has been busy since boot (all cores)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / TICK


def wait_quiet(limit: float, wait_s: float) -> float:
    """Wait until the machine is at most `limit` busy (in cores) over 2 s; return that load."""
    deadline = time.monotonic() + wait_s
    while True:
        before = busy_s()
        time.sleep(2.0)
        load = (busy_s() - before) / 2.0
        if load <= limit or time.monotonic() > deadline:
            return load


def run(folder: str, bench: list[str], out: Path) -> dict[str, float]:
    script = BENCH / bench[0]
    before, started = busy_s(), time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, str(script), *bench[1:], "--runs", "1", "--json", str(out)], cwd=folder
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    own = usage.ru_utime + usage.ru_stime
    others = busy_s() - before - own
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{script} failed in {folder}")
    return {"wall_s": wall, "own_cores": own / wall, "others_cores": max(others, 0.0) / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", required=True, help="FOLDER_A:FOLDER_B (each holds batch/)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quiet", type=float, default=0.3, help="most cores busy to start")
    parser.add_argument("--wait-s", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=Path("alternate.jsonl"))
    parser.add_argument("bench", nargs="+", help="the benchmark script (in bench/) and its args")
    args = parser.parse_args()
    for i in range(args.repeat):
        for folder in args.versions.split(":"):
            quiet = wait_quiet(args.quiet, args.wait_s)
            figures = run(folder, args.bench, args.out.with_suffix(f".{Path(folder).name}.jsonl"))
            figures["busy_before"] = quiet
            print(json.dumps({"repeat": i, "version": folder, **figures}), flush=True)
            with args.out.open("a") as fh:
                fh.write(json.dumps({"repeat": i, "version": folder, **figures}) + "\n")


if __name__ == "__main__":
    main()
