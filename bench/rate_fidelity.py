"""Rate fidelity: does the job hold --rate, with no one-second window above it?

Issue 6 #1: 5,000 devices, simulator latency 50 ms +- 20 ms and its limit above the client's
(twice the rate), job at --rate 250. Targets: achieved / configured >= 0.97, and no sliding
one-second window with more than 250 requests (counted by the simulator as they arrive).

`achieved` is the job's own figure (summary.json: requests / run duration, start-up included);
`steady` is devices finished per second between 10 % and 90 % of the run, from report.csv.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import harness as h


def measure(devices: int, rate: float, latency_ms: float, jitter_ms: float, runs: int,
            json_path: Path | None, title: str, concurrency: int | None = None) -> None:
    """Run the job `runs` times against a fresh simulator each time and print the figures."""
    limit = int(rate * 2)
    extra = [] if concurrency is None else ["--concurrency", str(concurrency)]
    if concurrency is not None:
        title += f", --concurrency {concurrency}"
    print(f"{title}: {devices} devices, --rate {rate:g}, latency {latency_ms:g}+-{jitter_ms:g} ms,"
          f" simulator limit {limit}/s  [{h.machine()}]", flush=True)
    with h.workdir("rate") as work:
        inventory = h.write_inventory(work / "inventory.csv", devices)

        def once(i: int) -> h.Figures:
            with h.simulator(inventory, work, latency_ms=latency_ms, jitter_ms=jitter_ms,
                             rate_limit=limit) as sim:
                job = h.run_job(inventory, work / f"out{i}", sim.url, rate=rate, extra=extra)
            stats = sim.stats
            return {
                "achieved/configured": job.summary["achieved_rate"] / rate,
                "steady/configured": job.steady_rate() / rate,
                "max requests in 1 s (simulator)": stats["maxInOneSecond"],
                "HTTP 429 answers": stats["throttled"],
                "renewed share": job.status("renewed") / devices,
                "device ms median (durationMs)": job.device_ms(0.5),
                "device ms p95": job.device_ms(0.95),
                "job cores busy (CPU/wall)": job.usage.cpu_s / job.usage.wall_s,
                "job wall s": job.usage.wall_s,
            }

        results = h.repeat(runs, once)
    h.report(
        title, results,
        targets={"achieved/configured": ">= 0.97",
                 "max requests in 1 s (simulator)": f"<= {rate:g}",
                 "renewed share": "1.0"},
        command=f"fleet-renew run inventory.csv --rate {rate:g} {' '.join(extra)}"
                " --progress off --api-url SIM"
                f"  (SIM: fleet-renew simulate --latency-ms {latency_ms:g}"
                f" --jitter-ms {jitter_ms:g} --rate-limit {limit})",
        json_path=json_path,
    )


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=250.0)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--jitter-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, help="[default: the job's own default]")


def main() -> None:
    args = h.parse_args(__doc__, _options)
    devices = min(args.devices, 500) if args.quick else args.devices
    measure(devices, args.rate, args.latency_ms, args.jitter_ms, 1 if args.quick else args.runs,
            args.json, "rate fidelity (issue 6 #1)", args.concurrency)


if __name__ == "__main__":
    main()
