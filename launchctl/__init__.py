"""launchctl: a local-first job launcher for machine-learning work."""

__version__ = "0.1.0"
