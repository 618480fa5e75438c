"""Pure helpers that turn Home Assistant states and forecasts into the optimiser's numbers."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time, tzinfo
from typing import Any

# Factors to the base unit (W or Wh). Each name is unique under casefold, so a template sensor that reports
# "kwh" is still understood; mW/mWh are left out because they would collide with MW/MWh.
_POWER = {"W": 1.0, "kW": 1e3, "MW": 1e6, "GW": 1e9}
_ENERGY = {"Wh": 1.0, "kWh": 1e3, "MWh": 1e6, "GWh": 1e9}
_UNITS = {name.casefold(): (factor, table) for table in (_POWER, _ENERGY) for name, factor in table.items()}


def _unit(name: str) -> tuple[float, dict[str, float]] | None:
    return _UNITS.get(name.strip().casefold())


def numeric_state(state: str, unit_of_measurement: str | None, *, want_unit: str) -> float | None:
    """The state as a number in `want_unit` (W, kW, Wh or kWh); None when HA has no number for it.

    "unknown", "unavailable", "" and anything else that is not a finite number give None. A state without a
    unit is taken to be in `want_unit` already (template sensors often omit it). A unit of the other kind
    (an energy sensor where a power is wanted) or one we cannot convert raises ValueError: that is a
    configuration mistake to report, not missing data to wait out.
    """
    wanted = _unit(want_unit)
    if wanted is None:
        raise ValueError(f"cannot convert to {want_unit!r}: use one of {', '.join([*_POWER, *_ENERGY])}")
    try:
        value = float(state)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value):
        return None
    if unit_of_measurement is None or not unit_of_measurement.strip():
        return value
    have = _unit(unit_of_measurement)
    if have is None or have[1] is not wanted[1]:
        raise ValueError(f"a state in {unit_of_measurement!r} cannot be converted to {want_unit!r}")
    return value * have[0] / wanted[0]


def sunny_hours(
    forecast: Iterable[Mapping[str, Any]],
    day: date,
    start: time = time(7),
    end: time = time(20),
    *,
    tz: tzinfo | None = None,
) -> int:
    """How many hourly forecast entries of `day` with start <= hour < end have the condition "sunny".

    Entries carry ISO `datetime` strings, usually in UTC ("2025-11-25T06:00:00+00:00"); `day` and the window
    are local time in `tz` (None: this process's local zone, which the Supervisor sets to Home Assistant's).
    A naive `datetime` is taken to be local already. Entries without a readable datetime are skipped: one
    bad entry should cost one hour, not the whole forecast.
    """
    count = 0
    for entry in forecast:
        if entry.get("condition") != "sunny":
            continue
        try:
            moment = datetime.fromisoformat(str(entry["datetime"]))
            if moment.tzinfo is not None:
                # a "no date" sentinel (0001-01-01, 9999-12-31) may leave the calendar in the local zone
                moment = moment.astimezone(tz)
        except (KeyError, ValueError, OverflowError):
            continue
        if moment.date() == day and start <= moment.time() < end:
            count += 1
    return count
