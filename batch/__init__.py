"""fleet-renew: renew the certificates of a fleet of EnOS devices."""

__version__ = "0.1.0"
