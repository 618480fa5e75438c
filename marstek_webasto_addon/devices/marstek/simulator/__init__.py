"""A faithful Venus battery on real UDP (and Modbus TCP), for tests, the demo and the optimiser replay."""

from .device import Quirks, SimulatedBattery
from .modbus_server import ModbusQuirks, VenusModbusServer
from .physics import BatteryPhysics, Household, SimClock, Site
from .profiles import PROFILES, FirmwareProfile
from .server import MarstekSimulator

__all__ = [
    "PROFILES",
    "BatteryPhysics",
    "FirmwareProfile",
    "Household",
    "MarstekSimulator",
    "ModbusQuirks",
    "Quirks",
    "SimClock",
    "SimulatedBattery",
    "Site",
    "VenusModbusServer",
]
