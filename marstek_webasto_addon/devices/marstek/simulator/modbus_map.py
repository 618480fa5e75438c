"""The simulated Venus's Modbus register map, per generation: no I/O, the server puts it on TCP.

Reads are rendered from the same `SimulatedBattery` the Local API answers from; writes to the control
registers steer the same physics. Written from docs/marstek-modbus.md by hand, independently of the
add-on's data-point table, so the tests check the client against the device and not against itself.
"""

from __future__ import annotations

from collections.abc import Callable

from ..firmware import Family, identify
from ..modbus.registers import Generation
from .device import SimulatedBattery

ILLEGAL_ADDRESS, ILLEGAL_VALUE = 2, 3
RS485_ON, RS485_OFF = 0x55AA, 0x55BB
_WORK_MODES = {"Manual": 0, "Auto": 1, "AI": 2}
_V3_NAMES = {Family.VENUS_A: "VNSA-0", Family.VENUS_D: "VNSD-0"}


class ModbusRefusal(Exception):
    """A request the device answers with a Modbus exception."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


def generation_of(battery: SimulatedBattery) -> Generation:
    return Generation.for_family(identify(battery.profile.device, None).family)


def _u16(value: float) -> list[int]:
    return [round(value) & 0xFFFF]


def _u32(value: float) -> list[int]:
    number = round(value) & 0xFFFF_FFFF
    return [number >> 16, number & 0xFFFF]


def _ascii(text: str, registers: int) -> list[int]:
    raw = text.encode("ascii")[: registers * 2].ljust(registers * 2, b"\x00")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def _ipv4(ip: str) -> list[int]:
    octets = [int(part) for part in ip.split(".")]
    return [octets[0] << 8 | octets[1], octets[2] << 8 | octets[3]]


Words = dict[int, list[int]]  # first address -> its words


class VenusRegisterMap:
    """`read(address, count)` and `write(address, value)` against one battery, or a ModbusRefusal."""

    def __init__(self, battery: SimulatedBattery, generation: Generation | None = None) -> None:
        self.battery = battery
        self.generation = generation or generation_of(battery)
        self.unit_id = 1
        # Registers a firmware update removed: answered with exception 2 from now on, as unused addresses.
        self.removed: set[int] = set()
        self.addresses = sorted(self._flat(self._render()))
        self._writers: dict[int, Callable[[int], None]] = self._control_writers()

    # reading --------------------------------------------------------------------------------------

    def blocks(self) -> list[tuple[int, int]]:
        """The defined address runs as (first, one past the last); everything between is unused."""
        runs: list[tuple[int, int]] = []
        for address in self.addresses:
            if runs and runs[-1][1] == address:
                runs[-1] = (runs[-1][0], address + 1)
            else:
                runs.append((address, address + 1))
        return runs

    def read(self, address: int, count: int) -> list[int]:
        words = self._flat(self._render())
        missing = [a for a in range(address, address + count) if a not in words or a in self.removed]
        if missing:
            raise ModbusRefusal(ILLEGAL_ADDRESS, f"{missing[0]} is not a register")
        return [words[a] for a in range(address, address + count)]

    @staticmethod
    def _flat(render: Words) -> dict[int, int]:
        return {start + i: word for start, words in render.items() for i, word in enumerate(words)}

    def _render(self) -> Words:
        b = self.battery
        p = b.physics
        volts = 48.0 + 3.3 * p.soc / 100  # as the Local API's Bat.GetStatus says
        amps = -p.dc_power / volts  # + = charging, as every current register counts it
        state = 2 if p.ac_power < -5 else 3 if p.ac_power > 5 else 1  # 35100: charge, discharge, standby
        work_mode = (
            1 if b.rs485_control else _WORK_MODES.get(b.previous_mode if b.mode == "Passive" else b.mode, 1)
        )
        common: Words = {
            30300: [1, 1, 1, -b.rssi],  # WiFi, BLE, cloud state; RSSI as -dBm
            31000: _ascii(b.profile.device, 10),
            33000: _u32(p.ac_in_wh / 10)
            + _u32(p.ac_out_wh / 10)
            + _u32(p.ac_in_wh / 10)
            + _u32(p.ac_out_wh / 10)
            + _u32(p.ac_in_wh / 10)
            + _u32(p.ac_out_wh / 10),  # 0.01 kWh
            35000: _u16(p.temperature_c * 10) * 3,
            35100: [state],
            41100: [self.unit_id],
            42000: [RS485_ON if b.rs485_control else RS485_OFF],
            42010: [b.force_mode, b.charge_to_soc],
            42020: [b.force_charge_w, b.force_discharge_w],
            43000: [work_mode],
            44002: [b.max_charge_setting_w, b.max_discharge_setting_w],
        }
        if self.generation is Generation.V12:
            return common | {
                30402: _ascii(b.ble_mac, 6),
                31100: [b.profile.ver, b.profile.ver, 213],  # software, EMS (control) and BMS versions
                32100: _u16(volts * 100)
                + _u16(amps * 100)
                + _u32(-p.dc_power)
                + _u16(p.soc)
                + _u16(p.capacity_wh),
                32200: [2300, *_u16(abs(p.ac_power) / 230 * 100), *_u32(p.ac_power), 5000],  # 0.01 Hz
                32300: [0, 0, *_u32(0)],
                35010: _u16(p.temperature_c + 1) + _u16(p.temperature_c - 1),  # whole degC (BMS 213)
                44000: [round(b.charge_cutoff_soc * 10), round(p.soc_floor * 10)],
            }
        family = identify(b.profile.device, None).family
        name = _V3_NAMES.get(family, "VNSE3-0")
        # 30001 is the DC bus (+ = charging): the pack on the E v3; pack minus MPPT input on the A and D.
        bus_power = -p.dc_power - (p.pv_total if family in _V3_NAMES else 0.0)
        return common | {
            30000: _u16(volts * 10) + _u16(bus_power),
            30004: [2300, 0, *_u16(p.ac_power), 0],
            30100: _u16(volts * 100) + _u16(amps * 10),
            30200: [b.profile.ver, 0, 116, 0, 110],
            30304: _ascii(b.ble_mac, 6),
            30350: _ascii("202501", 6),
            30400: _ipv4(b.ip) + _ipv4(".".join([*b.ip.split(".")[:3], "1"])),
            31000: _ascii(name, 10),
            32100: _u16(volts * 100)
            + (_u16(amps * 100) if amps > 0 else [0x9999])
            + [0, 0]
            + _u16(p.soc)
            + _u16(p.capacity_wh),  # 32101: the firmware's sign bug; 32102: dead
            32200: [2300, 2300, *_u32(p.ac_power), 500],  # 32201 repeats the voltage; 0.1 Hz
            32300: [0, 0, 0],
            34000: _u16(volts * 100) + _u16(amps * 10) + _u16(p.soc * 10) + [42],
            35010: _u16(p.temperature_c * 10 + 10) + _u16(p.temperature_c * 10 - 10),
            37004: _u16(p.ac_power) + _u16(p.soc),
        }

    # writing --------------------------------------------------------------------------------------

    def app_sets_work_mode(self, mode: str) -> None:
        """A person picks a work mode in the Marstek app: the firmware byte RS485 control shares (§3.2)."""
        if mode not in _WORK_MODES:
            raise ValueError(f"{mode!r} is not a work mode (one of {', '.join(_WORK_MODES)})")
        self.battery.mode = mode
        self.battery.rs485_control = False

    def write(self, address: int, value: int) -> None:
        writer = self._writers.get(address)
        if writer is None:
            raise ModbusRefusal(ILLEGAL_ADDRESS, f"{address} cannot be written")
        writer(value)

    def _control_writers(self) -> dict[int, Callable[[int], None]]:
        b = self.battery
        model_max = max(b.profile.max_charge_w, b.profile.max_discharge_w)

        def ranged(low: int, high: int, apply: Callable[[int], None]) -> Callable[[int], None]:
            def write(value: int) -> None:
                if not low <= value <= high:
                    raise ModbusRefusal(ILLEGAL_VALUE, f"{value} outside {low}..{high}")
                apply(value)

            return write

        def rs485(value: int) -> None:
            if value not in (RS485_ON, RS485_OFF):
                raise ModbusRefusal(ILLEGAL_VALUE, f"{value:#06x} is neither 0x55AA nor 0x55BB")
            b.rs485_control = value == RS485_ON

        def work_mode(value: int) -> None:
            # One firmware byte with 42000: a work mode ends RS485 control.
            b.mode = next(name for name, code in _WORK_MODES.items() if code == value)
            b.rs485_control = False

        def setattr_(name: str) -> Callable[[int], None]:
            return lambda value: setattr(b, name, value)

        writers: dict[int, Callable[[int], None]] = {
            42000: rs485,
            42010: ranged(0, 2, setattr_("force_mode")),
            42011: ranged(13 if self.generation is Generation.V3 else 12, 100, setattr_("charge_to_soc")),
            42020: ranged(0, model_max, setattr_("force_charge_w")),
            42021: ranged(0, model_max, setattr_("force_discharge_w")),
            43000: ranged(0, 2, work_mode),
            44002: ranged(0, model_max, setattr_("max_charge_setting_w")),
            44003: ranged(0, model_max, setattr_("max_discharge_setting_w")),
        }
        if self.generation is Generation.V12:

            def discharge_cutoff(value: int) -> None:
                b.physics.dod = 100 - value // 10  # the same floor the Local API's DOD.SET moves

            writers[44000] = ranged(800, 1000, lambda value: setattr(b, "charge_cutoff_soc", value / 10))
            writers[44001] = ranged(120, 300, discharge_cutoff)
        return writers
