"""What reading the whole inventory before sending anything costs on 1,000,000 rows (issue 12 #3).

`fleet-renew run` now calls `inventory.read.check_readable` before any request: the file is read
once through the same reader (CSV records / Parquet batches) without making rows, so damage at
row 50,000 stops the run with nothing sent. This prints that pass's wall time and CPU, next to
what the run already spent on the file before it (SHA-256 and row count) and what the run's own
row reading costs, for a CSV and a Parquet inventory of the same 1M devices. In process, warm
page cache (the files were just written), median of --runs.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from pathlib import Path

import harness as h

from batch.inventory import read as inventory


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall s, CPU s) of one call."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    fn()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def figures(path: Path) -> h.Figures:
    check_wall, check_cpu = timed(lambda: inventory.check_readable(path))
    before_wall, _ = timed(
        lambda: (inventory.inventory_fingerprint(path), inventory.count_rows(path))
    )
    rows_wall, _ = timed(lambda: sum(1 for _ in inventory.read_inventory(path)))
    return {
        "check s (new)": check_wall,
        "check CPU s": check_cpu,
        "sha256 + count s (before)": before_wall,
        "row reading s (the run's own)": rows_wall,
        "check / row reading": check_wall / rows_wall,
    }


def main() -> None:
    args = h.parse_args(__doc__, lambda p: p.add_argument("--rows", type=int, default=1_000_000))
    rows = 20_000 if args.quick else args.rows
    runs = 1 if args.quick else args.runs
    with h.workdir("invcheck") as work:
        for suffix in (".csv", ".parquet"):
            path = h.write_inventory(work / f"inventory{suffix}", rows)
            title = f"whole-inventory check before sending, {rows:,}-row {suffix[1:]}"
            print(f"{title}  [{h.machine()}]", flush=True)
            results = h.repeat(runs, lambda _i, p=path: figures(p))
            h.report(title, results, command="inventory.check_readable(path)", json_path=args.json)


if __name__ == "__main__":
    main()
