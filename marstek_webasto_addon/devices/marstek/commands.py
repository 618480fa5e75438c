"""Mode commands for ES.SetMode and the other setters: validation, clamping and the expected effect.

Power sign (as everywhere in the add-on): + = discharge (feed the house), - = charge. That is also the
wire sign of `passive_cfg.power` and `manual_cfg.power` (reference section 3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from .firmware import Firmware, Mode, PowerLimits

# The device would take up to 86 400 s; the add-on never sends more than 15 minutes, so nothing it sent
# outlives it by more than that. Longer wishes are kept by the add-on and renewed as leases.
PASSIVE_MAX_SECONDS = 900
DOD_MIN, DOD_MAX = 30, 88
EVERY_DAY = 0b111_1111
IDLE_THRESHOLD_W = 50  # |AC power| below this counts as idle (vendor verification rule)
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class AutoMode:
    mode = Mode.AUTO

    def describe(self) -> str:
        return "Auto"


@dataclass(frozen=True)
class AiMode:
    mode = Mode.AI

    def describe(self) -> str:
        return "AI"


@dataclass(frozen=True)
class UpsMode:
    mode = Mode.UPS

    def describe(self) -> str:
        return "UPS"


@dataclass(frozen=True)
class PassiveMode:
    """Hold `power` W (+ discharge, - charge) for `duration_s` (at most 15 min); then the battery falls
    back by itself."""

    power: int
    duration_s: int
    mode = Mode.PASSIVE

    def describe(self) -> str:
        verb = "discharge" if self.power > 0 else "charge" if self.power < 0 else "hold"
        return f"Passive {verb} {abs(self.power)} W for {self.duration_s} s"


@dataclass(frozen=True)
class ManualSlot:
    """One of the 10 schedule slots. Writing a slot also switches the battery to Manual."""

    slot: int
    start: str = "00:00"
    end: str = "23:59"
    weekdays: int = EVERY_DAY  # bit0 = Monday ... bit6 = Sunday
    power: int = 0
    enabled: bool = True
    mode = Mode.MANUAL

    def describe(self) -> str:
        state = "enabled" if self.enabled else "disabled"
        return (
            f"Manual slot {self.slot} {self.start}-{self.end} days={self.weekdays:07b} {self.power} W {state}"
        )

    @classmethod
    def disabled(cls, slot: int) -> ManualSlot:
        return cls(slot, "00:00", "00:00", 0, 0, enabled=False)

    def covers(self, at: datetime) -> bool:
        """Is this slot running at `at` (weekday bit and time window; a window may wrap past midnight)?"""
        if not self.enabled or not self.weekdays & (1 << at.weekday()):
            return False
        minute = at.hour * 60 + at.minute
        start, end = (int(t[:2]) * 60 + int(t[3:]) for t in (self.start, self.end))
        return start <= minute <= end if start <= end else (minute >= start or minute <= end)


ModeCommand = AutoMode | AiMode | UpsMode | PassiveMode | ManualSlot


class CommandError(ValueError):
    """A command that cannot be sent as asked (not a device error)."""


def prepare(
    command: ModeCommand, firmware: Firmware, limits: PowerLimits | None = None
) -> tuple[ModeCommand, str]:
    """Validate and clamp to the device limits. Returns the command to send and a note if it was clamped."""
    limits = limits or firmware.power_limits
    notes: list[str] = []
    if isinstance(command, PassiveMode | ManualSlot):
        power = max(-limits.charge_w, min(limits.discharge_w, int(command.power)))
        if power != command.power:
            notes.append(
                f"power {command.power} W clamped to {power} W "
                f"(limits -{limits.charge_w}..+{limits.discharge_w})"
            )
        command = replace(command, power=power)
    if isinstance(command, PassiveMode):
        duration = max(1, min(PASSIVE_MAX_SECONDS, int(command.duration_s)))
        if duration != command.duration_s:
            notes.append(f"duration {command.duration_s} s clamped to {duration} s")
        command = replace(command, duration_s=duration)
    if isinstance(command, ManualSlot):
        if not 0 <= command.slot < firmware.manual_slots:
            raise CommandError(f"slot {command.slot} does not exist (0..{firmware.manual_slots - 1})")
        for label, value in (("start", command.start), ("end", command.end)):
            if not _HHMM.match(value):
                raise CommandError(f"{label} time {value!r} is not HH:MM (00:00..23:59)")
        if not 0 <= command.weekdays <= EVERY_DAY:
            raise CommandError(f"weekday mask {command.weekdays} is outside 0..127")
        if command.enabled and command.power == 0:
            # One client reports that 0 W means "no limit" in an enabled slot: never risk full power.
            raise CommandError("an enabled slot needs a power; use a disabled slot to idle")
    return command, "; ".join(notes)


def to_config(command: ModeCommand) -> dict[str, Any]:
    """The `config` object of ES.SetMode: exactly one *_cfg matching the mode."""
    match command:
        case AutoMode():
            return {"mode": "Auto", "auto_cfg": {"enable": 1}}
        case AiMode():
            return {"mode": "AI", "ai_cfg": {"enable": 1}}
        case UpsMode():
            return {"mode": "UPS", "ups_cfg": {"enable": 1}}
        case PassiveMode(power=power, duration_s=duration):
            return {"mode": "Passive", "passive_cfg": {"power": power, "cd_time": duration}}
        case ManualSlot():
            return {
                "mode": "Manual",
                "manual_cfg": {
                    "time_num": command.slot,
                    "start_time": command.start,
                    "end_time": command.end,
                    "week_set": command.weekdays,
                    "power": command.power,
                    "enable": int(command.enabled),
                },
            }


@dataclass(frozen=True)
class Observation:
    """What ES.GetMode says after a write."""

    mode: Mode | None
    ac_power: float | None
    soc: float | None


def unmet_expectation(
    command: ModeCommand, seen: Observation, soc_floor: float, *, slot_active: bool = False
) -> str | None:
    """None when the command has visibly taken effect, else what is still wrong.

    `set_result: true` only means "accepted" (Q12, Q13), so writes are checked against the mode and,
    for Passive, the sign and size of the AC power, unless the SOC window makes that power impossible.
    """
    if seen.mode is not command.mode:
        return f"mode is {seen.mode.value if seen.mode else 'unknown'}, expected {command.mode.value}"
    running = isinstance(command, PassiveMode) or (isinstance(command, ManualSlot) and slot_active)
    if not running or seen.ac_power is None:
        return None
    assert isinstance(command, PassiveMode | ManualSlot)
    power, soc = seen.ac_power, seen.soc
    needed = min(IDLE_THRESHOLD_W, abs(command.power) / 2)
    if command.power < 0 and power > -needed and not (soc is not None and soc >= 99):
        return f"AC power {power:.0f} W, expected charging near {command.power} W"
    if command.power > 0 and power < needed and not (soc is not None and soc <= soc_floor + 1):
        return f"AC power {power:.0f} W, expected discharging near {command.power} W"
    if command.power == 0 and abs(power) >= IDLE_THRESHOLD_W:
        return f"AC power {power:.0f} W, expected idle"
    return None
