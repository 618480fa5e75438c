"""The planner strategy, live: gathers the plan's inputs, re-plans when it should, keeps the day's ledger.

The planner itself is pure (`optimiser/planner.py`); this module feeds it:
- prices per quarter-hour: the tariff's periods (or a day-ahead price series, when one is configured);
- the house load: learned from the site's own quarter-hour history (`QuarterHistory`), the car taken out;
- PV: with a measured PV power, the shape of the last days' PV, tomorrow scaled to the PV forecast in kWh
  and today corrected by what the panels have given so far; without one, the learned load is the net load
  (house minus PV) and the PV forecast is zero, so nothing is counted twice;
- the wallbox: learned the same way, and left to the grid unless the batteries may feed the car;
- the batteries' state and the capacity tariff's month so far.

A new plan is made every clock quarter-hour, and at once when the set of batteries, the settings or the
prices change. Solving takes milliseconds (bench/planner_solve.py), so it runs on the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np

from ..optimiser.car_sessions import CarSession
from ..optimiser.forecast import load_forecast, load_high_forecast, pv_day_shape, pv_nowcast
from ..optimiser.model import BatteryView
from ..optimiser.planner import (
    PV_PLAN_FACTOR,
    QUARTER,
    BatterySpec,
    CapacityTariff,
    Plan,
    PlanInputs,
    Planner,
    PlanStep,
    horizon_steps,
)
from ..optimiser.settings import Settings
from ..optimiser.tariff import CapacityTracker, Tariff, quarter_start
from .ha_series import DayAheadPrices, DetailedPvForecast
from .quarter_history import QuarterHistory

_LOG = logging.getLogger(__name__)
FloatArray = np.ndarray[Any, np.dtype[np.float64]]
NO_PLAN = "the planner found no plan"
PV_SHAPE_DAYS = 7
PEAK_QUANTILE = 0.9  # the load the capacity reserve is kept for (the replay's setting)


def _bill(seconds: float, grid_w: float, buy: float, sell: float) -> float:
    """EUR for `seconds` of grid power (+ import at `buy`, - export at `sell`, per kWh)."""
    kw = grid_w / 1000
    return max(0.0, seconds) / 3600 * (buy * kw if kw > 0 else sell * kw)


@dataclass
class DayLedger:
    """Today's energy bill as it happened, and what it would have been without the batteries."""

    day: date | None = None
    cost_eur: float = 0.0
    without_batteries_eur: float = 0.0

    def add(
        self, at: datetime, seconds: float, grid_w: float, battery_w: float, buy: float, sell: float
    ) -> None:
        if at.date() != self.day:
            self.day, self.cost_eur, self.without_batteries_eur = at.date(), 0.0, 0.0
        self.cost_eur += _bill(seconds, grid_w, buy, sell)
        self.without_batteries_eur += _bill(seconds, grid_w + battery_w, buy, sell)

    def snapshot(self) -> dict[str, Any]:
        return {
            "day": None if self.day is None else self.day.isoformat(),
            "cost_eur": round(self.cost_eur, 5),
            "without_batteries_eur": round(self.without_batteries_eur, 5),
        }

    @classmethod
    def restored(cls, saved: object) -> DayLedger:
        if not isinstance(saved, dict):
            return cls()
        try:
            day = date.fromisoformat(str(saved["day"])) if saved.get("day") else None
            return cls(day, float(saved["cost_eur"]), float(saved["without_batteries_eur"]))
        except (KeyError, TypeError, ValueError):
            return cls()


@dataclass
class MonthLedger:
    """This month's energy bill and what it would have been without the batteries, with the capacity
    tariff's quarter-hour peaks the meter would have shown without them (the counterfactual meter)."""

    month: str | None = None  # "YYYY-MM"
    energy_eur: float = 0.0
    energy_without_eur: float = 0.0
    without: CapacityTracker = field(default_factory=CapacityTracker)

    def add(
        self, at: datetime, seconds: float, grid_w: float, battery_w: float, buy: float, sell: float
    ) -> None:
        month = f"{at:%Y-%m}"
        if month != self.month:
            self.month, self.energy_eur, self.energy_without_eur = month, 0.0, 0.0
        self.energy_eur += _bill(seconds, grid_w, buy, sell)
        self.energy_without_eur += _bill(seconds, grid_w + battery_w, buy, sell)
        self.without.add(at, seconds, grid_w + battery_w)

    def snapshot(self) -> dict[str, Any]:
        return {
            "month": self.month,
            "energy_eur": round(self.energy_eur, 5),
            "energy_without_eur": round(self.energy_without_eur, 5),
            "without": self.without.snapshot(),
        }

    @classmethod
    def restored(cls, saved: object) -> MonthLedger:
        if not isinstance(saved, dict):
            return cls()
        try:
            month = saved.get("month")
            return cls(
                month if isinstance(month, str) else None,
                float(saved["energy_eur"]),
                float(saved["energy_without_eur"]),
                CapacityTracker.restored(saved.get("without")),
            )
        except (KeyError, TypeError, ValueError):
            return cls()


