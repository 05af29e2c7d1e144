"""Peak RSS of a run whose Renew answers are 100 MB each (issue 12: bounded answers).

A hostile gateway (`tests.hostile`, a raw asyncio server in a thread of this process) answers
every Renew with a 100 MB chunked body of junk; the job must stop reading at its 1 MiB cap
(`batch.enos.client.MAX_ANSWER_BYTES`), so its peak RSS stays that of an idle job. 4 devices,
--max-attempts 1; before the cap, main read every answer whole: ~1,000 MiB peak.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import harness as h

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests import hostile  # the test suite's hostile server, on purpose


@contextmanager
def hostile_gateway(size: int) -> Iterator[str]:
    """Serve `hostile.huge(size)` answers from a thread; yield its URL."""
    loop = asyncio.new_event_loop()
    ready: list[str] = []
    stop = asyncio.Event()

    async def serve() -> None:
        async with hostile.hostile_server(hostile.huge(size, declared=False)) as server:
            ready.append(server.url)
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    while not ready:
        threading.Event().wait(0.05)
    try:
        yield ready[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)


def main() -> None:
    args = h.parse_args(__doc__, _options)
    runs = 1 if args.quick else args.runs
    title = f"job peak RSS, {args.devices} devices answered {args.mb} MB each (issue 12 #2)"
    print(f"{title}  [{h.machine()}]", flush=True)
    with h.workdir("hostile") as work:
        inventory = h.write_inventory(work / "inventory.csv", args.devices)

        def once(i: int) -> h.Figures:
            with hostile_gateway(args.mb << 20) as url:
                job = h.run_job(inventory, work / f"out{i}", url, rate=h.UNLIMITED,
                                extra=["--max-attempts", "1"], timeout_s=600)
            return {
                "peak RSS MB": job.usage.maxrss_mb,
                "wall s": job.usage.wall_s,
                "journal MB": (job.out / "journal.sqlite").stat().st_size / 1e6,
                "failed share": job.status("failed") / args.devices,
            }

        results = h.repeat(runs, once)
    h.report(title, results, targets={"failed share": "1.0"},
             command=f"fleet-renew run inventory.csv --max-attempts 1 --api-url HOSTILE"
                     f"  (HOSTILE: {args.mb} MB chunked Renew answers)",
             json_path=args.json)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--mb", type=int, default=100)


if __name__ == "__main__":
    main()
