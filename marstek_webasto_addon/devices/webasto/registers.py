"""Every Webasto/Ampure register, declared once per model.

The two products have different maps (reference `webasto.md` section 0): the NEXT (TQ controller) and the
UNITE (a Vestel EVC04). Decoding, encoding, the read plan, the simulator and discovery are generated from
these tables; adding a register is one line.

Every numeric register that can be read declares its plausible range (`plausible`); the client keeps
readings outside it out of the snapshot (see `devices/plausibility.py`). The bounds are the limits of AC
charging itself, so they hold for every box: IEC 61851 AC charging stops at 80 A (single-phase; 63 A on
three phases), the grid at 230 V +10 %. Once a box has told its own maximum current, its power readings
are bounded by what that current can draw (`power_ranges`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from ..plausibility import ANY, Range, counter


class WallboxModel(StrEnum):
    NEXT = "next"
    UNITE = "unite"


class RegType(StrEnum):
    U16 = "u16"
    U32 = "u32"  # high word first
    STR_ASCII = "str_ascii"  # 2 characters per register (NEXT RFID)
    STR_UTF16 = "str_utf16"  # 1 character per register, UTF-16BE, NUL padded (UNITE)
    HHMMSS = "hhmmss"  # u32 whose decimal digits are hhmmss
    YYMMDD = "yymmdd"  # u32 whose decimal digits are yymmdd


class Access(StrEnum):
    READ = "r"
    WRITE = "w"  # write-only: reads fail on the device
    READ_WRITE = "rw"


class Cadence(StrEnum):
    """How often a register is read."""

    STATIC = "static"  # at connect and reconnect
    FAST = "fast"  # every poll
    SLOW = "slow"  # every few polls (settings, session metadata)
    NEVER = "never"  # write-only or only read on demand


class FC(IntEnum):
    READ_HOLDING = 3
    READ_INPUT = 4
    WRITE_SINGLE = 6
    WRITE_MULTIPLE = 16


@dataclass(frozen=True)
class Register:
    key: str
    name: str
    address: int
    count: int
    type: RegType
    access: Access
    read_fc: FC | None
    write_fc: FC | None = None
    cadence: Cadence = Cadence.FAST
    scale: float = 1.0
    unit: str | None = None
    enum: dict[int, str] = field(default_factory=dict)
    device_class: str | None = None
    state_class: str | None = None
    entity_category: str | None = None
    icon: str | None = None
    min_firmware: tuple[int, ...] | None = None  # UNITE: reading it on older firmware can reset the socket
    enabled_by_default: bool = True
    plausible: Range | None = None  # numbers only: enums, text and times are checked by their decoding

    @property
    def end(self) -> int:
        """One past the last register."""
        return self.address + self.count

    @property
    def readable(self) -> bool:
        return self.access is not Access.WRITE and self.read_fc is not None


# Enumerations (reference section 2.3).
CABLE_STATE = {0: "no_cable", 1: "cable_only", 2: "vehicle_connected", 3: "vehicle_locked"}
CHARGING_STATE = {0: "idle", 1: "charging"}
NEXT_CHARGE_POINT_STATE = {
    0: "no_vehicle",
    1: "preparing",
    3: "charging",
    4: "paused",
    7: "error",
    8: "reserved",
}
NEXT_EVSE_STATE = {0: "starting", 1: "running", 2: "error"}
UNITE_CHARGE_POINT_STATE = {
    0: "available",
    1: "preparing",
    2: "charging",
    3: "suspended_evse",
    4: "suspended_ev",
    5: "finishing",
    6: "reserved",
    7: "unavailable",
    8: "faulted",
}
UNITE_EQUIPMENT_STATE = {0: "initializing", 1: "running", 2: "fault", 3: "disabled", 4: "updating"}
PHASES = {0: "1", 1: "3"}
NEXT_ERRORS = {
    0: "no error",
    1: "PB02/PB61 relay fault",
    2: "PB07 internal supply voltage",
    3: "PB09 control pilot fault",
    4: "PB17 grid overvoltage",
    5: "PB18 grid undervoltage",
    6: "PB23 vehicle overcurrent",
    7: "PB24 mains frequency out of range",
    8: "PB27 PE missing or resistance too high",
    9: "PB28 residual-current monitor self-test",
    10: "PB29 over-temperature",
    11: "PB52 proximity pilot fault",
    12: "PB53 shutter fault",
    13: "PB57 three-phase check",
    14: "PB59 power board internal error",
    15: "PB60 negative CP voltage out of range",
    16: "PB62 DC residual current",
}

R, W, RW = Access.READ, Access.WRITE, Access.READ_WRITE
U16, U32, ASCII, UTF16 = RegType.U16, RegType.U32, RegType.STR_ASCII, RegType.STR_UTF16
HOLD, INPUT, SINGLE, MULTI = FC.READ_HOLDING, FC.READ_INPUT, FC.WRITE_SINGLE, FC.WRITE_MULTIPLE
STATIC, FAST, SLOW, NEVER = Cadence.STATIC, Cadence.FAST, Cadence.SLOW, Cadence.NEVER
DIAG, CONFIG = "diagnostic", "config"
MEAS, TOTAL_INC = "measurement", "total_increasing"

MAX_AMPS = 80.0
MAX_POWER_W = 3 * 230 * MAX_AMPS  # 55.2 kW: three phases at the largest AC charging current
VOLTS_MAX = 253  # the grid's upper tolerance (230 V + 10 %)
AMPS = Range(0, MAX_AMPS)
WATTS = Range(0, MAX_POWER_W)
PHASE_WATTS = Range(0, VOLTS_MAX * MAX_AMPS)  # one phase at the grid's upper tolerance
VOLTS = Range(0, 300)  # 0 on an absent phase
METER = counter(MAX_POWER_W / 1000)
SESSION_KWH = Range(0, 1000)  # five times the largest car battery (~200 kWh)
SESSION_S = Range(0, 366 * 86400)  # a car may stay plugged in for a long time, not for years
# 0 = unset (the box then behaves as 20 s). Every u16 is a setting the box's web page can hold: a long one
# must reach the link, which sets it right (`WebastoClient.failsafe_correction`), not be dropped unseen.
FAILSAFE_S = Range(0, 0xFFFF)
RATED_W = Range(0, MAX_POWER_W)
FLAG = Range(0, 1)


def power_ranges(max_current_a: float) -> dict[str, Range]:
    """The power readings' ranges for a box that draws at most `max_current_a` per phase (its own maximum):
    three phases at the grid's upper tolerance. A 16 A box reading 40 kW is a glitch, not PV surplus."""
    phase = Range(0, VOLTS_MAX * max_current_a)
    return {"power": Range(0, 3 * VOLTS_MAX * max_current_a), **{f"power_l{i}": phase for i in (1, 2, 3)}}


