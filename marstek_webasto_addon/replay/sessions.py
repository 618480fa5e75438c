"""The car's charging sessions, taken from an EV home-charging profile (what the car was given, and when).

- Arrival: the start of a run of nonzero charging (the profile charges as soon as the car is plugged in).
- Departure: the end of the stay the run lies in, where the profile says so (synPRO's trip counter is set
  from the trip that brings the car home until it leaves again: `data.load_ev_stays`); without it, the next
  morning's usual departure (07:00) after the run ended. Never after the next run begins, never before this
  one ended: the profile's own charging always fits in its session.
- Energy: what the profile charged in the run. The wallbox: at most the profile's highest power, at least
  6 A per phase (three phases above 3.7 kW, one below: the e-up charges on one).

`Visit` is a session in quarter-hour indices of the data year (a uniform clock: the data's CET), for the
replay and the bound; `CarSession` (local wall-clock times) is what the planner sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..optimiser.car_sessions import min_charge_kw

DEPARTURE_HOUR = 7  # when the car leaves in the morning, where the data does not say
SINGLE_PHASE_MAX_KW = 3.7  # 16 A on one phase


@dataclass(frozen=True)
class Visit:
    """One session in quarter-hour indices: plugged in from `arrival` to `departure` (exclusive)."""

    arrival: int
    departure: int
    energy_kwh: float
    max_kw: float
    min_kw: float


def wallbox_limits(power_w: Sequence[float]) -> tuple[float, float]:
    """The wallbox's maximum (the profile's highest power) and its minimum (6 A on its phases), kW."""
    max_kw = max(power_w, default=0.0) / 1000
    phases = 1 if max_kw <= SINGLE_PHASE_MAX_KW + 0.05 else 3
    return max_kw, min(max_kw, min_charge_kw(phases))


def visits(
    power_w: Sequence[float],
    stays: Sequence[int] | None = None,
    *,
    first_hour: int = 0,
    departure_hour: int = DEPARTURE_HOUR,
) -> tuple[Visit, ...]:
    """The sessions of a profile (W per quarter-hour); `stays`: per quarter the stay counter (0: none);
    `first_hour`: the hour of day of quarter 0 (for the morning departure)."""
    max_kw, min_kw = wallbox_limits(power_w)
    n = len(power_w)
    runs: list[tuple[int, int]] = []
    k = 0
    while k < n:
        if power_w[k] > 0:
            end = k
            while end < n and power_w[end] > 0:
                end += 1
            runs.append((k, end))
            k = end
        else:
            k += 1
    out = []
    for i, (begin, end) in enumerate(runs):
        limit = runs[i + 1][0] if i + 1 < len(runs) else n
        if stays is not None and stays[begin]:
            leave = begin
            while leave < n and stays[leave] == stays[begin]:
                leave += 1
        else:
            # the next morning's departure hour after the run ended (quarter `end` is the first without)
            hour = (first_hour * 4 + end) % 96
            leave = end + (departure_hour * 4 - hour) % 96
        leave = max(end, min(leave, limit))
        energy = sum(power_w[begin:end]) / 4000
        out.append(Visit(begin, leave, round(energy, 4), max_kw, min_kw))
    return tuple(out)


def clipped(found: Sequence[Visit], power_w: Sequence[float], first: int, last: int) -> tuple[Visit, ...]:
    """The sessions within quarters [first, last): one under way at `first` begins there, one still on at
    `last` ends there, each needing what the profile charged within the window (the replay bills only it)."""
    out = []
    for visit in found:
        arrival, departure = max(first, visit.arrival), min(last, visit.departure)
        if departure <= arrival:
            continue
        energy = sum(power_w[arrival:departure]) / 4000
        if energy > 0:
            out.append(Visit(arrival, departure, round(energy, 4), visit.max_kw, visit.min_kw))
    return tuple(out)


def peak_from_arrival_kw(visit: Visit, net_kw: Sequence[float], usable_kwh: float) -> float:
    """The lowest quarter-hour import any controller could keep during `visit`, from what the batteries held
    (`usable_kwh`, deliverable above their floor) when the car plugged in: the car's energy and the house's
    net load over the stay (`net_kw`: load - PV per data quarter, known exactly), less all of that stored
    energy, spread evenly over the stay. A stay's average import is never above its highest quarter.

    The perfect-foresight bound knows every arrival and fills the batteries for it; a controller that learns
    of a session at its plug-in can do no better than this from the state it is in then (with the stay's
    future known; PV a surplus sends elsewhere and the batteries' limits only raise it)."""
    hours = (visit.departure - visit.arrival) / 4
    if hours <= 0:
        return 0.0
    need = visit.energy_kwh + sum(net_kw[visit.arrival : visit.departure]) / 4 - usable_kwh
    return max(0.0, need / hours)
