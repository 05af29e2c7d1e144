"""Print the figures that benchmark scripts appended with `--json FILE` as Markdown tables.

One table per measurement (median / min / max of its runs, the target and whether it was met),
in the order they were taken, headed by the command and the 1-minute load when it ended:
what docs/benchmarks.md shows under "Detailed results".

    python bench/markdown.py bench-results.jsonl
"""

from __future__ import annotations

import argparse
import json
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from harness import fmt

_COMPARISONS: Mapping[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
_TARGET = re.compile(r"\s*(<=|>=|<|>)?\s*([0-9.]+)")


def met(target: str, value: float) -> str:
    """"met", "**missed**", or "" when the target is not a comparison with a number."""
    found = _TARGET.fullmatch(target)
    if found is None:
        return ""
    compare = _COMPARISONS.get(found.group(1) or "", None)
    limit = float(found.group(2))
    ok = compare(value, limit) if compare is not None else abs(value - limit) < 1e-9
    return "met" if ok else "**missed**"


def tables(lines: Iterator[str]) -> Iterator[str]:
    for line in lines:
        if not line.strip():
            continue
        record: dict[str, Any] = json.loads(line)
        yield (f"**{record['title']}** (code {record.get('code', '?')}; 1-min load when it "
               f"ended: {record.get('loadavg', float('nan')):.2f}) — `{record['command']}`")
        yield ""
        yield "| figure | median | min | max | target | met |"
        yield "|---|---:|---:|---:|---|---|"
        targets = record.get("targets", {})
        for name, values in record["figures"].items():
            target = targets.get(name, "")
            verdict = met(target, values["median"]) if target else ""
            yield (f"| {name} | {fmt(values['median'])} | {fmt(values['min'])} "
                   f"| {fmt(values['max'])} | {target} | {verdict} |")
        if record.get("notes"):
            yield ""
            yield record["notes"]
        yield ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="the JSON lines file given to --json")
    args = parser.parse_args()
    with args.results.open() as fh:
        for row in tables(fh):
            print(row)


if __name__ == "__main__":
    main()
