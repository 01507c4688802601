"""The simulated VPSie API: the account's state (`state.py`) and its HTTP face (`api.py`)."""

from simulator.vpsie.api import make_vpsie_app
from simulator.vpsie.state import (
    NodeRegistry,
    SimAuth,
    SimCluster,
    SimDatacenter,
    SimPrice,
    SimSize,
    VpsieError,
    VpsieState,
)

__all__ = [
    "NodeRegistry",
    "SimAuth",
    "SimCluster",
    "SimDatacenter",
    "SimPrice",
    "SimSize",
    "VpsieError",
    "VpsieState",
    "make_vpsie_app",
]
