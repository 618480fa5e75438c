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

`expected_session` is the car before it is there: from the site's past sessions, the stay it usually makes
next, so the plan keeps the batteries' energy for the house while the car charges. It is planned, never
charged: the wallbox waits for the car itself.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from .tariff import quarter_end

MIN_AMPS = 6.0
VOLTS = 230.0
NEXT_MAX_KW = 11.0
# A car is expected when it came on this many of the last EXPECT_DAYS days (fewer: no habit to plan on); once
# it is EXPECT_LATE late, it stays away today and is expected the next day.
EXPECT_MIN_DAYS = 4
EXPECT_DAYS = 28
EXPECT_LATE = timedelta(hours=2)
EXPECT_EARLY = timedelta(hours=4)  # a stay that began this long before the usual time was the usual stay
MINUTES_PER_DAY = 24 * 60
DEPARTURE_LEAD = timedelta(minutes=15)  # a departure set less than this after the plug-in is the next day's
# A session has slack while it needs less than SLACK_SHARE of the wallbox's full power until SLACK_CUSHION_H
# before its departure. With slack, the car is the load that waits when the house takes more than planned
# (the capacity cap holds it back, the next plan moves what it did not take); without, the plan's power goes
# through even past the month's target: the departure comes first, as the planner weighs a missing kWh far
# above any peak. The cushion keeps a long session that was held back quarter after quarter from having to
# make it all up at full power in its last quarters (a new peak then, and a car short at its departure).
SLACK_SHARE = 0.5
SLACK_CUSHION_H = 0.5
# The car's capacity cap aims this far under the month's target, live and in the replay: a quarter that ends
# exactly on it would set a new peak on the meter's watts more than the add-on counts (the planner's
# PEAK_MARGIN_KW for the batteries' set-points).
CAP_MARGIN_KW = 0.05


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
    expected: bool = False  # a stay the car usually makes (`expected_session`), not a car plugged in

    def __post_init__(self) -> None:
        if self.departure < self.arrival:
            raise ValueError(f"a car session departs before it arrives: {self.arrival} .. {self.departure}")
        if not 0 <= self.min_kw <= self.max_kw:
            raise ValueError(f"a wallbox's minimum {self.min_kw} kW is not within 0..{self.max_kw} kW")

    @property
    def hours(self) -> float:
        return (self.departure - self.arrival).total_seconds() / 3600


def has_slack(left_kwh: float, hours_left: float, max_kw: float) -> bool:
    """Whether a session that still needs `left_kwh` in `hours_left` may wait for the capacity cap."""
    return left_kwh < SLACK_SHARE * max_kw * (hours_left - SLACK_CUSHION_H)


def departure_floor_kwh(left_kwh: float, hours_left: float, rest_h: float, max_kw: float) -> float:
    """What a session without slack must still get in the running quarter's rest (`rest_h`): what half the
    wallbox's full power after it could not give by the departure (0: all of it could wait). The capacity cap
    holds such a session's car down to it, not below; the plan's own power was the floor before, and a house
    above its forecast set a new peak in the last quarters of a session that could have waited a little."""
    return max(0.0, left_kwh - SLACK_SHARE * max_kw * max(0.0, hours_left - rest_h))


def burst_hours(budget_kwh: float, rest_h: float, house_kw: float, car_kw: float) -> float:
    """How long the car may draw `car_kw` from now and then stop, with the quarter's import staying within
    `budget_kwh` (what is left of it) over its rest (`rest_h`); at most `rest_h`.

    The meter's quarter counts import only. A house that imports (`house_kw` >= 0) does so to the quarter's
    end, with the car or without; a house that exports lends the car its export only while the car runs:
    the export in the minutes the car is off does not count against the import. The replay's wallbox and
    the live capacity cap both decide a burst at the wallbox's minimum by this one rule."""
    with_car = car_kw + house_kw
    if with_car <= 0:
        return rest_h  # the house's export covers the car: nothing is imported
    on_h = (budget_kwh - house_kw * rest_h) / car_kw if house_kw >= 0 else budget_kwh / with_car
    return max(0.0, min(rest_h, on_h))


@dataclass(frozen=True)
class PastSession:
    """A stay that ended: plugged in at `arrival`, out at `departure`, `energy_kwh` charged."""

    arrival: datetime
    departure: datetime
    energy_kwh: float


