"""Run the EnOS simulator on loopback for tests: `async with running_simulator(config) as sim`.

    from batch.simulator.config import SimulatorConfig
    from batch.simulator.testing import running_simulator

    async with running_simulator(SimulatorConfig(app_key="k", app_secret="s"), "fleet.csv") as sim:
        ...  # point the client at sim.url; inspect sim.device("asset-1"), sim.state_dict()

The server listens on a free port of 127.0.0.1 and speaks real HTTP: the client under test
gets no shortcut. `fleet` is an inventory file (CSV or Parquet) or an iterable of row mappings
with the inventory's column names (`assetId`, `productKey`, `deviceKey`, `certSn`, ...).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from batch.simulator.config import SimulatorConfig
from batch.simulator.fleet import Fleet, FleetSource, SimDevice
from batch.simulator.server import make_app
from batch.simulator.state import Simulator, Stats

SHUTDOWN_TIMEOUT = 1.0  # seconds granted to in-flight requests (e.g. injected latency) at exit


@dataclass(frozen=True, slots=True)
class RunningSimulator:
    """A simulator serving at `url`, with its state open for inspection and arrangement."""

    url: str  # http://127.0.0.1:PORT, no trailing slash
    simulator: Simulator

    @property
    def config(self) -> SimulatorConfig:
        return self.simulator.config

    @property
    def fleet(self) -> Fleet:
        """Every device and certificate; `fleet.add_device(...)` registers more."""
        return self.simulator.fleet

    @property
    def stats(self) -> Stats:
        return self.simulator.stats

    def device(self, identity: str, org_id: str | None = None) -> SimDevice:
        """A device by assetId or `productKey/deviceKey` (default org unless given)."""
        return self.simulator.device(identity, org_id)

    def expire_token(self) -> None:
        """Make the current access token expire now (the next business call gets 1203)."""
        self.simulator.tokens.expire_now()

    def state_dict(self) -> dict[str, Any]:
        """The JSON-ready snapshot `simulate --state-out` writes."""
        return self.simulator.state_dict()


@asynccontextmanager
async def running_simulator(
    config: SimulatorConfig,
    fleet: FleetSource = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[RunningSimulator]:
    """Serve a simulator for the duration of the block (port 0: a free port is chosen)."""
    # Making the CAs and seeding a large fleet is CPU work: keep the event loop responsive.
    simulator = await asyncio.to_thread(Simulator, config, fleet, clock=clock)
    runner = web.AppRunner(
        make_app(simulator),
        handle_signals=False,
        access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = runner.addresses[0][1]
        yield RunningSimulator(f"http://{_url_host(host)}:{bound_port}", simulator)
    finally:
        await runner.cleanup()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
