"""The simulated wallbox itself: plain Python, no I/O. The server adapter puts it on Modbus TCP.

Behaviour follows `shared/reference/webasto.md` sections 2-6: per-model registers, function codes and
encodings; a car that plugs in and charges at the set current (power = phases x 230 V x A); meter and
session counters; the life-bit engine with the fail-safe current; and the documented quirks as switches.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from ..registers import FC, RULES, Access, Register, RegType, WallboxModel

VOLTS = 230.0
ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE, DEVICE_FAILURE = 1, 2, 3, 4


@dataclass(frozen=True)
class WallboxProfile:
    model: WallboxModel
    firmware: str = "v3.187.0-1.0.156.0"  # UNITE only; the NEXT has no firmware register
    evse_max_current: int = 16  # 11 kW variant
    cable_max_current: int = 32
    phases_installed: int = 3
    serial: str = "4711001234567890"
    charge_point_id: str = "SIM-WALLBOX-1"
    brand: str = "Webasto"
    model_name: str = "UNITE"
    idle_power_w: int = 0  # the UNITE shows 4-6 W with nothing plugged in
    gap_reads: bool = (
        True  # UNITE 3.187 reads across gaps; older firmware answers exception 2 (OpenEMS, 2023)
    )

    @property
    def firmware_version(self) -> tuple[int, ...]:
        core = self.firmware.lstrip("v").split("-", 1)[0]
        return tuple(int(part) for part in core.split("."))

    @classmethod
    def for_model(cls, model: WallboxModel, **overrides: object) -> WallboxProfile:
        defaults: dict[str, object] = {"idle_power_w": 5} if model is WallboxModel.UNITE else {}
        return cls(model, **{**defaults, **overrides})  # type: ignore[arg-type]


@dataclass
class WallboxQuirks:
    """Known misbehaviour, each off by default (reference section 5)."""

    stuck_after_pause: bool = False  # NEXT: a 0 A pause strands the session in state 7 (error)
    zero_reverts_without_vehicle: bool = False  # UNITE: 0 A written with no car connected falls back to 6 A
    refuse_reconnect_until_timeout: bool = False  # after a client leaves, new ones are refused for T seconds
    # A rogue or glitching box: register key -> the raw number the register holds instead (before the
    # table's scale, e.g. {"power": 2147483646, "min_current": 65535}). Change it while running.
    rogue_values: dict[str, int] = field(default_factory=dict)


@dataclass
class Car:
    max_current: int = 16
    phases: int = 3
    energy_wanted_wh: float = 20_000.0


@dataclass
class WallboxSim:
    profile: WallboxProfile
    quirks: WallboxQuirks = field(default_factory=WallboxQuirks)
    sim_now: Callable[[], datetime] = datetime.now  # simulated wall clock (session times, UNITE clock)
    real_now: Callable[[], float] = time.monotonic  # the life-bit engine runs in real time
    life_bit_period_scale: float = 1.0  # <1 in tests only: the engine checks more often than the real box
    car: Car | None = None
    setpoint: int = 0
    failsafe_current: int = 6
    failsafe_timeout: int = 20
    life_bit: int = 0
    in_failsafe: bool = False
    phase_switch: int = 1
    session_active: bool = False
    session_start: int = 0  # hhmmss
    session_end: int = 0
    session_seconds: float = 0.0
    session_wh: float = 0.0
    last_session_wh: float = 0.0
    meter_wh: float = 1_234_567.0
    stuck: bool = False
    power_setpoint_w: int = 0
    failsafe_events: int = 0
    failing: set[int] = field(default_factory=set)  # addresses answering "device failure" (exception 4)
    lacking: set[int] = field(default_factory=set)  # addresses answering "illegal address" (exception 2)
    reads: dict[int, int] = field(default_factory=dict)  # address -> times read, to see what a client asks
    writes: dict[int, int] = field(default_factory=dict)  # address -> times written
    on_failsafe: Callable[[], None] | None = None
    _last_session_command: int = 0
    _next_life_check: float = 0.0

    def __post_init__(self) -> None:
        self.rules = RULES[self.profile.model]
        self.setpoint = self.profile.evse_max_current
        self.phase_switch = 1 if self.profile.phases_installed == 3 else 0
        self._next_life_check = self.real_now() + self.life_bit_period

    # the car --------------------------------------------------------------------------------------

    def plug_in(self, car: Car | None = None) -> None:
        self.car = car or Car()
        self._start_session()

    def unplug(self) -> None:
        self._end_session()
        self.car = None
        self.stuck = False

    def _start_session(self) -> None:
        if self.session_active or self.car is None:
            return
        self.session_active = True
        self.session_start = int(self.sim_now().strftime("%H%M%S"))
        self.session_end, self.session_seconds, self.session_wh = 0, 0.0, 0.0

    def _end_session(self) -> None:
        if not self.session_active:
            return
        self.session_active = False
        self.session_end = int(self.sim_now().strftime("%H%M%S"))
        self.last_session_wh = self.session_wh

    # electrical state -----------------------------------------------------------------------------

    @property
    def is_unite(self) -> bool:
        return self.profile.model is WallboxModel.UNITE

    @property
    def phases(self) -> int:
        installed = self.profile.phases_installed
        if self.is_unite and self.phase_switch == 0:
            installed = 1
        return min(installed, self.car.phases) if self.car else installed

    @property
    def hardware_max(self) -> int:
        limits = [self.profile.evse_max_current, self.profile.cable_max_current]
        if self.car is not None:
            limits.append(self.car.max_current)
        return min(limits)

    @property
    def effective_current(self) -> int:
        """What the car may draw now: the set-point, or the fail-safe current when the EMS went silent."""
        wanted = self.failsafe_current if self.in_failsafe else self.setpoint
        return min(wanted, self.hardware_max)

    @property
    def charging(self) -> bool:
        return (
            self.car is not None
            and self.session_active
            and not self.stuck
            and self.car.energy_wanted_wh > 0
            and self.effective_current >= 6
        )

    @property
    def current_a(self) -> float:
        return float(self.effective_current) if self.charging else 0.0

    @property
    def power_w(self) -> float:
        if self.charging:
            return self.phases * VOLTS * self.current_a
        return float(self.profile.idle_power_w)

    # time -----------------------------------------------------------------------------------------

    @property
    def life_bit_period(self) -> float:
        """The box checks the life bit every T/2, at least every 3 s; T = 0 means 20 s."""
        timeout = self.failsafe_timeout or 20
        return max(timeout / 2, 3.0) * self.life_bit_period_scale

    def tick(self, sim_seconds: float) -> None:
        """Advance the car by simulated seconds, and run the life-bit engine on the real clock."""
        if self.charging:
            assert self.car is not None
            wh = self.power_w * sim_seconds / 3600
            wh = min(wh, self.car.energy_wanted_wh)
            self.car.energy_wanted_wh -= wh
            self.meter_wh += wh
            self.session_wh += wh
        if self.session_active and self.car is not None:
            self.session_seconds += sim_seconds
        now = self.real_now()
        if now >= self._next_life_check:
            self._next_life_check = now + self.life_bit_period
            if self.life_bit == 1:
                self.life_bit = 0  # the box clears it; the EMS must write it again before the next check
            elif not self.in_failsafe:
                self.in_failsafe = True
                self.failsafe_events += 1
                if self.on_failsafe is not None:
                    self.on_failsafe()

    def client_left(self) -> None:
        """Any TCP disconnect: the UNITE's phase switch reverts to its default (404)."""
        if self.is_unite:
            self.phase_switch = 1 if self.profile.phases_installed == 3 else 0

    # registers ------------------------------------------------------------------------------------

    def _supported(self, register: Register) -> bool:
        needed = register.min_firmware
        return needed is None or not self.is_unite or self.profile.firmware_version >= needed

    def value_of(self, key: str) -> int | str:
        """The engineering value of a readable register, before wire encoding."""
        next_states = {"none": 0, "preparing": 1, "charging": 3, "paused": 4, "error": 7}
        unite_states = {"none": 0, "preparing": 1, "charging": 2, "suspended_evse": 3, "suspended_ev": 4}
        if self.car is None:
            state = "none"
        elif self.stuck:
            state = "error"
        elif self.charging:
            state = "charging"
        elif not self.session_active:
            state = "preparing"
        elif self.car.energy_wanted_wh <= 0:
            state = "paused" if not self.is_unite else "suspended_ev"
        else:
            state = "paused" if not self.is_unite else "suspended_evse"
        now = self.sim_now()
        phase_current = round(self.current_a * 1000)
        phase_power = round(VOLTS * self.current_a) if self.charging else 0
        active = self.phases
        values: dict[str, int | str] = {
            "serial_number": self.profile.serial,
            "charge_point_id": self.profile.charge_point_id,
            "brand": self.profile.brand,
            "model": self.profile.model_name,
            "firmware": self.profile.firmware,
            "date": int(now.strftime("%y%m%d")),
            "time": int(now.strftime("%H%M%S")),
            "rated_power": round(self.profile.phases_installed * VOLTS * self.profile.evse_max_current),
            "phases_installed": 1 if self.profile.phases_installed == 3 else 0,
            "phase_switch": self.phase_switch,
            "charge_point_state": (unite_states if self.is_unite else next_states).get(state, 0),
            "charging_state": int(self.charging),
            "equipment_state": 1,
            "evse_state": 2 if self.stuck else 1,
            "cable_state": 0 if self.car is None else (3 if self.session_active else 2),
            "error_code": 0,
            "power": round(self.power_w),
            "energy_total": round(self.meter_wh / 100) if self.is_unite else round(self.meter_wh),
            "min_current": 6,
            "evse_max_current": self.profile.evse_max_current,
            "cable_max_current": self.profile.cable_max_current if self.car is not None else 0,
            "ev_max_current": self.car.max_current if self.car is not None else 0,
            "max_current": self.effective_current if self.is_unite else self.hardware_max,
            "session_energy": round(self.session_wh),
            "last_session_energy": 0 if self.session_active else round(self.last_session_wh) & 0xFFFF,
            "session_start_time": self.session_start,
            "session_duration": round(self.session_seconds),
            "session_end_time": 0 if self.session_active else self.session_end,
            "user_id": "",
            "smart_vehicle": 0,
            "failsafe_current": self.failsafe_current,
            "failsafe_timeout": self.failsafe_timeout,
            "charging_current_setpoint": self.setpoint,
            "life_bit": self.life_bit,
        }
        for i in (1, 2, 3):
            on = i <= active
            values[f"current_l{i}"] = phase_current if on else 0
            values[f"power_l{i}"] = phase_power if on else 0
            values[f"voltage_l{i}"] = round(VOLTS)
        return values[key]

    def words(self, register: Register) -> list[int]:
        rogue = self.quirks.rogue_values.get(register.key)
        value = self.value_of(register.key) if rogue is None else rogue
        match register.type:
            case RegType.STR_UTF16:  # one character per register, high byte 0
                text = str(value)[: register.count]
                return [ord(c) for c in text] + [0] * (register.count - len(text))
            case RegType.STR_ASCII:  # two characters per register
                raw = str(value).encode("ascii")[: register.count * 2].ljust(register.count * 2, b"\x00")
                return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
        number = int(value) & (0xFFFF_FFFF if register.count == 2 else 0xFFFF)
        return [number >> 16, number & 0xFFFF] if register.count == 2 else [number]

    def read(self, fc: int, address: int) -> int:
        """One register for a read request; raises ValueError(code) for a Modbus exception."""
        self.reads[address] = self.reads.get(address, 0) + 1
        if address in self.failing:
            raise ModbusRefusal(DEVICE_FAILURE)
        if address in self.lacking:
            raise ModbusRefusal(ILLEGAL_ADDRESS)
        register, offset = self._locate(address)
        if register is None:
            if self.is_unite and self.profile.gap_reads:
                return 0  # a gap inside a UNITE block reads as zero (the server rejects reads outside blocks)
            raise ModbusRefusal(ILLEGAL_ADDRESS)
        if not self._supported(register):
            raise ModbusRefusal(ILLEGAL_ADDRESS)
        if register.access is Access.WRITE:
            raise ModbusRefusal(ILLEGAL_ADDRESS)  # the NEXT's write-only registers cannot be read
        if self.is_unite:
            if fc == FC.READ_HOLDING and register.read_fc is FC.READ_INPUT:
                # FC3 on an input register: zeros, not an exception (why a UNITE set up as NEXT reads 0)
                return 0
            if fc == FC.READ_INPUT and register.read_fc is FC.READ_HOLDING:
                raise ModbusRefusal(ILLEGAL_ADDRESS)
        return self.words(register)[offset]

    def _locate(self, address: int) -> tuple[Register | None, int]:
        for register in self.rules.registers:
            if register.address <= address < register.end:
                return register, address - register.address
        return None, 0

    def write(self, fc: int, address: int, values: list[int]) -> None:
        """A write request; raises ModbusRefusal for an exception response. All-or-nothing."""
        self.writes[address] = self.writes.get(address, 0) + 1
        register, offset = self._locate(address)
        if register is None or offset != 0 or register.access is Access.READ or not self._supported(register):
            raise ModbusRefusal(ILLEGAL_ADDRESS)
        if len(values) != register.count:
            raise ModbusRefusal(ILLEGAL_ADDRESS)
        if (
            fc == FC.WRITE_MULTIPLE
            and register.write_fc is FC.WRITE_SINGLE
            and register.key != "charging_current_setpoint"
        ):
            raise ModbusRefusal(ILLEGAL_FUNCTION)
        number = (values[0] << 16) | values[1] if register.count == 2 else values[0]
        self._apply(register.key, number)

    def _apply(self, key: str, value: int) -> None:
        match key:
            case "charging_current_setpoint":
                if value > 80:
                    raise ModbusRefusal(ILLEGAL_VALUE)
                if (
                    value == 0
                    and self.car is None
                    and self.is_unite
                    and self.quirks.zero_reverts_without_vehicle
                ):
                    value = 6
                if value == 0 and self.setpoint > 0 and self.charging and self.quirks.stuck_after_pause:
                    self.stuck = True
                self.setpoint = value
            case "charge_power_setpoint":
                self.power_setpoint_w = value
                self.setpoint = min(80, int(value / (VOLTS * max(self.phases, 1))))
            case "session_command":
                if value not in (0, 1, 2):
                    raise ModbusRefusal(ILLEGAL_VALUE)
                edge = value != self._last_session_command
                self._last_session_command = value
                if edge and value == 1:
                    self.stuck = False
                    self._start_session()
                elif edge and value == 2:
                    self._end_session()
            case "failsafe_current":
                if value > 80:
                    raise ModbusRefusal(ILLEGAL_VALUE)
                self.failsafe_current = value
            case "failsafe_timeout":
                if value > 3600:
                    raise ModbusRefusal(ILLEGAL_VALUE)
                self.failsafe_timeout = value
            case "life_bit":
                self.life_bit = value
                if value == 1:
                    self.in_failsafe = False
            case "phase_switch":
                if value not in (0, 1) or (value == 1 and self.profile.phases_installed != 3):
                    raise ModbusRefusal(ILLEGAL_VALUE)  # how the real box refuses is unknown
                self.phase_switch = value
            case _:
                raise ModbusRefusal(ILLEGAL_ADDRESS)


class ModbusRefusal(Exception):
    """An exception response with this code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code
