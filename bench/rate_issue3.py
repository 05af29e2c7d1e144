"""Issue 3's figure: 2,000 devices at --rate 200, simulator latency 50 ms, limit above the rate.

Prints achieved rate / configured rate (median of 3 runs, min, max). The measurement is the one
of `rate_fidelity.py`, with issue 3's numbers.
"""

from __future__ import annotations

import argparse

import harness as h
from rate_fidelity import measure


def main() -> None:
    args = h.parse_args(__doc__, _options)
    devices = 400 if args.quick else 2000
    measure(devices, 200.0, 50.0, 0.0, 1 if args.quick else args.runs, args.json,
            "rate at 200/s, 2,000 devices (issue 3)", args.concurrency)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--concurrency", type=int, help="[default: the job's own default]")


if __name__ == "__main__":
    main()