def _phases(
    reg_type: RegType, fc: FC, key: str, name: str, first: int, step: int, **kw: object
) -> tuple[Register, ...]:
    count = 2 if reg_type is U32 else 1
    return tuple(
        Register(f"{key}_l{i}", f"{name} L{i}", first + (i - 1) * step, count, reg_type, R, fc, **kw)  # type: ignore[arg-type]
        for i in (1, 2, 3)
    )


# fmt: off
NEXT_REGISTERS: tuple[Register, ...] = (
    Register("charge_point_state", "Charge point state", 1000, 1, U16, R, HOLD, enum=NEXT_CHARGE_POINT_STATE,
             device_class="enum", icon="mdi:ev-station"),
    Register("charging_state", "Charging state", 1001, 1, U16, R, HOLD, enum=CHARGING_STATE, device_class="enum"),
    Register("evse_state", "EVSE state", 1002, 1, U16, R, HOLD, enum=NEXT_EVSE_STATE, device_class="enum",
             entity_category=DIAG),
    Register("cable_state", "Cable state", 1004, 1, U16, R, HOLD, enum=CABLE_STATE, device_class="enum",
             icon="mdi:ev-plug-type2"),
    Register("error_code", "Error code", 1006, 1, U16, R, HOLD, enum=NEXT_ERRORS, entity_category=DIAG,
             icon="mdi:alert-circle-outline"),
    *_phases(U16, HOLD, "current", "Current", 1008, 2, scale=0.001, unit="A", device_class="current",
             state_class=MEAS, plausible=AMPS),
    Register("power", "Charging power", 1020, 2, U32, R, HOLD, unit="W", device_class="power", state_class=MEAS,
             plausible=WATTS),
    *_phases(U32, HOLD, "power", "Power", 1024, 4, unit="W", device_class="power", state_class=MEAS,
             enabled_by_default=False, plausible=PHASE_WATTS),
    Register("energy_total", "Energy meter", 1036, 2, U32, R, HOLD, scale=0.001, unit="kWh", device_class="energy",
             state_class=TOTAL_INC, plausible=METER),
    Register("max_current", "Maximum current", 1100, 1, U16, R, HOLD, unit="A", device_class="current",
             entity_category=DIAG, plausible=AMPS),
    Register("min_current", "Minimum current", 1102, 1, U16, R, HOLD, unit="A", device_class="current",
             entity_category=DIAG, plausible=AMPS),
    Register("evse_max_current", "EVSE maximum current", 1104, 1, U16, R, HOLD, cadence=STATIC, unit="A",
             device_class="current", entity_category=DIAG, plausible=AMPS),
    Register("cable_max_current", "Cable maximum current", 1106, 1, U16, R, HOLD, cadence=SLOW, unit="A",
             device_class="current", entity_category=DIAG, plausible=AMPS),
    Register("ev_max_current", "Vehicle maximum current", 1108, 1, U16, R, HOLD, cadence=SLOW, unit="A",
             device_class="current", entity_category=DIAG, plausible=AMPS),
    Register("last_session_energy", "Last session energy", 1502, 1, U16, R, HOLD, cadence=SLOW, scale=0.001,
             unit="kWh", device_class="energy", state_class="total", plausible=SESSION_KWH),
    Register("session_start_time", "Session start", 1504, 2, RegType.HHMMSS, R, HOLD, cadence=SLOW,
             icon="mdi:clock-start"),
    Register("session_duration", "Charging time", 1508, 2, U32, R, HOLD, unit="s", device_class="duration",
             state_class=MEAS, plausible=SESSION_S),
    Register("session_end_time", "Session end", 1512, 2, RegType.HHMMSS, R, HOLD, cadence=SLOW,
             icon="mdi:clock-end"),
    Register("user_id", "RFID tag", 1600, 10, ASCII, R, HOLD, cadence=SLOW, icon="mdi:card-account-details",
             entity_category=DIAG),
    Register("smart_vehicle", "ISO 15118 vehicle", 1620, 1, U16, R, HOLD, cadence=SLOW, entity_category=DIAG,
             enabled_by_default=False, plausible=FLAG),
    Register("failsafe_current", "Fail-safe current", 2000, 1, U16, RW, HOLD, SINGLE, cadence=SLOW, unit="A",
             device_class="current", entity_category=CONFIG, plausible=AMPS),
    Register("failsafe_timeout", "Fail-safe timeout", 2002, 1, U16, RW, HOLD, SINGLE, cadence=SLOW, unit="s",
             device_class="duration", entity_category=CONFIG, plausible=FAILSAFE_S),
    Register("charge_power_setpoint", "Charge power set-point", 5000, 2, U32, W, None, MULTI, cadence=NEVER,
             unit="W", plausible=WATTS),
    Register("charging_current_setpoint", "Charging current", 5004, 1, U16, W, None, SINGLE, cadence=NEVER,
             unit="A", plausible=AMPS),
    Register("session_command", "Session command", 5006, 1, U16, W, None, SINGLE, cadence=NEVER,
             enum={0: "none", 1: "start", 2: "cancel"}),
    Register("life_bit", "Life bit", 6000, 1, U16, RW, HOLD, SINGLE, cadence=NEVER, plausible=FLAG),
)

