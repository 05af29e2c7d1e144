"""The bare-script peer of issue 13: what a competent engineer would write instead of the job.

aiohttp, one token, one signed Renew per device (the EnOS signing rules of
`batch.enos.signing`), a semaphore bounding the requests in flight, and per device cert.pem and
ca.pem written into out/<productKey>__<deviceKey>/. No journal, no verification, no report, no
retries: an answer that is not `code 0` is counted and dropped.

Run as its own process (`python bench/bare_peer.py INVENTORY OUT URL`) so that its CPU and wall
come from os.wait4 exactly like the job's; its start-up (imports, reading the CSV) is included.
Prints one JSON line: {"renewed": n, "failed": m}.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
import time
from pathlib import Path

import aiohttp

from batch.enos.signing import sign, token_encryption

TOKEN_PATH = "/apim-token-service/v2.0/token/get"
RENEW_PATH = "/connect-service/v2.0/certificates"
IN_FLIGHT = 64  # the job's default --concurrency at an unlimited rate is its maximum, 128


async def renew_all(
    inventory: Path, out: Path, url: str, app_key: str, secret: str
) -> dict[str, int]:
    counts = {"renewed": 0, "failed": 0}
    limit = asyncio.Semaphore(IN_FLIGHT)
    connector = aiohttp.TCPConnector(limit=IN_FLIGHT)
    async with aiohttp.ClientSession(connector=connector) as session:
        now_ms = int(time.time() * 1000)
        payload = {"appKey": app_key, "timestamp": now_ms,
                   "encryption": token_encryption(app_key, now_ms, secret)}
        async with session.post(url + TOKEN_PATH, json=payload) as response:
            token = (await response.json())["data"]["accessToken"]

        async def renew(row: dict[str, str]) -> None:
            async with limit:
                params = {"action": "renew", "orgId": row["orgId"],
                          "productKey": row["productKey"], "deviceKey": row["deviceKey"],
                          "certSn": row["certSn"]}
                body = json.dumps({"certSn": int(row["certSn"])}).encode()
                stamp = int(time.time() * 1000)
                headers = {"apim-accesstoken": token, "apim-timestamp": str(stamp),
                           "apim-signature": sign(token, params, body, stamp, secret),
                           "Content-Type": "application/json;charset=UTF-8"}
                async with session.post(url + RENEW_PATH, params=params, data=body,
                                        headers=headers) as response:
                    answer = json.loads(await response.read())
                if answer.get("code") != 0:
                    counts["failed"] += 1
                    return
                folder = out / f"{row['productKey']}__{row['deviceKey']}"
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "cert.pem").write_text(answer["data"]["cert"])
                (folder / "ca.pem").write_text(answer["data"]["caCert"])
                counts["renewed"] += 1

        with inventory.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        await asyncio.gather(*(renew(row) for row in rows))
    return counts


def main() -> None:
    inventory, out, url = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    counts = asyncio.run(renew_all(inventory, out, url, os.environ["ENOS_APP_KEY"],
                                   os.environ["ENOS_APP_SECRET"]))
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main()
