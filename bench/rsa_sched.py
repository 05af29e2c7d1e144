"""Where the time of an RSA-2048 run goes, thread by thread: running, waiting for a core, asleep.

The kernel keeps, per thread, the time it ran and the time it was runnable but waited for a core
(/proc/PID/task/TID/schedstat); the rest of the wall time it slept. For the threads or worker
processes that generate keys, asleep means waiting for the GIL or for work (the pool idle),
waiting for a core means the cores were busy with something else. Sampled between 10 % and 90 %
of the report's rows (the steady part), for the job's threads, its child processes (key
workers) and the simulator.

    python bench/rsa_sched.py [--devices 600]     (from the folder whose batch/ is measured)
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import harness as h
from cryptography.hazmat.primitives.asymmetric import rsa

KEYS = 60  # keys generated alone after the run, for the CPU of one key
Sample = tuple[float, int, dict[str, tuple[int, int]]]


def schedstat(pid: int, label: str) -> dict[str, tuple[int, int]]:
    """(ns on a core, ns runnable but waiting) for each thread of `pid`, keyed label/tid."""
    found = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            run_ns, wait_ns, _ = Path(task, "schedstat").read_text().split()
        except (OSError, ValueError):
            continue
        found[f"{label}/{task.name}"] = (int(run_ns), int(wait_ns))
    return found


def children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return kids


def measure(devices: int) -> None:
    with h.workdir("rsa-sched") as work:
        inventory = h.write_inventory(work / "inventory.csv", devices)
        with h.simulator(inventory, work) as sim:
            out = work / "out"
            args = [*h.CMD, "run", str(inventory), "--out", str(out), "--api-url", sim.url,
                    "--rate", str(h.UNLIMITED), "--key-mode", "rsa2048", "--progress", "off"]
            with (work / "job.log").open("wb") as log:
                proc = subprocess.Popen(args, stdout=log, stderr=log, env=h.env())
            started = time.monotonic()
            report = out / "report.csv"
            samples: list[Sample] = []

            def poll() -> None:
                rows = 0
                if report.exists():
                    rows = max(report.read_bytes().count(b"\n") - 1, 0)
                threads = schedstat(proc.pid, "job")
                for kid in children(proc.pid):
                    threads |= schedstat(kid, f"child {kid}")
                threads |= schedstat(sim.proc.pid, "simulator")
                samples.append((time.monotonic() - started, rows, threads))

            usage = h.wait(proc, started, 900.0, poll)
    summarise(samples, devices, usage.wall_s)


def summarise(samples: list[Sample], devices: int, wall_s: float) -> None:
    first = next(s for s in samples if s[1] >= 0.1 * devices)
    last = next(s for s in reversed(samples) if s[1] <= 0.9 * devices)
    dt_ns = (last[0] - first[0]) * 1e9
    rate = (last[1] - first[1]) / (last[0] - first[0])
    print(f"steady window {first[0]:.1f}-{last[0]:.1f} s, {rate:.1f} renewals/s "
          f"(run {wall_s:.1f} s, {devices} devices); per thread, share of the window:")
    print(f"  {'thread':24} {'running':>8} {'waiting core':>13} {'asleep':>7} {'ms/renewal':>11}")
    rows = []
    renewals = last[1] - first[1]
    for name, (run1, wait1) in last[2].items():
        run0, wait0 = first[2].get(name, (0, 0))
        running, waiting = (run1 - run0) / dt_ns, (wait1 - wait0) / dt_ns
        if running > 0.01:
            rows.append((running, waiting, name))
    for running, waiting, name in sorted(rows, reverse=True):
        per = running * dt_ns / 1e6 / renewals
        asleep = 1 - running - waiting
        print(f"  {name:24} {running:8.2f} {waiting:13.2f} {asleep:7.2f} {per:11.2f}")
    total = sum(r for r, _, _ in rows)
    print(f"  cores busy (all listed threads): {total:.2f}; CPU per renewal, all of them:"
          f" {total * dt_ns / 1e6 / renewals:.2f} ms")
    started = time.process_time()
    for _ in range(KEYS):
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
    print(f"  one RSA-2048 key, one thread alone (this process, {KEYS} keys): "
          f"{(time.process_time() - started) / KEYS * 1000:.2f} ms of CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=600)
    measure(parser.parse_args().devices)


if __name__ == "__main__":
    main()
