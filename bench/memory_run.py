"""Memory of a 100,000-device run: the job's peak RSS, and whether it grows with the fleet.

Issue 6 #5 target: peak RSS of the job <= 300 MB, flat. The harness polls the job's RSS while it
runs; `RSS at 25 %` / `at 90 %` are the readings when a quarter / nine tenths of the devices had
finished, so a growth with the fleet shows as their difference. Reuse mode, rate unlimited,
latency 0, relaxed journal fsync (the memory does not depend on it; the wall time does).
"""

from __future__ import annotations

import argparse

import harness as h


def main() -> None:
    args = h.parse_args(__doc__, _options)
    devices = 5000 if args.quick else args.devices
    runs = 1 if args.quick else args.runs
    title = f"job peak RSS, {devices:,}-device run (issue 6 #5)"
    print(f"{title}  [{h.machine()}]", flush=True)
    with h.workdir("memrun") as work:
        inventory = h.write_inventory(work / "inventory.csv", devices)

        def once(i: int) -> h.Figures:
            with h.simulator(inventory, work, timeout_s=3600) as sim:
                job = h.run_job(inventory, work / f"out{i}", sim.url, rate=h.UNLIMITED,
                                extra=["--no-durable-journal"], timeout_s=3 * 3600)
            return {
                "peak RSS MB": job.usage.maxrss_mb,
                "RSS MB at 25 %": _rss_at(job, 0.25 * devices),
                "RSS MB at 90 %": _rss_at(job, 0.90 * devices),
                "renewals/s": devices / job.usage.wall_s,
                "renewed share": job.status("renewed") / devices,
            }

        results = h.repeat(runs, once)
    h.report(title, results, targets={"peak RSS MB": "<= 300", "renewed share": "1.0"},
             command=f"fleet-renew run inventory.csv --rate {h.UNLIMITED:g} --no-durable-journal"
                     " --api-url SIM  (SIM: fleet-renew simulate, latency 0, no limit)",
             json_path=args.json)


def _rss_at(job: h.JobResult, rows: float) -> float:
    return next((rss for _, n, rss in job.samples if n >= rows), float("nan"))


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=100_000)


if __name__ == "__main__":
    main()
