"""The outputs stage: what a run leaves for the operator besides bundles.

report          report.csv as rows finish; report.parquet, summary.json, retry.csv at the end
html, charts    report.html, one offline page with its own SVG charts
stats           the page's percentiles and histogram bins (numpy's arithmetic, in Python)
timeline        counters sampled once a second, for report.html
metrics         metrics.prom for node_exporter's textfile reader
notify          POST the summary to --notify-url
next_inventory  inventory.next.csv: the inventory with every device's current certificate
merge           `fleet-renew merge`: the shards' folders brought together

The modules are imported by name, not re-exported here: importing `batch.outputs.report` must
not pull in report.html's pyarrow (start-up cost, docs/benchmarks.md).
"""

__all__ = [
    "charts",
    "html",
    "merge",
    "metrics",
    "next_inventory",
    "notify",
    "report",
    "stats",
    "timeline",
]
