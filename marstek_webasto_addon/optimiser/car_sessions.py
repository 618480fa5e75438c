"""The car at the wallbox as a load the planner may move: its charging sessions, and what a wallbox can do.

Pure: no I/O, no clock. (The live charge modes, which steer the wallbox minute by minute, are `car.py`.)

A `CarSession` is one stay at home: the car is plugged in from `arrival` to `departure` and needs
`energy_kwh` by then (a session under way passes what it still needs). The wallbox charges at 0 or between
`min_kw` and `max_kw`: the Webasto NEXT needs at least 6 A per phase (6 A x 3 x 230 V = 4.14 kW on three
phases, 1.38 kW on one) and gives at most its rated power (11 kW).

"0 or at least 4.14 kW" is not linear: the planner relaxes it to 0..max per quarter-hour (an LP without
integers), and `wallbox_minutes` carries out a planned quarter honestly: at the planned power when it is at
least the minimum, else at the minimum for the share of the quarter that gives the same energy, then off.
The quarter's energy and its average import (what the capacity tariff bills) are the plan's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

MIN_AMPS = 6.0
VOLTS = 230.0
NEXT_MAX_KW = 11.0


def min_charge_kw(phases: int) -> float:
    """The lowest power a wallbox can charge at: 6 A on each phase."""
    return MIN_AMPS * VOLTS * phases / 1000


@dataclass(frozen=True)
class CarSession:
    """One stay at home with the car plugged in. Local wall-clock times, kWh, kW."""

    arrival: datetime
    departure: datetime
    energy_kwh: float  # what the car still needs by its departure
    max_kw: float = NEXT_MAX_KW
    min_kw: float = min_charge_kw(3)  # when it charges at all

    def __post_init__(self) -> None:
        if self.departure < self.arrival:
            raise ValueError(f"a car session departs before it arrives: {self.arrival} .. {self.departure}")
        if not 0 <= self.min_kw <= self.max_kw:
            raise ValueError(f"a wallbox's minimum {self.min_kw} kW is not within 0..{self.max_kw} kW")

    @property
    def hours(self) -> float:
        return (self.departure - self.arrival).total_seconds() / 3600


@dataclass(frozen=True)
class SessionPlan:
    """What a plan gives a session: planned in the horizon, left for after it, and missing at departure."""

    session: CarSession
    planned_kwh: float  # charged within the horizon
    after_horizon_kwh: float  # the rest, for a departure beyond the horizon (within what the wallbox can)
    missing_kwh: float  # what cannot be charged by the departure, at the wallbox's full power

    @property
    def met(self) -> bool:
        return self.missing_kwh <= 0.01


def wallbox_power(kwh: float, minutes_left: int, min_kw: float, max_kw: float) -> float:
    """The power for the next minute (kW) that gives `kwh` over the quarter's `minutes_left` minutes as a
    wallbox can: spread evenly when that is at least the minimum (at most the maximum); below it, the minimum
    now, for the part of the minute that is left (the average over the minute: a wallbox switched off within
    it), then off."""
    if kwh <= 1e-9 or minutes_left <= 0:  # (a rounding error's crumb is nothing)
        return 0.0
    even = kwh * 60 / minutes_left
    if even >= min_kw:
        return min(even, max_kw)
    return min(min_kw, kwh * 60)


def wallbox_minutes(planned_kw: float, session: CarSession, minutes: int = 15) -> tuple[float, ...]:
    """A planned quarter-hour as a wallbox can carry it out, minute by minute (kW): the planned power when
    it is at least the minimum (at most the maximum); below the minimum, the minimum for as many minutes as
    give the planned energy (the last one in part), then nothing (`wallbox_power` minute by minute)."""
    if planned_kw >= session.min_kw:
        return (min(planned_kw, session.max_kw),) * minutes
    out = []
    kwh = max(0.0, planned_kw) * minutes / 60
    for minute in range(minutes):
        kw = wallbox_power(kwh, minutes - minute, session.min_kw, session.max_kw)
        out.append(kw)
        kwh -= kw / 60
    return tuple(out)
