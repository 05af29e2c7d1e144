"""fleet-renew: renew the certificates of a fleet of EnOS devices.

The package follows the run's stages; a module imports only from its own stage or earlier ones
(tests/test_layout.py):

    model, errors, config, clock, storage, safe_read   core values and footing
    inventory/  ->  store/  ->  plan/  ->  enos/  ->  renew/  ->  outputs/
    simulator/  ->  run/  ->  cli/, testing
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
