"""Modbus readings to the values the UDP path produces, through the data-point table.

The result goes into the same `BatterySnapshot` (screened by the same plausible ranges, derived points
filled the same way), so entities, the panel and the optimiser cannot tell which transport delivered it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..datapoints import POINTS_BY_KEY, Kind, Value
from ..firmware import Family, Firmware, Mode, identify
from .codec import Reading, decode
from .readplan import ReadRequest
from .registers import ForceMode, Generation, Rs485, WorkMode


def read_request(request: ReadRequest, words: Sequence[int]) -> tuple[dict[str, Reading], dict[str, Reading]]:
    """(data-point readings, control readings) of one reply, each field cut from its own words."""
    points: dict[str, Reading] = {}
    controls: dict[str, Reading] = {}
    for f in request.fields:
        offset = f.register.address - request.address
        reading = decode(f.register, words[offset : offset + f.register.count])
        (controls if f.control else points)[f.key] = reading
    return points, controls


def point_values(readings: Mapping[str, Reading]) -> dict[str, Value]:
    """Each reading in its point's kind; readings that are none of it are left out."""
    values: dict[str, Value] = {}
    for key, reading in readings.items():
        kind = POINTS_BY_KEY[key].kind
        if reading is None:
            continue
        if isinstance(reading, str):
            if kind in (Kind.TEXT, Kind.MODE):
                values[key] = reading
            continue
        if not math.isfinite(reading) or kind in (Kind.TEXT, Kind.MODE):
            continue
        values[key] = bool(reading) if kind is Kind.BOOL else round(reading) if kind is Kind.INT else reading
    return values


# Three-digit versions (139-156) or four-digit dotted ones (1476 = 147.6). A register the firmware has not
# filled in reads 0xFFFF (or 0): taken for a version, it would pick the model's limits and features.
FIRMWARE_VERSIONS = range(1, 10_000)
_MAC = re.compile(r"[0-9a-f]{12}")
_UNSET_MACS = ("000000000000", "ffffffffffff")


def screen_identity(values: dict[str, Value]) -> list[str]:
    """Drop a firmware version or BLE MAC that is no such thing (unread, as a refused register is), and
    spell the MAC as the Local API does; the problems found. The MAC is the battery's identity: a wrong
    one would take our own battery for another, or pin another battery as ours."""
    problems = []
    ver = values.get("firmware")
    if ver is not None and not (isinstance(ver, int) and ver in FIRMWARE_VERSIONS):
        del values["firmware"]
        problems.append(f"the firmware register reads {ver!r}, not a version: left unread")
    mac = values.get("ble_mac")
    if mac is not None:
        spelled = str(mac).strip().lower()
        if _MAC.fullmatch(spelled) and spelled not in _UNSET_MACS:
            values["ble_mac"] = spelled
        else:
            del values["ble_mac"]
            problems.append(f"the BLE MAC registers read {mac!r}, not a MAC: left unread")
    return problems


def firmware_for(generation: Generation, model: str | None, ver: int | None) -> Firmware:
    """The model from its name (31000), else the generation's usual one, so limits are never a guess."""
    firmware = identify(model, ver)
    if firmware.family is not Family.UNKNOWN:
        return firmware
    return Firmware(generation.default_family, model or "unknown", ver)


@dataclass(frozen=True)
class ControlState:
    """The control registers as last read (engineering values; None = not read or not offered)."""

    readings: Mapping[str, Reading] = field(default_factory=dict)

    def number(self, key: str) -> float | None:
        value = self.readings.get(key)
        return value if isinstance(value, float | int) else None

    @property
    def in_control(self) -> bool:
        """RS485 control is on: the battery follows 42010/42020/42021, not its work mode."""
        return self.number("rs485_control") == Rs485.ON

    @property
    def force_mode(self) -> ForceMode | None:
        value = self.number("force_mode")
        return ForceMode(int(value)) if value in tuple(ForceMode) else None

    @property
    def work_mode(self) -> WorkMode | None:
        value = self.number("work_mode")
        return WorkMode(int(value)) if value in tuple(WorkMode) else None

    def watts(self, key: str) -> int | None:
        value = self.number(key)
        return None if value is None else round(value)


def with_control(values: dict[str, Value], control: ControlState) -> dict[str, Value]:
    """Under RS485 control the battery follows an outside set-point, as in the Local API's Passive mode;
    43000 then reads 1 (self-consumption), which would wrongly show Auto."""
    if control.in_control and "mode" in values:
        return {**values, "mode": Mode.PASSIVE.value}
    return values