def next_departure(clock: time, now: datetime, plugged_since: datetime | None = None) -> datetime:
    """When the car plugged in at `plugged_since` (None: not known) leaves, by the user's departure time of
    day: the first one more than DEPARTURE_LEAD after the plug-in (a car plugged in at 07:20 for 07:30
    leaves tomorrow) that has not passed yet. Counted from the plug-in, today's departure stays today's
    until it comes: in its last quarter-hour the car still charges for it, and a departure set 10 minutes
    ahead for a car plugged in since the evening means in 10 minutes. Counted from now, as with a car that
    was there before the add-on, it is tomorrow's from DEPARTURE_LEAD before it."""
    since = plugged_since if plugged_since is not None and plugged_since <= now else now
    departure = since.replace(hour=clock.hour, minute=clock.minute, second=0, microsecond=0)
    if departure <= since + DEPARTURE_LEAD:
        departure += timedelta(days=1)
    if departure <= now:  # passed (a car still there after its departure): the next one
        departure += timedelta(days=(now - departure) // timedelta(days=1) + 1)
    return departure


def expected_session(
    past: Sequence[PastSession],
    now: datetime,
    *,
    max_kw: float,
    min_kw: float,
    departure: time | None = None,
) -> CarSession | None:
    """The stay the car usually makes next, or None: it came on fewer than EXPECT_MIN_DAYS of the last
    EXPECT_DAYS days, or it has come already (a stay began at most EXPECT_EARLY before its usual time). Once
    it is more than EXPECT_LATE past its usual time, it is expected the next day. Each day counts once, by
    its biggest stay.

    - arrival: the median time of day of those days' arrivals, on the clock's circle (arrivals around
      midnight are not averaged to noon); the next quarter-hour once that time has passed;
    - departure: `departure` (the user's) after the arrival, else the arrival plus the median stay;
    - energy: the median of what the car took on those days, times the share of days it came. A car that
      comes every other day is planned for half a stay: a full stay that does not come costs the batteries'
      evening for the house, and one that comes is planned in full from its plug-in on.
    """
    recent = [s for s in past if now - timedelta(days=EXPECT_DAYS) <= s.arrival and s.departure <= now]
    days: dict[date, list[PastSession]] = {}
    for stay in recent:
        days.setdefault(stay.arrival.date(), []).append(stay)
    if len(days) < EXPECT_MIN_DAYS:
        return None
    main = [max(stays, key=lambda s: s.energy_kwh) for stays in days.values()]
    minute = _circular_median([s.arrival.hour * 60 + s.arrival.minute for s in main])
    usual = now.replace(hour=minute // 60, minute=minute % 60, second=0, microsecond=0)
    # yesterday's usual time still, when the car is late past midnight; else today's, or tomorrow's
    arrival = next(a for a in (usual + timedelta(days=d) for d in (-1, 0, 1)) if now <= a + EXPECT_LATE)
    if any(s.arrival > arrival - EXPECT_EARLY for s in past):
        return None
    if arrival < now:
        arrival = quarter_end(now)
    if departure is not None:
        leave = arrival.replace(hour=departure.hour, minute=departure.minute)
        leave += timedelta(days=1) if leave <= arrival else timedelta()
    else:
        stay_s = statistics.median((s.departure - s.arrival).total_seconds() for s in main)
        leave = arrival + timedelta(seconds=stay_s)
    share = min(1.0, len(days) / EXPECT_DAYS)
    energy = statistics.median(sum(s.energy_kwh for s in stays) for stays in days.values()) * share
    return CarSession(arrival, leave, energy, max_kw, min_kw, expected=True)


def _circular_median(minutes: Sequence[int]) -> int:
    """The median minute of the day, the day cut at the widest gap between the times (so 23:50 and 00:10
    lie together)."""
    ordered = sorted(m % MINUTES_PER_DAY for m in minutes)
    following = [*ordered[1:], ordered[0] + MINUTES_PER_DAY]
    gaps = [b - a for a, b in zip(ordered, following, strict=True)]
    first = ordered[(gaps.index(max(gaps)) + 1) % len(ordered)]
    unrolled = [m if m >= first else m + MINUTES_PER_DAY for m in ordered]
    return int(statistics.median(unrolled)) % MINUTES_PER_DAY


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