@dataclass(frozen=True)
class MonthMoney:
    """This month so far, in EUR: the capacity tariff's share of it and the saving against no batteries."""

    capacity_eur: float  # this month's share of the capacity bill at the peak so far
    saving_eur: float  # energy and capacity, against the same month without the batteries
    peak_kw: float
    peak_without_kw: float


@dataclass(frozen=True)
class PlanSummary:
    """What the plan entities and the panel show."""

    action: str
    reason: str
    next_change: str  # "discharge at 17:00", or "" when the plan does not change in its horizon
    next_change_at: datetime | None
    cost_today_eur: float  # so far + planned for the rest of today
    cost_tomorrow_eur: float | None  # None when the plan does not reach tomorrow's end
    saving_today_eur: float  # against the same day without batteries (so far + planned)
    month_peak_target_kw: float | None
    made_at: datetime
    status: str


@dataclass
class LivePlanner:
    tariff: Tariff
    history: QuarterHistory = field(default_factory=QuarterHistory)
    ledger: DayLedger = field(default_factory=DayLedger)
    month: MonthLedger = field(default_factory=MonthLedger)
    day_ahead: DayAheadPrices | None = None  # None: the tariff's periods
    pv_detail: DetailedPvForecast | None = None  # a PV forecast per quarter-hour (with a measured PV)
    pv_measured: bool = False
    # Solved on the event loop (a few ms): a pathological solve ends after 2 s as "no plan" (rules meanwhile).
    planner: Planner = field(default_factory=lambda: Planner(time_limit_s=2.0))
    plan: Plan | None = None
    problem: str = ""  # why there is no plan
    _key: tuple[Any, ...] = ()
    # The inputs a solve found no plan for: not solved again until they change (a solve that ran into its
    # time limit would otherwise stall the event loop for that long at every control step).
    _failed_key: tuple[Any, ...] | None = None

    # inputs ------------------------------------------------------------------------------------------

    def observe(
        self,
        at: datetime,
        seconds: float,
        *,
        grid_w: float | None,
        battery_w: float,
        pv_w: float | None,
        wallbox_w: float | None,
    ) -> None:
        """One control interval's readings: into the history, and the ledger at the prices in force."""
        if grid_w is None:
            self.history.observe(at, seconds, {})
            return
        wallbox = wallbox_w or 0.0
        net = grid_w + battery_w - wallbox  # the house minus its PV
        if self.pv_measured:
            house = None if pv_w is None else max(0.0, net + pv_w)
            self.history.observe(at, seconds, {"house": house, "pv": pv_w, "wallbox": wallbox})
        else:
            self.history.observe(at, seconds, {"house": net, "wallbox": wallbox})
        buy, sell = self.prices_at(at)
        self.ledger.add(at, seconds, grid_w, battery_w, buy, sell)
        self.month.add(at, seconds, grid_w, battery_w, buy, sell)

    def month_money(self, now: datetime, peak_kw: float) -> MonthMoney | None:
        """This month so far, from the ledger and the meter's actual month peak (`peak_kw`)."""
        if self.month.month != f"{now:%Y-%m}":
            return None
        per_kw = self.tariff.capacity_price / 12
        floor = self.tariff.capacity_floor_kw
        without_peak = self.month.without.month_peak_kw
        capacity = max(floor, peak_kw) * per_kw
        capacity_without = max(floor, without_peak) * per_kw
        energy_saving = self.month.energy_without_eur - self.month.energy_eur
        return MonthMoney(
            round(capacity, 2), round(energy_saving + capacity_without - capacity, 2), peak_kw, without_peak
        )

    def prices_at(self, at: datetime) -> tuple[float, float]:
        if self.day_ahead is not None and (series := self.day_ahead.series(at, 1)) is not None:
            return series[0][0], series[1][0]
        return self.tariff.price_at(at), self.tariff.injection_price

    def _price_series(self, start: datetime, steps: int) -> tuple[Sequence[float], Sequence[float]]:
        """Day-ahead prices as far as they are known (at least the rest of today), else the tariff's."""
        if self.day_ahead is not None and (series := self.day_ahead.series(start, steps)) is not None:
            return series
        times = [quarter_start(start) + i * QUARTER for i in range(steps)]
        return [self.tariff.price_at(t) for t in times], [self.tariff.injection_price] * steps

    def _pv(self, now: datetime, steps: int, tomorrow_kwh: float | None) -> FloatArray:
        """The detailed forecast where it reaches, corrected by today's PV so far; then the learned shape."""
        learned = self._learned_pv(now, steps, tomorrow_kwh)
        detail = self.pv_detail.quarters(now, steps) if self.pv_detail is not None else None
        if detail is None or not self.pv_measured:
            return learned
        forecast = learned.copy()
        forecast[: len(detail)] = detail
        first = now.hour * 4 + now.minute // 15
        assert self.pv_detail is not None
        so_far = self.pv_detail.quarters(now.replace(hour=0, minute=0, second=0, microsecond=0), first)
        if first > 0 and so_far is not None and len(so_far) == first:
            seen = self.history.series("pv", now)[-first:]
            known = ~np.isnan(seen)
            forecast = pv_nowcast(forecast, np.asarray(so_far)[known], seen[known], 96 - first)
        return forecast

    def _learned_pv(self, now: datetime, steps: int, tomorrow_kwh: float | None) -> FloatArray:
        if not self.pv_measured:
            return np.zeros(steps)
        past = self.history.series("pv", now)
        days = past[-PV_SHAPE_DAYS * 96 :]
        whole = len(days) // 96 * 96
        first = now.hour * 4 + now.minute // 15
        by_day = days[len(days) - whole :].reshape(-1, 96)
        seen = ~np.isnan(by_day)
        if whole and seen.sum() >= 96:
            by_column = np.where(
                seen.sum(axis=0) > 0, np.nansum(by_day, axis=0) / np.maximum(seen.sum(axis=0), 1), 0.0
            )
            # `days` ends with the quarter before now, so its rows start at now's quarter of the day:
            # the shape by quarter of the day is the column mean rolled by that much
            shape = np.roll(by_column, first)
        elif tomorrow_kwh is not None:
            # Not a day of PV seen yet (the first day): a clear-sky day's shape, today like tomorrow.
            shape = pv_day_shape(now.date()) * tomorrow_kwh * 4
        else:
            return np.zeros(steps)
        forecast = shape[(first + np.arange(steps)) % 96].astype(np.float64)
        left_today = 96 - first
        if tomorrow_kwh is not None and shape.sum() > 0:
            tomorrow = slice(left_today, min(steps, left_today + 96))
            forecast[tomorrow] *= tomorrow_kwh / (shape.sum() / 4)
        if first > 0:
            today_so_far = past[-first:]
            shape_so_far = shape[:first]
            known = ~np.isnan(today_so_far)
            forecast = pv_nowcast(forecast, shape_so_far[known], today_so_far[known], left_today)
        return forecast

    # planning ----------------------------------------------------------------------------------------

    def step(
        self,
        now: datetime,
        views: Sequence[BatteryView],
        capacity: CapacityTracker,
        settings: Settings,
        pv_tomorrow_kwh: float | None,
        car: tuple[CarSession, ...] = (),
        *,
        car_planned: bool = False,
    ) -> PlanStep | None:
        """The running step of the plan in force, re-planned when due. `car`: the car's sessions (plugged in
        or expected); `car_planned`: a wallbox is in `plan` mode, so its car is never a fixed forecast."""
        usable = tuple(v for v in views if v.online and v.soc is not None)
        key = (
            # a car plugged in or out (or expected), another departure, or a kWh more or less wanted: a new
            # plan (a real car's arrival is "now" in every call, an expected one's is not)
            tuple(
                (c.arrival if c.expected else None, c.departure, round(c.energy_kwh), c.max_kw) for c in car
            ),
            car_planned,
            quarter_start(now),
            tuple(v.id for v in usable),
            settings.wear_cost,
            settings.batteries_feed_car,
            None if pv_tomorrow_kwh is None else round(pv_tomorrow_kwh, 1),
            self.day_ahead.version if self.day_ahead is not None else 0,
            self.pv_detail.version if self.pv_detail is not None else 0,
        )
        if key != self._key or (self.plan is None and key != self._failed_key):
            # A plan that raised leaves none (an older plan would go on steering the car unseen) and is
            # tried again at the next step; a solve that found none, at the next quarter or input change.
            try:
                self._replan(now, usable, capacity, settings, pv_tomorrow_kwh, car, car_planned)
            except Exception as exc:
                self.plan, self.problem = None, f"the planner failed: {exc}"
                self.planner.forget()  # the next try starts from a new solver, not from what may have broken
                raise
            self._key = key
            self._failed_key = key if self.plan is None and self.problem.startswith(NO_PLAN) else None
        plan = self.plan
        if plan is None:
            return None
        first = plan.first
        if first is not None and first.start <= now < first.end:
            return first
        return plan.step_at(now)

    def _replan(
        self,
        now: datetime,
        usable: Sequence[BatteryView],
        capacity: CapacityTracker,
        settings: Settings,
        pv_tomorrow_kwh: float | None,
        car: tuple[CarSession, ...] = (),
        car_planned: bool = False,
    ) -> None:
        if not usable:
            self.plan, self.problem = None, "no battery online"
            return
        steps = horizon_steps(now)
        quarter_of_day = now.hour * 4 + now.minute // 15
        house = self.history.series("house", now)
        import_price, export_price = self._price_series(now, steps)
        steps = min(steps, len(import_price))
        if self.pv_measured:
            load = load_forecast(house, steps, quarter_of_day=quarter_of_day)
            pv = self._pv(now, steps, pv_tomorrow_kwh)
        else:
            # Only the net flow is known: its forecast goes negative where the panels usually win.
            net = load_forecast(house, steps, quarter_of_day=quarter_of_day, floor=None)
            load, pv = np.maximum(net, 0.0), np.maximum(-net, 0.0)
        wallbox = self.history.series("wallbox", now)
        month_so_far = _month_so_far(capacity, now)
        # The car's habits as a fixed forecast, unless it is planned: then its session (plugged in, or the
        # expected one) is a variable, and without one no car is assumed. A mean of the planned charging,
        # a car in every night whether it comes or not, cost the year replay EUR 19 (Tesla) and 10 (VW).
        has_car = bool(np.nansum(wallbox) > 0) and not car and not car_planned
        inputs = PlanInputs(
            start=now,
            import_price=import_price[:steps],
            export_price=export_price[:steps],
            load_kw=load,
            pv_kw=pv,
            pv_plan_factor=PV_PLAN_FACTOR,
            wallbox_kw=load_forecast(
                np.nan_to_num(wallbox), steps, quarter_of_day=quarter_of_day, persistence=0.0
            )
            if has_car
            else (),
            batteries=tuple(_spec(v) for v in usable),
            capacity=CapacityTariff(self.tariff.capacity_price, self.tariff.capacity_floor_kw, *month_so_far)
            if self.tariff.capacity_price > 0
            else None,
            wear_cost_per_kwh=settings.wear_cost,
            batteries_cover_wallbox=settings.batteries_feed_car,
            load_high_kw=load_high_forecast(house, steps, quantile=PEAK_QUANTILE),
            car=car,
        )
        plan = self.planner.plan(inputs)
        if plan.status != "optimal":
            problem = f"{NO_PLAN}: {plan.status}"
            if problem != self.problem:  # once per kind of failure, not at every quarter it lasts
                _LOG.warning("optimiser: %s; rotation by the rules until there is one", problem)
            self.plan, self.problem = None, problem
            self.planner.forget()
            return
        if self.problem.startswith(NO_PLAN):
            _LOG.info("optimiser: the planner has a plan again")
        self.plan, self.problem = plan, ""

    # what it shows -----------------------------------------------------------------------------------

    def summary(self, now: datetime) -> PlanSummary | None:
        plan = self.plan
        if plan is None:
            return None
        steps = plan.steps
        current = next((s for s in steps if s.start <= now < s.end), steps[0] if steps else None)
        if current is None:
            return None
        later = next((s for s in steps if s.start > now and s.action is not current.action), None)
        today, tomorrow = now.date(), now.date() + timedelta(days=1)
        rest_today = [s for s in steps if s.start.date() == today and s.end > now]
        tomorrow_steps = [s for s in steps if s.start.date() == tomorrow]
        # the running step is partly behind us: the ledger has that part
        left = {id(s): _share_left(s, now) for s in rest_today}
        planned_today = sum(s.cost_eur * left[id(s)] for s in rest_today)
        without_today = sum(_without_batteries(s) * left[id(s)] for s in rest_today)
        ledger = self.ledger if self.ledger.day == today else DayLedger()
        reaches_tomorrow_end = bool(tomorrow_steps) and tomorrow_steps[-1].end.date() > tomorrow
        month = f"{now:%Y-%m}"
        change = "" if later is None else f"{later.action.value.replace('_', ' ')} at {later.start:%H:%M}"
        return PlanSummary(
            action=current.action.value,
            reason=current.reason,
            next_change=change,
            next_change_at=None if later is None else later.start,
            cost_today_eur=round(ledger.cost_eur + planned_today, 2),
            cost_tomorrow_eur=round(sum(s.cost_eur for s in tomorrow_steps), 2)
            if reaches_tomorrow_end
            else None,
            saving_today_eur=round(
                ledger.without_batteries_eur - ledger.cost_eur + without_today - planned_today, 2
            ),
            month_peak_target_kw=plan.month_peaks_kw.get(month),
            made_at=plan.start,
            status=plan.status,
        )

    def as_json(self) -> dict[str, Any]:
        """The quarter series for the panel's chart and `GET api/plan`."""
        plan = self.plan
        if plan is None:
            return {"status": self.problem or "no plan yet", "steps": []}
        return {
            "status": plan.status,
            "made_at": plan.start.astimezone().isoformat(timespec="seconds"),
            "energy_cost_eur": round(plan.energy_cost_eur, 3),
            "capacity_cost_eur": round(plan.capacity_cost_eur, 3),
            "month_peaks_kw": {k: round(v, 3) for k, v in plan.month_peaks_kw.items()},
            "terminal_value_per_kwh": round(plan.terminal_value_per_kwh, 4),
            "notes": list(plan.notes),
            "batteries": [b.id for b in plan.batteries],
            "steps": [
                {
                    "start": s.start.astimezone().isoformat(timespec="minutes"),
                    "hours": round(s.hours, 4),
                    "import_price": round(s.import_price, 4),
                    "export_price": round(s.export_price, 4),
                    "load_kw": round(s.load_kw, 3),
                    "pv_kw": round(s.pv_kw, 3),
                    "wallbox_kw": round(s.wallbox_kw, 3),
                    "battery_kw": round(s.battery_kw, 3),
                    "grid_kw": round(s.grid_kw, 3),
                    "cost_eur": round(s.cost_eur, 4),
                    "action": s.action.value,
                    "reason": s.reason,
                    "soc": {b.id: round(b.soc, 1) for b in s.batteries},
                }
                for s in plan.steps
            ],
        }


