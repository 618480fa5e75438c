"""The optimiser's inputs from the outside world: the grid meter and tomorrow's PV.

Each source keeps its latest reading with the moment it arrived, so the optimiser can tell a live meter
from a stale one (and hold the batteries in Auto).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as clock_time

from ..bridge.devices import BatteryDevice

_LOG = logging.getLogger(__name__)

# A home's connection carries at most about 3 x 80 A x 250 V: a power reading beyond it is a glitch or a
# wrong unit. Held for one control step, such a number would set the month's capacity peak (and with it
# the peak target and the car's capacity budget) for the rest of the month.
PLAUSIBLE_POWER_W = 60_000.0


def implausible_power(watts: float) -> str:
    """Why a power reading (W) cannot be used: "" when it can."""
    if abs(watts) <= PLAUSIBLE_POWER_W:
        return ""
    return f"{watts:.0f} W is beyond {PLAUSIBLE_POWER_W / 1000:.0f} kW, not a home's power (check the unit)"


@dataclass
class Reading:
    value: float | None = None
    at: float | None = None  # time.monotonic() when it arrived
    source: str = ""
    problem: str = ""  # why the last payload could not be used

    def age(self, now: float | None = None) -> float | None:
        return None if self.at is None else (now if now is not None else time.monotonic()) - self.at


class GridInput:
    """Grid power in W, + = import."""

    def __init__(self, description: str) -> None:
        self.reading = Reading(source=description)

    def current(self) -> Reading:
        return self.reading

    def set(self, watts: float) -> None:
        self.reading.value, self.reading.at, self.reading.problem = watts, time.monotonic(), ""


class MqttGridInput(GridInput):
    """A topic with a number (ESPHome, a DSMR reader) or a JSON object with the number under `json_key`."""

    def __init__(self, topic: str, *, json_key: str = "", unit: str = "W", invert: bool = False) -> None:
        super().__init__(f"MQTT {topic}" + (f" [{json_key}]" if json_key else ""))
        self.json_key, self.scale = json_key, (1000.0 if unit == "kW" else 1.0) * (-1.0 if invert else 1.0)

    def on_payload(self, payload: bytes) -> None:
        text = payload.decode("utf-8", errors="replace").strip()
        try:
            value = json.loads(text) if text else None
            if self.json_key:
                value = value.get(self.json_key) if isinstance(value, dict) else None
            # true/false are not a power, though float() would take them for 1 and 0
            number = math.nan if isinstance(value, bool) else float(value)  # type: ignore[arg-type]
        except Exception:  # whatever a payload holds (a 400-digit number, deep nesting)
            number = math.nan
        if not math.isfinite(number):
            self._reject(f"{text[:60]!r} is not a power reading")
            return
        implausible = implausible_power(number * self.scale)
        if implausible:
            self._reject(implausible)
            return
        self.set(number * self.scale)

    def _reject(self, why: str) -> None:
        """The payload is not used: the last good reading ages out by itself (a stale meter holds the
        batteries in Auto)."""
        problem = f"{self.reading.source}: {why}"
        if problem != self.reading.problem:
            _LOG.warning("%s", problem)  # once per kind of bad payload, not on every message
        self.reading.problem = problem


class BatteryMeterInput(GridInput):
    """The CT meter a battery itself reads (EM.GetStatus): + = import, like a P1 meter."""

    def __init__(self, battery: BatteryDevice) -> None:
        super().__init__(f"the CT meter of {battery.name}")
        self.battery = battery

    def current(self) -> Reading:
        snapshot = self.battery.link.snapshot
        value = snapshot.number("meter_power")
        connected = snapshot.values.get("ct_connected")
        if value is None or connected is False or not self.battery.available:
            # The CT's state flickers on some units (reference Q9): one bad poll must not put the optimiser
            # in its safe hold. The last good reading stands with its age, and only an old one is stale.
            if self.reading.at is not None:
                return self.reading
            return Reading(None, None, self.reading.source, f"{self.reading.source} gives no reading")
        implausible = implausible_power(value)
        if implausible:
            # A glitch, as from any other meter: the last good reading stands and ages out by itself.
            problem = f"{self.reading.source}: {implausible}"
            if problem != self.reading.problem:
                _LOG.warning("%s", problem)  # once per kind of glitch, not at every step
            self.reading.problem = problem
            return self.reading
        # As old as its own last read: a meter the battery stopped answering for (or one `auto` cannot read
        # while on Modbus) grows old and stale, while the battery's other values keep coming.
        read_at = snapshot.seen.get("meter_power", snapshot.updated_at)
        self.reading = Reading(value, read_at, self.reading.source)
        return self.reading


def coming_day(now: datetime) -> date:
    """The daylight the next night plan is for: today before noon (a plan made after midnight), else
    tomorrow."""
    return now.date() if now.time() < clock_time(12) else now.date() + timedelta(days=1)


class PvForecast:
    """Tomorrow's expected PV in kWh, from whatever source the options name; None when unknown."""

    def __init__(self, description: str, value: Callable[[], float | None] = lambda: None) -> None:
        self.description = description
        self.problem = ""  # why there is no forecast, for the log and the panel
        self._value = value

    def kwh(self) -> float | None:
        return self._value()

    def for_night(self, now: datetime) -> tuple[float | None, date | None]:
        """The PV expected in the daylight after the night at `now` (kWh), and the day that is; None: the
        day after `now`, as a "tomorrow" entity has it (after midnight the day after the coming one's)."""
        return self.kwh(), None

    def detail(self) -> dict[str, object]:
        return {"source": self.description, "problem": self.problem}
