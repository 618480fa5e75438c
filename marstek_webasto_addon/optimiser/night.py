"""Night charging: how much tomorrow needs, spread over the batteries and the cheapest quarter-hours.

deficit = desired stored energy at dawn - stored energy now - PV expected tomorrow, distributed over the
batteries by free room (emptiest first) and charged in the cheapest tariff period of the night, at the
lowest power that gets it done (a low power keeps the capacity-tariff peak low).

"Tomorrow" is the daylight after the night, the day after its evening: after midnight that is today, while
a "tomorrow" PV forecast read then (Forecast.Solar's energy production tomorrow) is the day after's. The
night's quarter-hours are real ones: the spring's missing hour is no time to charge in, the autumn's
repeated hour is charged in twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from .model import BatteryView, NightPlan
from .tariff import QUARTER, Tariff

MIN_CHARGE_W = 100  # below this a Passive set-point is not worth a write
DAY = timedelta(days=1)


def evening_of(now: datetime, night_start: time, day_start: time) -> date | None:
    """The date of the evening whose night `now` belongs to, or None during the day.

    The night runs from `night_start` to the next `day_start`: across midnight (22:00-07:00), or wholly
    after it (00:30-07:00, a night that still belongs to the evening before). Equal times make no night:
    read as a night of 24 hours, the day's rotation would never run.
    """
    clock = now.time()
    if night_start == day_start:
        return None
    if night_start > day_start:
        if clock >= night_start:
            return now.date()
        return now.date() - DAY if clock < day_start else None
    return now.date() - DAY if night_start <= clock < day_start else None


@dataclass(frozen=True)
class _Clock:
    """The clock the optimiser's `now` reads: aware in its own zone, or naive local time in `zone` (None:
    this process's local zone, which the Supervisor sets to Home Assistant's; the replay names its own, so
    its nights do not depend on the machine's zone)."""

    zone: tzinfo | None
    aware: bool

    @classmethod
    def of(cls, now: datetime, zone: tzinfo | None) -> _Clock:
        return cls(now.tzinfo, True) if now.tzinfo is not None else cls(zone, False)

    def instant(self, at: datetime) -> datetime:
        """The moment a wall-clock time names; `fold` tells the autumn's repeated hour apart."""
        if at.tzinfo is None and self.zone is not None:
            at = at.replace(tzinfo=self.zone)
        return at.astimezone(UTC)

    def wall(self, instant: datetime) -> datetime:
        """`instant` as this clock reads it."""
        if self.zone is None:
            # not astimezone(): its fixed-offset result loses the fold of the autumn's second pass
            return datetime.fromtimestamp(instant.timestamp())
        local = instant.astimezone(self.zone)
        return local if self.aware else local.replace(tzinfo=None)

    def combine(self, day: date, at: time) -> datetime:
        return self.instant(datetime.combine(day, at, self.zone if self.aware else None))


def night_quarters(evening: date, night_start: time, day_start: time, clock: _Clock) -> list[datetime]:
    """Every quarter-hour of the night that follows `evening`, from its start to the next day start, 15 real
    minutes apart on `clock`: the spring's night has none in the hour that does not exist and the autumn's
    has the repeated hour twice (the second pass with fold=1)."""
    morning = evening + DAY
    # a night starting after midnight starts on the morning's date, not on the evening's
    start = clock.combine(evening if night_start > day_start else morning, night_start)
    end = clock.combine(morning, day_start)
    out = []
    while start < end:
        out.append(clock.wall(start))
        start += QUARTER
    return out


def plan_night(
    evening: date,
    batteries: tuple[BatteryView, ...],
    desired_wh: float,
    expected_pv_wh: float,
    tariff: Tariff,
    night_start: time,
    day_start: time,
    now: datetime,
    *,
    pv_day: date | None = None,
    zone: tzinfo | None = None,
) -> NightPlan:
    """Tonight's plan at `now` (naive: local time in `zone`, None for this process's zone). `expected_pv_wh`
    is the PV forecast for `pv_day` (None: the day after `now`'s date, as a "tomorrow" forecast entity has
    it); a forecast for another day than the one after the night is not counted."""
    pv_note = ""
    if (pv_day or now.date() + DAY) != evening + DAY:
        # After midnight a "tomorrow" forecast is the day after's: a sunny day after would leave the coming
        # day's batteries empty, a grey one would buy what the coming sun gives. The coming day's PV is not
        # known then: as with no forecast at all, none is assumed (the batteries full at dawn, at worst some
        # cheap night energy exported later, rather than a house on the evening's peak price).
        expected_pv_wh = 0.0
        pv_note = "the forecast at hand is for another day than the coming one: none counted"
    online = [b for b in batteries if b.online and b.soc is not None]
    stored = sum(b.stored_wh for b in online)
    deficit = max(0.0, desired_wh - stored - expected_pv_wh)
    energy: dict[str, float] = {}
    remaining = deficit
    for battery in sorted(online, key=lambda b: b.room_wh, reverse=True):
        take = min(battery.room_wh, remaining)
        if take > 0:
            energy[battery.id] = take
            remaining -= take
    clock = _Clock.of(now, zone)
    moment = clock.instant(now)
    quarters = [
        q
        for q in night_quarters(evening, night_start, day_start, clock)
        if clock.instant(q) + QUARTER > moment
    ]
    windows: list[datetime] = []
    period = ""
    power: dict[str, int] = {}
    if energy and quarters:
        # the cheapest price level first; add dearer levels only while the batteries cannot charge fast enough
        by_price = sorted({tariff.price_at(q) for q in quarters})
        for price in by_price:
            windows += [q for q in quarters if tariff.price_at(q) == price]
            period = tariff.period_at(next(q for q in quarters if tariff.price_at(q) == price))
            hours = len(windows) * QUARTER.total_seconds() / 3600
            limits = {b.id: b.max_charge_w for b in online}
            if all(energy[i] / hours <= limits[i] for i in energy):
                break
        hours = len(windows) * QUARTER.total_seconds() / 3600
        for battery in online:
            if battery.id in energy:
                watts = math.ceil(energy[battery.id] / hours / 50) * 50  # a little margin, in 50 W steps
                power[battery.id] = max(MIN_CHARGE_W, min(battery.max_charge_w, watts))
    return NightPlan(
        evening.isoformat(),
        deficit,
        expected_pv_wh,
        energy,
        power,
        _merge(sorted(windows, key=clock.instant), clock),
        period,
        pv_note,
    )


def _merge(quarters: list[datetime], clock: _Clock) -> tuple[tuple[datetime, datetime], ...]:
    """Quarters in time order as windows; a quarter follows another 15 real minutes after it (naive times
    compare as the clock reads them, which would take the autumn's second pass for the first)."""
    merged: list[tuple[datetime, datetime]] = []
    for start in quarters:
        end = clock.wall(clock.instant(start) + QUARTER)
        if merged and clock.instant(merged[-1][1]) == clock.instant(start):
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return tuple(merged)


def target_soc(plan: NightPlan, battery: BatteryView, soc_at_plan: float) -> float:
    """Where charging stops for this battery."""
    return min(100.0, soc_at_plan + plan.energy_wh.get(battery.id, 0.0) / battery.capacity_wh * 100)
