"""Journal cost: the same run with the journal durable (fsync before each request leaves) and
with `--no-durable-journal`.

Issue 6 #6 target: durable costs <= 10 % more wall time than relaxed. Two settings: the rate
unlimited (latency 0, where every fsync shows) and the issue's working point (--rate 250,
latency 50 +- 20 ms). The two modes alternate within each repetition so that drifting load hits
both alike; each run gets a fresh simulator.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import harness as h


def measure(devices: int, rate: float, latency: float, jitter: float, runs: int,
            json_path: Path | None) -> None:
    shown = "unlimited" if rate >= h.UNLIMITED else f"{rate:g}"
    title = f"journal cost, rate {shown}, latency {latency:g} ms (issue 6 #6)"
    print(f"{title}: {devices} devices, reuse  [{h.machine()}]", flush=True)
    with h.workdir("journal") as work:
        inventory = h.write_inventory(work / "inventory.csv", devices)

        def one(name: str, extra: list[str]) -> float:
            with h.simulator(inventory, work, latency_ms=latency, jitter_ms=jitter) as sim:
                job = h.run_job(inventory, work / name, sim.url, rate=rate, extra=extra)
            if job.status("renewed") != devices:
                raise RuntimeError(f"{name}: {job.status('renewed')} of {devices} renewed")
            return job.usage.wall_s

        def once(i: int) -> h.Figures:
            durable = one(f"durable{i}", [])
            relaxed = one(f"relaxed{i}", ["--no-durable-journal"])
            return {"durable wall s": durable, "relaxed wall s": relaxed,
                    "durable/relaxed": durable / relaxed}

        results = h.repeat(runs, once)
    h.report(title, results, targets={"durable/relaxed": "<= 1.10"},
             command=f"fleet-renew run inventory.csv --rate {rate:g} [--no-durable-journal]"
                     f" --api-url SIM  (SIM: fleet-renew simulate --latency-ms {latency:g}"
                     f" --jitter-ms {jitter:g})",
             json_path=json_path)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=3000)


def main() -> None:
    args = h.parse_args(__doc__, _options)
    devices = 300 if args.quick else args.devices
    runs = 1 if args.quick else args.runs
    measure(devices, h.UNLIMITED, 0.0, 0.0, runs, args.json)
    measure(devices, 250.0, 50.0, 20.0, runs, args.json)


if __name__ == "__main__":
    main()
