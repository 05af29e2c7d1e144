"""An EnOS-compatible server (token service + certificate API) for tests, demos and benchmarks.

`running_simulator(config, fleet)` serves one on loopback; `fleet-renew simulate` runs one as a
process. See `batch.simulator.testing` for the test seam.
"""

from batch.simulator.config import SimulatorConfig
from batch.simulator.testing import RunningSimulator, running_simulator

__all__ = ["RunningSimulator", "SimulatorConfig", "running_simulator"]
