"""`make demo`: renew the sample inventory against the built-in simulator and show the results.

The sample is built to show every kind of ending: renewals, a transient 99500 recovered by a
retry (`sandbox=flaky`), a device EnOS does not know (`sandbox=absent` -> device_not_found), a
certificate that belongs to another device (cert_bound_to_other_device), invalid rows and a
duplicate. The job therefore exits 1 (some devices failed); the demo exits 0 when exactly those
endings appeared, and 1 otherwise.
"""

from __future__ import annotations

import asyncio
import csv
import logging
import shutil
import sys
from pathlib import Path

from batch.config import run_config
from batch.model import KeyMode
from batch.outputs.report import render_summary
from batch.run.job import run

SAMPLE = Path("sample_inventory.csv")
OUT = Path("demo-out")

EXPECTED_CLASSES = {"device_not_found", "cert_bound_to_other_device", "invalid_input", "duplicate"}


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    shutil.rmtree(OUT, ignore_errors=True)  # a fresh campaign each time, not a resume
    config = run_config(
        inventory=SAMPLE,
        out_dir=OUT,
        sandbox=True,
        rate=20,
        key_mode=KeyMode.EC256,
        progress="log",
    )
    summary = asyncio.run(run(config))
    print(render_summary(summary))
    problems = _check(OUT / "report.csv", summary.exit_code)
    print(f"\nreport:   {OUT / 'report.csv'} (also report.parquet, summary.json, retry.csv)")
    print(f"page:     {OUT / 'report.html'} (open it in a browser; metrics in metrics.prom)")
    print(f"bundles:  {OUT / 'bundles'}/<orgId>/<device>/ cert.pem ca.pem fullchain.pem key.pem")
    example = next(iter(sorted((OUT / "bundles").glob("*/*/cert.pem"))), None)
    if example is not None:
        print(f"check one: openssl verify -CAfile {example.parent / 'ca.pem'} {example}")
    for problem in problems:
        print(f"demo did not go as designed: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _check(report_csv: Path, exit_code: int) -> list[str]:
    with report_csv.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    classes = {r["errorClass"] for r in rows if r["errorClass"]}
    problems = [f"no {c} row in the report" for c in sorted(EXPECTED_CLASSES - classes)]
    renewed = [r for r in rows if r["status"] == "renewed"]
    if not renewed:
        problems.append("nothing was renewed")
    if not any(int(r["attempts"] or 0) > 1 for r in renewed):
        problems.append("no transient failure was recovered by a retry")
    if exit_code != 1:
        problems.append(f"the job exited {exit_code}, expected 1 (some devices failed)")
    return problems


if __name__ == "__main__":
    sys.exit(main())