UNITE_REGISTERS: tuple[Register, ...] = (
    Register("serial_number", "Serial number", 100, 25, UTF16, R, INPUT, cadence=STATIC, entity_category=DIAG),
    Register("charge_point_id", "Charge point ID", 130, 50, UTF16, R, INPUT, cadence=STATIC, entity_category=DIAG),
    Register("brand", "Brand", 190, 10, UTF16, R, INPUT, cadence=STATIC, entity_category=DIAG),
    Register("model", "Model", 210, 5, UTF16, R, INPUT, cadence=STATIC, entity_category=DIAG),
    Register("firmware", "Firmware", 230, 50, UTF16, R, INPUT, cadence=STATIC, entity_category=DIAG,
             icon="mdi:chip"),
    Register("date", "Wallbox date", 290, 2, RegType.YYMMDD, R, INPUT, cadence=SLOW, entity_category=DIAG,
             enabled_by_default=False),
    Register("time", "Wallbox time", 294, 2, RegType.HHMMSS, R, INPUT, entity_category=DIAG,
             enabled_by_default=False),
    Register("rated_power", "Rated power", 400, 2, U32, R, INPUT, cadence=STATIC, unit="W", device_class="power",
             entity_category=DIAG, plausible=WATTS),
    Register("phases_installed", "Installed phases", 404, 1, U16, R, INPUT, cadence=SLOW, enum=PHASES,
             device_class="enum", entity_category=DIAG),
    Register("phase_switch", "Phases", 405, 1, U16, RW, HOLD, SINGLE, cadence=SLOW, enum=PHASES,
             device_class="enum", min_firmware=(3, 187)),
    Register("charge_point_state", "Charge point state", 1000, 1, U16, R, INPUT, enum=UNITE_CHARGE_POINT_STATE,
             device_class="enum", icon="mdi:ev-station"),
    Register("charging_state", "Charging state", 1001, 1, U16, R, INPUT, enum=CHARGING_STATE, device_class="enum"),
    Register("equipment_state", "Equipment state", 1002, 1, U16, R, INPUT, enum=UNITE_EQUIPMENT_STATE,
             device_class="enum", entity_category=DIAG),
    Register("cable_state", "Cable state", 1004, 1, U16, R, INPUT, enum=CABLE_STATE, device_class="enum",
             icon="mdi:ev-plug-type2"),
    Register("error_code", "Fault code", 1006, 2, U32, R, INPUT, entity_category=DIAG,
             icon="mdi:alert-circle-outline", plausible=ANY),
    *_phases(U16, INPUT, "current", "Current", 1008, 2, scale=0.001, unit="A", device_class="current",
             state_class=MEAS, plausible=AMPS),
    *_phases(U16, INPUT, "voltage", "Voltage", 1014, 2, unit="V", device_class="voltage", state_class=MEAS,
             plausible=VOLTS),
    Register("power", "Charging power", 1020, 2, U32, R, INPUT, unit="W", device_class="power", state_class=MEAS,
             plausible=WATTS),
    *_phases(U32, INPUT, "power", "Power", 1024, 4, unit="W", device_class="power", state_class=MEAS,
             enabled_by_default=False, plausible=PHASE_WATTS),
    Register("energy_total", "Energy meter", 1036, 2, U32, R, INPUT, scale=0.1, unit="kWh", device_class="energy",
             state_class=TOTAL_INC, plausible=METER),
    Register("max_current", "Session maximum current", 1100, 1, U16, R, INPUT, unit="A", device_class="current",
             entity_category=DIAG, plausible=AMPS),
    Register("min_current", "Minimum current", 1102, 1, U16, R, INPUT, cadence=STATIC, unit="A",
             device_class="current", entity_category=DIAG, plausible=AMPS),
    Register("evse_max_current", "EVSE maximum current", 1104, 1, U16, R, INPUT, cadence=STATIC, unit="A",
             device_class="current", entity_category=DIAG, plausible=AMPS),
    Register("cable_max_current", "Cable maximum current", 1106, 1, U16, R, INPUT, cadence=SLOW, unit="A",
             device_class="current", entity_category=DIAG, plausible=AMPS),
    Register("session_energy", "Session energy", 1502, 2, U32, R, INPUT, scale=0.001, unit="kWh",
             device_class="energy", state_class="total", plausible=SESSION_KWH),
    Register("session_start_time", "Session start", 1504, 2, RegType.HHMMSS, R, INPUT, cadence=SLOW,
             icon="mdi:clock-start"),
    Register("session_duration", "Charging time", 1508, 2, U32, R, INPUT, unit="s", device_class="duration",
             state_class=MEAS, plausible=SESSION_S),
    Register("session_end_time", "Session end", 1512, 2, RegType.HHMMSS, R, INPUT, cadence=SLOW,
             icon="mdi:clock-end"),
    Register("user_id", "RFID tag", 1516, 15, UTF16, R, INPUT, cadence=SLOW, min_firmware=(3, 156),
             icon="mdi:card-account-details", entity_category=DIAG),
    Register("failsafe_current", "Fail-safe current", 2000, 1, U16, RW, HOLD, SINGLE, cadence=SLOW, unit="A",
             device_class="current", entity_category=CONFIG, plausible=AMPS),
    Register("failsafe_timeout", "Fail-safe timeout", 2002, 1, U16, RW, HOLD, SINGLE, cadence=SLOW, unit="s",
             device_class="duration", entity_category=CONFIG, plausible=FAILSAFE_S),
    Register("charging_current_setpoint", "Charging current", 5004, 1, U16, RW, HOLD, SINGLE, cadence=SLOW,
             unit="A", device_class="current", plausible=AMPS),
    Register("life_bit", "Alive register", 6000, 1, U16, RW, HOLD, SINGLE, cadence=NEVER, plausible=FLAG),
)
# fmt: on


