"""A faithful NEXT or UNITE wallbox on a real pymodbus TCP server, for tests and the demo."""

from .model import Car, WallboxProfile, WallboxQuirks, WallboxSim
from .server import WallboxServer

__all__ = ["Car", "WallboxProfile", "WallboxQuirks", "WallboxServer", "WallboxSim"]
