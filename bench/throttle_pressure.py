"""Under 429 pressure: the simulator admits 150 requests/s, the job is told --rate 250.

Issue 6 #2 targets: the job settles near the simulator's limit, under 5 % of the renewal
requests are answered HTTP 429, and every device still ends renewed. A second, scaled scenario
(limit 50/s, --rate 80) keeps the pressure even when the job cannot reach 150/s on its own.

`settled` is devices finished per second between 50 % and 95 % of the run (after the limiter has
adapted), from the rows appended to report.csv.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import harness as h


def measure(devices: int, limit: int, rate: float, runs: int, json_path: Path | None) -> None:
    title = f"429 pressure: simulator limit {limit}/s, --rate {rate:g} (issue 6 #2)"
    print(f"{title}: {devices} devices, latency 50+-20 ms  [{h.machine()}]", flush=True)
    with h.workdir("throttle") as work:
        inventory = h.write_inventory(work / "inventory.csv", devices)

        def once(i: int) -> h.Figures:
            with h.simulator(inventory, work, latency_ms=50, jitter_ms=20,
                             rate_limit=limit) as sim:
                job = h.run_job(inventory, work / f"out{i}", sim.url, rate=rate,
                                extra=["--max-attempts", "8"])
            stats = sim.stats
            renews = stats["requests"].get("renew", 0)
            renewed = sum(1 for d in sim.state["devices"].values() if d["renewals"] == 1)
            return {
                "settled devices/s": job.steady_rate(0.5, 0.95),
                "settled/limit": job.steady_rate(0.5, 0.95) / limit,
                "achieved requests/s": job.summary["achieved_rate"],
                "429 share of renew requests": stats["throttled"] / max(renews, 1),
                "renewed share (report)": job.status("renewed") / devices,
                "renewed once share (simulator)": renewed / devices,
            }

        results = h.repeat(runs, once)
    h.report(
        title, results,
        targets={"settled/limit": "near 1", "429 share of renew requests": "< 0.05",
                 "renewed share (report)": "1.0", "renewed once share (simulator)": "1.0"},
        command=f"fleet-renew run inventory.csv --rate {rate:g} --max-attempts 8 --api-url SIM"
                f"  (SIM: fleet-renew simulate --rate-limit {limit} --latency-ms 50"
                " --jitter-ms 20)",
        json_path=json_path,
    )


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=4000)
    parser.add_argument("--no-scaled", action="store_true", help="skip the 50/s vs 80/s scenario")


def main() -> None:
    args = h.parse_args(__doc__, _options)
    runs = 1 if args.quick else args.runs
    devices = 400 if args.quick else args.devices
    measure(devices, 150, 250.0, runs, args.json)
    if not args.no_scaled:
        measure(devices // 2, 50, 80.0, runs, args.json)


if __name__ == "__main__":
    main()