@dataclass(frozen=True)
class ModelRules:
    """What a model's firmware accepts, beyond the register map itself."""

    model: WallboxModel
    registers: tuple[Register, ...]
    max_gap: int  # undefined registers one request may span (0: every request covers defined registers only)
    max_current_keys: tuple[str, ...]  # registers bounding the charging current from above (lowest wins)
    max_registers_per_request: int = 50

    def by_key(self, key: str) -> Register:
        for register in self.registers:
            if register.key == key:
                return register
        raise KeyError(f"{self.model.value} has no register {key!r}")

    def has(self, key: str) -> bool:
        return any(r.key == key for r in self.registers)

    @functools.cached_property
    def ranges(self) -> dict[str, Range | None]:
        return {r.key: r.plausible for r in self.registers}

    @functools.cached_property
    def units(self) -> dict[str, str | None]:
        return {r.key: r.unit for r in self.registers}


RULES: dict[WallboxModel, ModelRules] = {
    # The NEXT answers a read that touches an undefined address with exception 2 (reference section 1).
    # Its 1100 is already the minimum of EVSE, cable and vehicle.
    WallboxModel.NEXT: ModelRules(
        WallboxModel.NEXT, NEXT_REGISTERS, max_gap=0, max_current_keys=("max_current",)
    ),
    # The UNITE (3.187) reads across small gaps; older firmware may not, so the client falls back to
    # contiguous reads when the box refuses. Its 1100 mirrors the set-point, so it cannot bound it.
    WallboxModel.UNITE: ModelRules(
        WallboxModel.UNITE,
        UNITE_REGISTERS,
        max_gap=10,
        max_current_keys=("evse_max_current", "cable_max_current"),
    ),
}
