"""Throughput ceiling: renewals per second with the rate unlimited, 20,000 devices, ECC.

Issue 6 #4: report the rate on this 2-core machine, client and simulator together, and how the
CPU splits between them (each process's user + system seconds from os.wait4).
"""

from __future__ import annotations

import argparse

import harness as h


def main() -> None:
    args = h.parse_args(__doc__, _options)
    devices = 1000 if args.quick else args.devices
    runs = 1 if args.quick else args.runs
    title = "throughput ceiling, ec256, rate unlimited (issue 6 #4)"
    print(f"{title}: {devices} devices, latency 0  [{h.machine()}]", flush=True)
    with h.workdir("ceiling") as work:
        inventory = h.write_inventory(work / "inventory.csv", devices)

        def once(i: int) -> h.Figures:
            with h.simulator(inventory, work) as sim:
                sim_cpu_before = sim.cpu_now()  # seeding the fleet is not serving it
                job = h.run_job(inventory, work / f"out{i}", sim.url, rate=h.UNLIMITED,
                                key_mode="ec256")
            assert sim.usage is not None
            job_cpu, sim_cpu = job.usage.cpu_s, sim.usage.cpu_s - sim_cpu_before
            return {
                "renewals/s (whole run)": devices / job.usage.wall_s,
                "renewals/s (steady 10-90 %)": job.steady_rate(),
                "job CPU s": job_cpu,
                "simulator CPU s": sim_cpu,
                "job share of CPU": job_cpu / (job_cpu + sim_cpu),
                "job cores busy": job_cpu / job.usage.wall_s,
                "simulator cores busy": sim_cpu / job.usage.wall_s,
                "renewed share": job.status("renewed") / devices,
            }

        results = h.repeat(runs, once)
    h.report(title, results, targets={"renewed share": "1.0"},
             command=f"fleet-renew run inventory.csv --key-mode ec256 --rate {h.UNLIMITED:g}"
                     " --api-url SIM  (SIM: fleet-renew simulate, latency 0, no limit)",
             json_path=args.json)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=20_000)


if __name__ == "__main__":
    main()
