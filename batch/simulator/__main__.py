"""`python -m batch.simulator`: the `simulate` command on its own."""

from batch.simulator.command import simulate

simulate()