def _month_so_far(capacity: CapacityTracker, now: datetime) -> tuple[float, float]:
    """The month's peak (kW) as the meter has it at `now`, and the running quarter's offtake so far (kWh).

    The controller plans before the engine accounts its step: at a quarter's first step the tracker has
    not closed the quarter before (whose average the meter has already billed), and at a month's first step
    it still holds the month before, whose peak is no headroom in this one.
    """
    quarter, month = quarter_start(now), (now.year, now.month)
    peak = capacity.month_peak_kw if capacity.month == month else capacity.peaks.get(month, 0.0)
    last = capacity.quarter
    if last is not None and last < quarter and (last.year, last.month) == month:
        peak = max(peak, capacity.quarter_import_wh / 250)  # Wh per 0.25 h -> kW
    return peak, capacity.quarter_import_wh / 1000 if last == quarter else 0.0


def _share_left(step: PlanStep, now: datetime) -> float:
    if step.start >= now:
        return 1.0
    total = (step.end - step.start).total_seconds()
    return max(0.0, (step.end - now).total_seconds() / total) if total > 0 else 0.0


def _without_batteries(step: PlanStep) -> float:
    net = step.load_kw + step.wallbox_kw - step.pv_kw
    price = step.import_price if net > 0 else step.export_price
    return step.hours * net * price


def _spec(view: BatteryView) -> BatterySpec:
    return BatterySpec(
        id=view.id,
        capacity_kwh=view.capacity_wh / 1000,
        soc=min(100.0, max(0.0, view.soc or 0.0)),
        soc_min=min(view.soc_floor, 100.0),
        max_charge_kw=view.max_charge_w / 1000,
        max_discharge_kw=view.max_discharge_w / 1000,
    )
