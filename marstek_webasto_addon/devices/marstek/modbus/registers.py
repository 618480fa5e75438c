"""The Venus's Modbus vocabulary: generations, register types, and the control registers, declared once.

Facts, sources and confidence: docs/marstek-modbus.md (sections in brackets below). Holding registers
only, read with FC 3 and written with FC 6; the PDU address is the register number itself (§0.2);
32-bit values are high word first (§0.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

from ..firmware import Family


class Generation(StrEnum):
    """The two register maps (§0.1): a match of numbers between them is coincidence, not a shared map."""

    V12 = "v12"  # Venus E v1/v2 and Venus C (HMG-50 control line): the Duravolt map, RS485 port only
    V3 = "v3"  # Venus E v3, A and D (VNS/EMS base): RS485, or the LAN port from EMS firmware 144 on

    @classmethod
    def for_family(cls, family: Family) -> Generation:
        return cls.V12 if family is Family.VENUS_E2 else cls.V3

    @property
    def default_family(self) -> Family:
        """Whose limits apply while the device name (31000) is not one `identify()` knows."""
        return Family.VENUS_E2 if self is Generation.V12 else Family.VENUS_E3


class RegType(StrEnum):
    U16 = "u16"
    I16 = "i16"
    U32 = "u32"  # high word first
    I32 = "i32"  # high word first
    ASCII = "ascii"  # two characters per register, high byte first, NUL padded
    IPV4 = "ipv4"  # two registers, one octet per byte, high byte first


_WIDTH = {RegType.U16: 1, RegType.I16: 1, RegType.U32: 2, RegType.I32: 2, RegType.IPV4: 2}


class Function(IntEnum):
    READ_HOLDING = 3
    WRITE_SINGLE = 6


@dataclass(frozen=True)
class Register:
    """Where a value lives and how to read it: engineering value = raw number x `scale`.

    A negative `scale` turns the device's sign into the add-on's (battery and AC power + = discharging).
    """

    address: int
    type: RegType = RegType.U16
    scale: float = 1.0
    length: int = 0  # ASCII only: registers of text; numbers take their type's width
    labels: tuple[str, ...] = ()  # an enumeration: raw value n means labels[n]
    function: Function = Function.READ_HOLDING  # the Venus has no input registers, coils or inputs

    def __post_init__(self) -> None:
        if (self.type is RegType.ASCII) != (self.length > 0):
            raise ValueError(f"register {self.address}: a length is for ASCII text, and ASCII needs one")

    @property
    def count(self) -> int:
        return self.length if self.type is RegType.ASCII else _WIDTH[self.type]

    @property
    def end(self) -> int:
        """One past the last register."""
        return self.address + self.count


def reg(
    address: int,
    type: RegType = RegType.U16,
    scale: float = 1.0,
    *,
    length: int = 0,
    labels: tuple[str, ...] = (),
) -> Register:
    """Short form for the tables: `reg(32202, I32)`."""
    return Register(address, type, scale, length, labels)


@dataclass(frozen=True)
class PerGeneration:
    """A data point's register in each map; None where that generation does not offer it."""

    v12: Register | None = None
    v3: Register | None = None

    def get(self, generation: Generation) -> Register | None:
        return self.v12 if generation is Generation.V12 else self.v3


NONE = PerGeneration()


# Control ---------------------------------------------------------------------------------------------


class Rs485(IntEnum):
    """42000's magic values (§3.1); v3 refuses plain 0/1 with exception 3."""

    ON = 0x55AA  # 21930: external control; 43000 then reads 1
    OFF = 0x55BB  # 21947: back to the stored work mode


class ForceMode(IntEnum):
    STOP = 0
    CHARGE = 1  # at 42020 W
    DISCHARGE = 2  # at 42021 W


class WorkMode(IntEnum):
    """43000 (EEPROM); writing it ends RS485 control, as both share one firmware byte (§3.2)."""

    MANUAL = 0
    SELF_CONSUMPTION = 1
    AI = 2


BOTH = frozenset(Generation)
V12_ONLY = frozenset({Generation.V12})
MAX_SETPOINT_W = 2500  # the registers' range; the model's own limit (A: 1500) is the client's to apply


@dataclass(frozen=True)
class ControlRegister:
    """A register the add-on writes: its accepted range in engineering units, and where it is stored."""

    key: str
    name: str
    register: Register
    low: float
    high: float
    generations: frozenset[Generation] = BOTH
    eeprom: bool = False  # stored in EEPROM without wear levelling: write only on change (§4.5)
    allowed: tuple[int, ...] = ()  # raw values accepted, when the range is not contiguous

    def accepts(self, value: float) -> bool:
        if self.allowed:
            return value in self.allowed
        return self.low <= value <= self.high


# Write order while taking control (§3.2): work mode (if at all), then 42000 on, then the powers, then 42010.
# fmt: off
CONTROL_REGISTERS: tuple[ControlRegister, ...] = (
    ControlRegister("rs485_control", "RS485 control mode", reg(42000), Rs485.ON, Rs485.OFF, allowed=(Rs485.ON, Rs485.OFF)),
    ControlRegister("force_mode", "Force charge/discharge", reg(42010), ForceMode.STOP, ForceMode.DISCHARGE),
    # Its interplay with 42010 is unverified (§3.3): read for diagnostics, never written by the add-on.
    ControlRegister("charge_to_soc", "Charge-to-SOC target", reg(42011), 13, 100),
    ControlRegister("force_charge_power", "Forced charge power", reg(42020), 0, MAX_SETPOINT_W),
    ControlRegister("force_discharge_power", "Forced discharge power", reg(42021), 0, MAX_SETPOINT_W),
    ControlRegister("work_mode", "User work mode", reg(43000), WorkMode.MANUAL, WorkMode.AI, eeprom=True),
    ControlRegister("charge_cutoff_soc", "Charging cut-off", reg(44000, scale=0.1), 80, 100, V12_ONLY, eeprom=True),
    ControlRegister("discharge_cutoff_soc", "Discharging cut-off", reg(44001, scale=0.1), 12, 30, V12_ONLY, eeprom=True),
    ControlRegister("max_charge_power", "Max charge power", reg(44002), 0, MAX_SETPOINT_W, eeprom=True),
    ControlRegister("max_discharge_power", "Max discharge power", reg(44003), 0, MAX_SETPOINT_W, eeprom=True),
)
# fmt: on

CONTROL_BY_KEY: dict[str, ControlRegister] = {c.key: c for c in CONTROL_REGISTERS}


def control_registers(generation: Generation) -> tuple[ControlRegister, ...]:
    return tuple(c for c in CONTROL_REGISTERS if generation in c.generations)


@dataclass(frozen=True)
class GenerationRules:
    """How fast and how much one may ask (§6)."""

    request_gap_s: float  # between a reply and the next request
    max_registers_per_read: int = 32  # a larger read gets no reply at all on a Venus D


RULES: dict[Generation, GenerationRules] = {
    Generation.V12: GenerationRules(request_gap_s=0.05),  # RS485 works at 30-50 ms
    Generation.V3: GenerationRules(request_gap_s=0.15),  # writes failed at 50 ms, 100 ms had timeouts
}
