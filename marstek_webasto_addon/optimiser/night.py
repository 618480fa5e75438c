"""Night charging: how much tomorrow needs, spread over the batteries and the cheapest quarter-hours.

deficit = desired stored energy at dawn - stored energy now - PV expected tomorrow, distributed over the
batteries by free room (emptiest first) and charged in the cheapest tariff period of the night, at the
lowest power that gets it done (a low power keeps the capacity-tariff peak low).
"""

from __future__ import annotations

import math
from datetime import date, datetime, time, timedelta

from .model import BatteryView, NightPlan
from .tariff import QUARTER, Tariff

MIN_CHARGE_W = 100  # below this a Passive set-point is not worth a write


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
        return now.date() - timedelta(days=1) if clock < day_start else None
    return now.date() - timedelta(days=1) if night_start <= clock < day_start else None


def night_quarters(evening: date, night_start: time, day_start: time) -> list[datetime]:
    """Every quarter-hour of the night that follows `evening`, from its start to the next day start."""
    morning = evening + timedelta(days=1)
    # a night starting after midnight starts on the morning's date, not on the evening's
    start = datetime.combine(evening if night_start > day_start else morning, night_start)
    end = datetime.combine(morning, day_start)
    out = []
    while start < end:
        out.append(start)
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
) -> NightPlan:
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
    quarters = [q for q in night_quarters(evening, night_start, day_start) if q + QUARTER > now]
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
        evening.isoformat(), deficit, expected_pv_wh, energy, power, _merge(sorted(windows)), period
    )


def _merge(quarters: list[datetime]) -> tuple[tuple[datetime, datetime], ...]:
    merged: list[tuple[datetime, datetime]] = []
    for start in quarters:
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], start + QUARTER)
        else:
            merged.append((start, start + QUARTER))
    return tuple(merged)


def target_soc(plan: NightPlan, battery: BatteryView, soc_at_plan: float) -> float:
    """Where charging stops for this battery."""
    return min(100.0, soc_at_plan + plan.energy_wh.get(battery.id, 0.0) / battery.capacity_wh * 100)
