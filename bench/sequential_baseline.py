"""Side by side: a plain sequential loop, as users would write it, against the job.

Issue 6 #7: 500 devices, simulator latency 50 ms. The loop is what the API page's sample does,
once per device: one signed Renew request at a time (aiohttp + batch.enos.sign), no key
generation, no verification, no journal, no files. The job runs with --rate 250 (issue 6's
working point) and does all of those. Both talk to the same kind of simulator process.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import time
from pathlib import Path

import aiohttp
import harness as h

from batch.enos.signing import sign, token_encryption

TOKEN_PATH = "/apim-token-service/v2.0/token/get"
RENEW_PATH = "/connect-service/v2.0/certificates"


async def sequential_loop(url: str, inventory: Path) -> int:
    """Renew every device of `inventory`, one request at a time; returns how many succeeded."""
    async with aiohttp.ClientSession() as session:
        now_ms = int(time.time() * 1000)
        payload = {"appKey": h.APP_KEY, "timestamp": now_ms,
                   "encryption": token_encryption(h.APP_KEY, now_ms, h.APP_SECRET)}
        async with session.post(url + TOKEN_PATH, json=payload) as response:
            token = (await response.json())["data"]["accessToken"]
        renewed = 0
        with inventory.open(newline="") as fh:
            for row in csv.DictReader(fh):
                params = {"action": "renew", "orgId": row["orgId"], "productKey":
                          row["productKey"], "deviceKey": row["deviceKey"],
                          "certSn": row["certSn"]}
                body = b"{}"
                now_ms = int(time.time() * 1000)
                headers = {"apim-accesstoken": token, "apim-timestamp": str(now_ms),
                           "apim-signature": sign(token, params, body, now_ms, h.APP_SECRET),
                           "Content-Type": "application/json;charset=UTF-8"}
                async with session.post(url + RENEW_PATH, params=params, data=body,
                                        headers=headers) as response:
                    answer = json.loads(await response.read())
                renewed += answer.get("code") == 0
        return renewed


def main() -> None:
    args = h.parse_args(__doc__, _options)
    devices = 60 if args.quick else args.devices
    runs = 1 if args.quick else args.runs
    title = f"sequential loop vs the job, {devices} devices at 50 ms (issue 6 #7)"
    print(f"{title}  [{h.machine()}]", flush=True)
    with h.workdir("sequential") as work:
        inventory = h.write_inventory(work / "inventory.csv", devices)

        def once(i: int) -> h.Figures:
            with h.simulator(inventory, work, latency_ms=50) as sim:
                started = time.monotonic()
                renewed = asyncio.run(sequential_loop(sim.url, inventory))
                loop_s = time.monotonic() - started
            if renewed != devices:
                raise RuntimeError(f"the loop renewed {renewed} of {devices}")
            with h.simulator(inventory, work, latency_ms=50) as sim:
                job = h.run_job(inventory, work / f"out{i}", sim.url, rate=250.0)
            return {"loop wall s": loop_s, "job wall s": job.usage.wall_s,
                    "loop/job": loop_s / job.usage.wall_s,
                    "job renewed share": job.status("renewed") / devices}

        results = h.repeat(runs, once)
    h.report(title, results, targets={"job renewed share": "1.0"},
             command="loop: bench/sequential_baseline.py; job: fleet-renew run inventory.csv"
                     " --rate 250 --api-url SIM  (SIM: fleet-renew simulate --latency-ms 50)",
             json_path=args.json,
             notes="job wall includes process start-up (imports), the loop's does not")


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=500)


if __name__ == "__main__":
    main()
