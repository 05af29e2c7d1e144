"""Memory of `fleet-renew plan` on a 1,000,000-row inventory, CSV and Parquet.

Issue 6 #5 target: peak RSS <= 250 MB (the plan process's ru_maxrss from os.wait4).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import harness as h


def main() -> None:
    args = h.parse_args(__doc__, _options)
    rows = 20_000 if args.quick else args.rows
    runs = 1 if args.quick else args.runs
    for suffix in ("csv", "parquet"):
        title = f"plan peak RSS, {rows:,}-row {suffix.upper()} (issue 6 #5)"
        print(f"{title}  [{h.machine()}]", flush=True)
        with h.workdir("plan") as work:
            inventory = h.write_inventory(work / f"inventory.{suffix}", rows)
            size_mb = inventory.stat().st_size / 2**20

            def once(i: int, inventory: Path = inventory, work: Path = work) -> h.Figures:
                usage = h.run_command([*h.CMD, "plan", str(inventory), "--rate", "250"],
                                      work / f"plan{i}.log")
                return {"peak RSS MB": usage.maxrss_mb, "wall s": usage.wall_s,
                        "CPU s": usage.cpu_s}

            results = h.repeat(runs, once)
        h.report(title, results, targets={"peak RSS MB": "<= 250"},
                 command=f"fleet-renew plan inventory.{suffix} --rate 250"
                         f"  ({size_mb:.0f} MB file)",
                 json_path=args.json)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=1_000_000)


if __name__ == "__main__":
    main()
