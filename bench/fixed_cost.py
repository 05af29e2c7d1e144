"""A run's fixed cost (issue 13 #4): start-up plus end-of-run reports, 1,000 devices at --rate 200.

Fixed cost = the job process's wall time (os.wait4, from its start to its exit) minus
`request_span_s` of its summary.json (first request's start to the last one's): what the run
spends besides holding its rate, i.e. interpreter start and imports, opening the journal and
the inventory checks before the first request, and after the last one its answer, os.sync,
report.parquet, retry.csv, summary.json, report.html, metrics.prom and the next inventory.
Target: <= 1.0 s. Simulator latency 0, limit above the rate; each run has its own simulator.
"""

from __future__ import annotations

import argparse

import harness as h


def main() -> None:
    args = h.parse_args(__doc__, _options)
    devices, rate = (200 if args.quick else args.devices), 200.0
    runs = 1 if args.quick else args.runs
    title = f"fixed cost of a run, {devices} devices at --rate {rate:g} (issue 13 #4)"
    print(f"{title}  [{h.machine()}]", flush=True)
    with h.workdir("fixed") as work:
        inventory = h.write_inventory(work / "inventory.csv", devices)

        def once(i: int) -> h.Figures:
            with h.simulator(inventory, work, rate_limit=int(rate * 2)) as sim:
                job = h.run_job(inventory, work / f"out{i}", sim.url, rate=rate)
            span = float(job.summary["request_span_s"])
            return {"fixed s (wall - request span)": job.usage.wall_s - span,
                    "job wall s": job.usage.wall_s, "request span s": span,
                    "job CPU s": job.usage.cpu_s,
                    "renewed share": job.status("renewed") / devices}

        results = h.repeat(runs, once)
    h.report(title, results,
             targets={"fixed s (wall - request span)": "<= 1.0", "renewed share": "1.0"},
             command=f"fleet-renew run inventory.csv --rate {rate:g} --api-url SIM"
                     "  (SIM: fleet-renew simulate --latency-ms 0 --rate-limit 400)",
             json_path=args.json)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=1000)


if __name__ == "__main__":
    main()
