"""A faithful Venus battery on real UDP, for tests, the demo and the optimiser replay."""

from .device import Quirks, SimulatedBattery
from .physics import BatteryPhysics, Household, SimClock, Site
from .profiles import PROFILES, FirmwareProfile
from .server import MarstekSimulator

__all__ = [
    "PROFILES",
    "BatteryPhysics",
    "FirmwareProfile",
    "Household",
    "MarstekSimulator",
    "Quirks",
    "SimClock",
    "SimulatedBattery",
    "Site",
]
