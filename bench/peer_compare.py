"""The job against the bare-script peer (issue 13 #1-2), in one run against one simulator.

One `fleet-renew simulate` process serves every run; its fleet holds a distinct slice of
devices for each of them (a renewal supersedes a device's certSn, so no device is renewed
twice). Each repetition runs the peer (`bench/bare_peer.py`) and the job (`fleet-renew run`,
reuse mode, rate unlimited, journal durable, verification on, bundles and report written),
alternating which goes first. CPU is each process's user + system time from os.wait4, start-up
and the job's end-of-run reports included; throughput is devices / the process's wall time.

Targets: the job's CPU per renewal <= 2x the peer's, its throughput >= 0.5x the peer's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import harness as h

PEER = Path(__file__).resolve().parent / "bare_peer.py"


def run_peer(inventory: Path, out: Path, url: str, devices: int) -> h.Usage:
    with (out.parent / f"{out.name}.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, str(PEER), str(inventory), str(out), url],
                                stdout=subprocess.PIPE, stderr=log, env=h.env())
    usage = h.wait(proc, time.monotonic(), 600.0)
    assert proc.stdout is not None
    counts = json.loads(proc.stdout.read() or b"{}")
    proc.stdout.close()
    if usage.returncode != 0 or counts.get("renewed") != devices:
        raise RuntimeError(f"the peer exited {usage.returncode}, counts {counts} ({out}.log)")
    return usage


def main() -> None:
    args = h.parse_args(__doc__, _options)
    devices = 300 if args.quick else args.devices
    runs = 1 if args.quick else args.runs
    title = f"job vs bare peer, reuse, {devices} devices, rate unlimited (issue 13 #2)"
    print(f"{title}  [{h.machine()}]", flush=True)
    with h.workdir("peer") as work:
        fleet = h.write_inventory(work / "fleet.csv", devices * 2 * runs)
        slices = [h.write_inventory(work / f"inv{k}.csv", devices, start=k * devices)
                  for k in range(2 * runs)]
        with h.simulator(fleet, work) as sim:

            def once(i: int) -> h.Figures:
                def peer() -> h.Usage:
                    return run_peer(slices[2 * i], work / f"peer{i}", sim.url, devices)

                def job() -> h.JobResult:
                    return h.run_job(slices[2 * i + 1], work / f"job{i}", sim.url,
                                     rate=h.UNLIMITED, key_mode="reuse")

                if i % 2 == 0:
                    p, j = peer(), job()
                else:
                    j = job()
                    p = peer()
                if j.status("renewed") != devices:
                    raise RuntimeError(f"the job renewed {j.status('renewed')} of {devices}")
                job_ms = j.usage.cpu_s / devices * 1000
                peer_ms = p.cpu_s / devices * 1000
                job_rate, peer_rate = devices / j.usage.wall_s, devices / p.wall_s
                return {"job CPU ms/renewal": job_ms, "peer CPU ms/renewal": peer_ms,
                        "job/peer CPU": job_ms / peer_ms,
                        "job renewals/s": job_rate, "peer renewals/s": peer_rate,
                        "job/peer throughput": job_rate / peer_rate,
                        "job wall s": j.usage.wall_s, "peer wall s": p.wall_s}

            results = h.repeat(runs, once)
    h.report(title, results,
             targets={"job/peer CPU": "<= 2.0", "job/peer throughput": ">= 0.5"},
             command=f"fleet-renew run inventory.csv --key-mode reuse --rate {h.UNLIMITED:g}"
                     " --api-url SIM vs bench/bare_peer.py inventory.csv out SIM"
                     "  (SIM: one fleet-renew simulate, latency 0, no limit)",
             json_path=args.json)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=3000)


if __name__ == "__main__":
    main()
