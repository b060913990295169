"""A stand-in W&B server for launchctl's sync tests and benchmarks (not W&B's server)."""

from tests.sync.standin.server import Recorded, WandbStandIn

__all__ = ["Recorded", "WandbStandIn"]
