"""Run the optimiser, the rules and the baselines over a household year against simulated Venus batteries.

The batteries are the simulator's own (physics and EMS: Auto regulation, Passive with countdown, schedules),
commanded through their JSON-RPC handler exactly as on the wire. Every minute the meter is read, the
controller's commands are applied, the batteries step, and the grid flow is billed: energy at the quarter's
import or export price, and the capacity tariff on the meter's clock-aligned quarter-hours.

Scenarios:
- `optimiser` (the add-on's default strategy): the planner re-plans every 15 simulated minutes over the rest
  of today and tomorrow, with forecasts it could really have had (the load learned from the replay's past,
  PV from a forecast with a seeded error, corrected during the day by the PV seen), and carries out the
  running quarter as the live layer will (`planner.setpoint`): self-consumption with one battery in Auto
  and the others following in Passive, the other steps in Passive at the power worked out from the meter
  each minute, shared with `split_power`;
  With a car (`--ev`) and `car_mode="plan"`, the car's sessions (`replay.sessions`) are the planner's:
  each is known from its arrival on (its departure and energy, as a driver would tell the wallbox), the
  planner plans its power, and the wallbox, which the battery engine does not steer, has its own small
  executor (`CarExecutor`): it charges as a wallbox can (`car_sessions.wallbox_power`), and while the
  session has slack only in the room the house leaves under the month's planned peak; the engine sees the
  wallbox's power as live. The other scenarios, and `car_mode="fixed"`, charge the car as the profile did;
- `rules`: the rule engine (rotation, night charging, overflow, peak assist, ...);
- `no_battery`, `auto_one` (one battery in its own Auto), `auto_all` (every battery in Auto).
"""

from __future__ import annotations

import calendar
import json
import time
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np

from ..devices.marstek.simulator.device import SimulatedBattery, ticking_order
from ..devices.marstek.simulator.physics import BatteryPhysics, PhaseTriple, Site
from ..devices.marstek.simulator.profiles import PROFILES
from ..optimiser.car_sessions import (
    CAP_MARGIN_KW,
    EXPECT_DAYS,
    CarSession,
    PastSession,
    burst_hours,
    departure_floor_kwh,
    expected_session,
    has_slack,
    wallbox_power,
)
from ..optimiser.engine import Optimiser
from ..optimiser.forecast import load_forecast, load_high_forecast, pv_forecast_with_error, pv_nowcast
from ..optimiser.model import BatteryView, Command, Inputs, Role
from ..optimiser.planner import (
    PV_PLAN_FACTOR,
    QUARTER,
    QUARTER_H,
    BatterySpec,
    CapacityTariff,
    PlanInputs,
    Planner,
    PlanStep,
    horizon_steps,
)
from ..optimiser.settings import Settings
from ..optimiser.tariff import Tariff
from .data import QUARTERS, HouseholdYear
from .prices import LOCAL, FloatArray, PriceYear, local_times, tariff_prices
from .sessions import Visit, clipped, peak_from_arrival_kw, visits

SCENARIOS = ("optimiser", "rules", "no_battery", "auto_one", "auto_all")
CAR_MODES = ("fixed", "plan")  # the car as the profile charged it, or its sessions planned by the optimiser
MET_TOLERANCE_KWH = 0.05
SETTLE_S = 5
DAY_AHEAD_PUBLISHED_HOUR = 13
HISTORY_QUARTERS = 6 * 7 * 96  # what the load learner looks back on
MINUTES = 15  # the wallbox's steps in a quarter-hour


class DataHousehold:
    """The simulator's Household interface, fed from a data year (the meter sums the phases)."""

    def __init__(self, year: HouseholdYear, pv_kwp: float) -> None:
        self.year = year
        self.pv_kwp = pv_kwp
        self.quarter = 0

    def load_w(self, at: datetime) -> PhaseTriple:
        third = self.year.load_w[self.quarter] / 3
        return (third, third, third)

    def pv_w(self, at: datetime) -> PhaseTriple:
        third = self.year.pv_w[self.quarter] / 3
        return (third, third, third)

    def wallbox_w(self) -> PhaseTriple:
        third = self.year.ev_w[self.quarter] / 3 if self.year.ev_w else 0.0
        return (third, third, third)


@dataclass
class Trace:
    """Minute samples for the plot."""

    at: list[datetime] = field(default_factory=list)
    load: list[float] = field(default_factory=list)
    pv: list[float] = field(default_factory=list)
    grid: list[float] = field(default_factory=list)
    battery_power: dict[str, list[float]] = field(default_factory=dict)
    soc: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Totals:
    import_wh: float = 0.0
    export_wh: float = 0.0
    energy_cost: float = 0.0
    load_wh: float = 0.0
    pv_wh: float = 0.0
    switches: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))  # (battery, hour)
    two_in_auto_minutes: int = 0
    limit_violations: int = 0
    soc_violations: int = 0
    decisions: int = 0
    quarter_import_wh: float = 0.0
    peaks: dict[tuple[int, int], float] = field(default_factory=dict)  # month -> highest quarter, kW
    plans: int = 0
    plans_without_steps: int = 0  # not solved: the batteries went back to Auto for that quarter
    plan_seconds: list[float] = field(default_factory=list)
    car_wh: float = 0.0
    battery_to_car_wh: float = 0.0  # the batteries' output beyond the house's own need, into the car
    month_energy_cost: dict[tuple[int, int], float] | None = None  # kept when `run` is asked for months


@dataclass(frozen=True)
class PlannerSetup:
    """How the `optimiser` scenario plans: forecasts, values and the car."""

    pv_error_sigma: float = 0.3  # the PV forecast's day-to-day error (log-normal)
    pv_error_seed: int = 1
    peak_quantile: float = 0.9  # the load the capacity reserve is kept for (0: no reserve)
    nowcast: bool = True  # today's PV forecast corrected by the PV seen so far today
    pv_plan_factor: float = PV_PLAN_FACTOR  # the PV the plan counts on, times the forecast
    terminal_value_per_kwh: float | None = None  # None: the planner's default
    wear_cost_per_kwh: float = 0.0
    feed_car: bool = False  # the batteries may cover the wallbox


@dataclass(frozen=True)
class ReplaySetup:
    batteries: int = 3
    profile: str = "venus_e3_v150"
    start_soc: float = 50.0
    step_s: int = 60
    # the rule engine's settings; the `optimiser` scenario runs the same engine with method "planner"
    settings: Settings = field(default_factory=lambda: Settings(enabled=True, method="rules"))
    planner: PlannerSetup = field(default_factory=PlannerSetup)
    car_mode: str = "fixed"  # see CAR_MODES


def _config(command: Command) -> dict[str, Any]:
    if command.role is Role.AUTO:
        return {"mode": "Auto", "auto_cfg": {"enable": 1}}
    return {"mode": "Passive", "passive_cfg": {"power": command.power_w, "cd_time": command.duration_s}}


def _send(battery: SimulatedBattery, config: dict[str, Any], now_s: float) -> None:
    request = {"id": 1, "method": "ES.SetMode", "params": {"id": 0, "config": config}}
    battery.handle(json.dumps(request).encode(), ("127.0.0.1", 1), now_s)


def _execute(battery: SimulatedBattery, command: Command, now_s: float) -> None:
    if command.clear_schedules:
        before = battery.mode
        for slot in range(10):
            config = {
                "mode": "Manual",
                "manual_cfg": {
                    "time_num": slot,
                    "start_time": "00:00",
                    "end_time": "00:00",
                    "week_set": 0,
                    "power": 0,
                    "enable": 0,
                },
            }
            _send(battery, config, now_s)
        # As the controller does: clearing must not leave the battery idle, so its role goes out again.
        if before in ("Auto", "AI"):
            _send(battery, {"mode": before, f"{before.lower()}_cfg": {"enable": 1}}, now_s)
        elif before == "Passive" and battery.passive_until > now_s:
            left = int(battery.passive_until - now_s)
            _send(
                battery,
                {"mode": "Passive", "passive_cfg": {"power": battery.passive_power, "cd_time": left}},
                now_s,
            )
        return
    _send(battery, _config(command), now_s)


def _view(battery: SimulatedBattery, index: int) -> BatteryView:
    p = battery.physics
    return BatteryView(
        id=battery.ble_mac,
        name=f"B{index + 1}",
        online=True,
        soc=float(round(p.soc)),
        capacity_wh=p.capacity_wh,
        soc_floor=p.soc_floor,
        max_charge_w=int(p.max_charge_w),
        max_discharge_w=int(p.max_discharge_w),
        ac_power=p.ac_power,
        mode=battery.mode,
    )


class CarExecutor:
    """The wallbox when the planner plans the car (`car_mode="plan"`): the car's own small executor, beside
    the battery engine (which only sees the wallbox's power). It knows each session from its arrival on,
    tells the planner what the session still needs, and charges the running quarter as planned, as a
    wallbox can."""

    def __init__(self, found: tuple[Visit, ...], clock: tuple[datetime, ...] | None = None) -> None:
        self.visits = found  # in the order of their arrivals, as `sessions.visits` finds them
        self.arrivals = [v.arrival for v in found]
        self.clock = clock  # the data's local wall-clock time per quarter (the stays' times, as logged live)
        self.delivered: dict[int, float] = {}  # session index -> kWh charged
        self.quarter_kwh = 0.0  # what the running quarter's plan gives the car
        self.quarter_given = 0.0  # and what the wallbox gave it so far
        self.visit: int | None = None  # the session under way
        self.step: PlanStep | None = None

    def sessions(self, quarter: int, now: datetime) -> tuple[CarSession, ...]:
        """The session under way (known from its arrival), with what it still needs; times on the planner's
        clock (its steps are `now` + k quarter-hours)."""
        self.visit = None
        arrived = bisect_right(self.arrivals, quarter)  # the visits that arrived by now
        if arrived and quarter < self.visits[arrived - 1].departure:
            self.visit = arrived - 1
            visit = self.visits[self.visit]
            left = max(0.0, visit.energy_kwh - self.delivered.get(self.visit, 0.0))
            return (
                CarSession(
                    now + (visit.arrival - quarter) * QUARTER,
                    now + (visit.departure - quarter) * QUARTER,
                    left,
                    visit.max_kw,
                    visit.min_kw,
                ),
            )
        # No car: the stay it usually makes next, from the stays seen so far (as live: from its log).
        first = bisect_left(self.arrivals, quarter - EXPECT_DAYS * 96)
        past = [
            PastSession(
                self._at(v.arrival, quarter, now),
                self._at(v.departure, quarter, now),
                self.delivered.get(i, 0.0),
            )
            for i, v in enumerate(self.visits[first:arrived], start=first)
            if v.departure <= quarter
        ]
        if not self.visits:
            return ()
        wallbox = self.visits[0]  # (every visit has the profile's wallbox limits)
        expected = expected_session(past, now, max_kw=wallbox.max_kw, min_kw=wallbox.min_kw)
        return () if expected is None else (expected,)

    def _at(self, index: int, quarter: int, now: datetime) -> datetime:
        if self.clock is not None and index < len(self.clock):
            return self.clock[index]
        return now + (index - quarter) * QUARTER

    def planned(self, step: PlanStep | None, sessions: tuple[CarSession, ...]) -> None:
        """The running quarter's plan for the wallbox; without a plan it charges at full power, as a plain
        wallbox would."""
        self.step = step
        self.quarter_given = 0.0
        if not sessions or sessions[0].expected:  # an expected car is planned, not charged
            self.quarter_kwh = 0.0
            return
        kw = step.car_kw if step is not None else sessions[0].max_kw
        self.quarter_kwh = max(0.0, kw) * QUARTER_H

    def power_kw(
        self, quarter: int, minute: int, hours: float, house_grid_kw: float, imported_kwh: float = 0.0
    ) -> float:
        """The wallbox's power in this minute of the running quarter, never more than the car still needs.

        It gives the quarter's planned energy as a wallbox can (`car_sessions.wallbox_power`: evenly, or at
        its minimum while it lasts); in the session's last quarter whatever is left. The car is the load that
        can wait: while its session has slack, it takes only what the quarter's import (`imported_kwh` so
        far, the house's `house_grid_kw` without the car for the rest) leaves under the month's planned
        peak, below its minimum for as much of the minute as the quarter has room for, and the next plan
        moves what it did not take. A house load above its forecast then sets no new peak. Without slack
        it is held down only to what its departure needs now (`car_sessions.departure_floor_kwh`), as the
        add-on's car control does."""
        if self.visit is None or minute >= MINUTES:
            return 0.0
        visit = self.visits[self.visit]
        left = visit.energy_kwh - self.delivered.get(self.visit, 0.0)
        want = self.quarter_kwh - self.quarter_given
        if visit.departure - quarter <= 1:
            want = left  # the session's last quarter: what the plan and the minutes' rounding left
        minutes_left = MINUTES - minute
        kw = wallbox_power(min(want, left), minutes_left, visit.min_kw, visit.max_kw)
        kw = max(0.0, min(kw, left / hours))
        hours_left = (visit.departure - quarter) * QUARTER_H - minute / 60
        if self.step is not None and kw > 0:
            rest_h = minutes_left / 60
            budget = (self.step.peak_kw - CAP_MARGIN_KW) * QUARTER_H - imported_kwh
            room = budget / rest_h - house_grid_kw  # the car's average over the rest of the quarter
            if kw > room:
                below = room < visit.min_kw
                # below the minimum: the minimum for as much of this minute as the budget allows, front-loaded
                burst = min(1.0, burst_hours(budget, rest_h, house_grid_kw, visit.min_kw) * 60)
                capped = min(kw, visit.min_kw * burst if below else room)
                if has_slack(left, hours_left, visit.max_kw):
                    return capped
                # No slack: held down to what the departure needs now, not below.
                due = departure_floor_kwh(left, hours_left, rest_h, visit.max_kw)
                kw = max(capped, min(kw, wallbox_power(due, minutes_left, visit.min_kw, visit.max_kw)))
        return kw

    def charged(self, kw: float, hours: float) -> None:
        """What the wallbox gave the car in the session under way."""
        if self.visit is not None and kw > 0:
            self.delivered[self.visit] = self.delivered.get(self.visit, 0.0) + kw * hours
            self.quarter_given += kw * hours


class PlanExecutor:
    """The `optimiser` scenario's planning: re-plans every quarter-hour with the forecasts the add-on could
    have had; the add-on's engine carries out the running step (`step`)."""

    def __init__(
        self,
        year: HouseholdYear,
        prices: PriceYear,
        tariff: Tariff,
        setup: PlannerSetup,
        car: CarExecutor | None = None,
    ) -> None:
        self.year = year
        self.car = car  # the planned car's wallbox; None: the profile's charging is a fixed forecast
        self.prices = prices
        self.tariff = tariff
        self.setup = setup
        self.planner = Planner()
        self.load_kw = np.asarray(year.load_w, dtype=np.float64) / 1000
        self.ev_kw = np.asarray(year.ev_w, dtype=np.float64) / 1000 if year.ev_w else None
        self.pv_kw = np.asarray(year.pv_w, dtype=np.float64) / 1000
        self.pv_forecast = pv_forecast_with_error(
            np.asarray(year.pv_w, dtype=np.float64) / 1000,
            seed=setup.pv_error_seed,
            sigma=setup.pv_error_sigma,
        )
        self.step: PlanStep | None = None

    def plan(self, quarter: int, batteries: list[SimulatedBattery], month_peak_kw: float) -> None:
        """The plan for the rest of today and tomorrow from this quarter on; keeps its first step."""
        clock = _clock(self.year)
        now = clock[quarter]
        steps = min(horizon_steps(now), len(clock) - quarter)
        span = slice(quarter, quarter + steps)
        load = self._past(self.load_kw, quarter)
        ev = None if self.ev_kw is None or self.car is not None else self._past(self.ev_kw, quarter)
        car = self.car.sessions(quarter, now) if self.car is not None else ()
        import_price, export_price = self._prices(quarter, now, steps)
        quarter_of_day = now.hour * 4 + now.minute // 15
        inputs = PlanInputs(
            start=now,
            import_price=import_price,
            export_price=export_price,
            load_kw=load_forecast(load, steps, quarter_of_day=quarter_of_day),
            pv_kw=self._pv(quarter, now, span),
            pv_plan_factor=self.setup.pv_plan_factor,
            wallbox_kw=()
            if ev is None
            else load_forecast(ev, steps, quarter_of_day=quarter_of_day, persistence=0.0),
            batteries=tuple(_spec(b) for b in batteries),
            capacity=CapacityTariff(self.tariff.capacity_price, self.tariff.capacity_floor_kw, month_peak_kw),
            terminal_value_per_kwh=self.setup.terminal_value_per_kwh,
            wear_cost_per_kwh=self.setup.wear_cost_per_kwh,
            batteries_cover_wallbox=self.setup.feed_car,
            load_high_kw=load_high_forecast(load, steps, quantile=self.setup.peak_quantile)
            if self.setup.peak_quantile > 0
            else (),
            car=car,
        )
        self.step = self.planner.plan(inputs).first
        if self.car is not None:
            self.car.planned(self.step, car)

    def _pv(self, quarter: int, now: datetime, span: slice) -> FloatArray:
        """Yesterday's forecast for the horizon, today's part corrected by the PV seen since midnight."""
        midnight = quarter - (now.hour * 4 + now.minute // 15)
        left_today = 96 - (quarter - midnight)
        forecast = self.pv_forecast[span]
        if not self.setup.nowcast or quarter <= max(0, midnight):
            return forecast
        seen = slice(max(0, midnight), quarter)
        return pv_nowcast(forecast, self.pv_forecast[seen], self.pv_kw[seen], left_today)

    def _past(self, series: FloatArray, quarter: int) -> FloatArray:
        """The learner's history: the last six weeks. Before the data has six weeks, the year's own last
        weeks stand in for the weeks before it (the same household, its habits, not the days to come); in a
        site's own recorded history nothing does: the quarters before it are unknown, as they were live."""
        if quarter >= HISTORY_QUARTERS:
            return series[quarter - HISTORY_QUARTERS : quarter]
        if self.year.clock is not None:
            return np.concatenate([np.full(HISTORY_QUARTERS - quarter, np.nan), series[:quarter]])
        return np.concatenate([series[QUARTERS - HISTORY_QUARTERS + quarter :], series[:quarter]])

    def _prices(self, quarter: int, now: datetime, steps: int) -> tuple[FloatArray, FloatArray]:
        """The prices known now: day-ahead prices for tomorrow are published about 13:00; before that,
        tomorrow is assumed to repeat today (a tariff's periods are known in advance)."""
        span = slice(quarter, quarter + steps)
        import_price, export_price = self.prices.import_price[span], self.prices.export_price[span]
        if not self.prices.dynamic or now.hour >= DAY_AHEAD_PUBLISHED_HOUR:
            return import_price, export_price
        tomorrow = (24 - now.hour) * 4 - now.minute // 15  # steps left today (DST days are an hour off)
        import_price, export_price = import_price.copy(), export_price.copy()
        import_price[tomorrow:] = self.prices.import_price[quarter + tomorrow - 96 : quarter + steps - 96]
        export_price[tomorrow:] = self.prices.export_price[quarter + tomorrow - 96 : quarter + steps - 96]
        return import_price, export_price


def _spec(battery: SimulatedBattery) -> BatterySpec:
    p = battery.physics
    return BatterySpec(
        id=battery.ble_mac,
        capacity_kwh=p.capacity_wh / 1000,
        soc=p.soc,
        soc_min=p.soc_floor,
        max_charge_kw=p.max_charge_w / 1000,
        max_discharge_kw=p.max_discharge_w / 1000,
        charge_efficiency=p.charge_efficiency,
        discharge_efficiency=p.discharge_efficiency,
        standby_kw=p.standby_w / 1000,
    )


def run(
    scenario: str,
    year: HouseholdYear,
    tariff: Tariff,
    *,
    prices: PriceYear | None = None,
    start_quarter: int = 0,
    quarters: int = QUARTERS,
    setup: ReplaySetup | None = None,
    trace_quarters: range | None = None,
    progress: Callable[[int], None] | None = None,
    monthly: dict[str, dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Replay one scenario; returns its figures (and a trace when asked).

    `prices` (default: the tariff's periods) are what the bill counts and what the planner sees; the rule
    engine only knows the tariff's periods. `monthly`, when given, is filled with each month's bill
    ("YYYY-MM": energy and capacity cost, peak, the month's share), which sum to the figures' bill.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; one of {', '.join(SCENARIOS)}")
    setup = setup or ReplaySetup()
    if setup.car_mode not in CAR_MODES:
        raise ValueError(f"unknown car mode {setup.car_mode!r}; one of {', '.join(CAR_MODES)}")
    prices = prices or tariff_prices(tariff)
    profile = PROFILES[setup.profile]
    count = {"no_battery": 0, "auto_one": 1}.get(scenario, setup.batteries)
    household = DataHousehold(year, year.kwp)
    site = Site(household)  # type: ignore[arg-type]
    batteries = [
        SimulatedBattery(
            profile,
            BatteryPhysics(
                profile.capacity_wh, profile.max_charge_w, profile.max_discharge_w, soc=setup.start_soc
            ),
            site,
            ble_mac=f"{0xA00000000000 + i:012x}",
            ip=f"10.0.0.{i + 1}",
            phase=i,
        )
        for i in range(count)
    ]
    # Both run the add-on's own engine: the rules, or the planner's running step carried out with every
    # safety rule (rotation, switch interval, countdowns), exactly as live.
    engine = {
        "rules": lambda: Optimiser(setup.settings, tariff),
        "optimiser": lambda: Optimiser(replace(setup.settings, method="planner"), tariff),
    }.get(scenario, lambda: None)()
    sessions = car_visits(year, start_quarter, quarters)
    car = (
        CarExecutor(sessions, _clock(year))
        if scenario == "optimiser" and setup.car_mode == "plan" and year.ev_w
        else None
    )
    executor = PlanExecutor(year, prices, tariff, setup.planner, car) if scenario == "optimiser" else None
    daily_pv_kwh = _daily_pv(year) if engine is not None else {}
    totals = Totals(month_energy_cost=defaultdict(float) if monthly is not None else None)
    trace = Trace(battery_power={b.ble_mac: [] for b in batteries}, soc={b.ble_mac: [] for b in batteries})
    steps_per_quarter = 900 // setup.step_s
    t = 0.0
    last_modes = {b.ble_mac: b.mode for b in batteries}
    first_local = year.local_time(start_quarter)
    clock = _clock(year)
    arriving = {v.arrival: i for i, v in enumerate(sessions)} if car is not None else {}
    stored_at_arrival: dict[int, float] = {}  # session index -> kWh the batteries could deliver then
    for quarter in range(start_quarter, min(len(clock), start_quarter + quarters)):
        household.quarter = quarter
        if quarter in arriving:
            stored_at_arrival[arriving[quarter]] = _deliverable_kwh(batteries)
        if car is None:
            site.extra = household.wallbox_w()
        base = clock[quarter]
        month = (base.year, base.month)
        if executor is not None:
            began = time.perf_counter()
            executor.plan(quarter, batteries, totals.peaks.get(month, 0.0))
            totals.plan_seconds.append(time.perf_counter() - began)
            totals.plans += 1
            totals.plans_without_steps += executor.step is None
        for step in range(steps_per_quarter):
            now = base.replace(minute=base.minute + step * setup.step_s // 60)
            site.update(now)
            # The meter is read a few seconds after the load changed, once Auto has reacted (as a P1 reading
            # every few seconds would show it); the rest of the minute follows the controller's commands.
            _advance(batteries, SETTLE_S, t, now, quarter, totals, site, prices, last_modes)
            t += SETTLE_S
            if car is not None:
                # The wallbox is set for the minute before the batteries are commanded (the engine sees
                # the car's power as the meter does).
                car.charged(sum(site.extra) / 1000, SETTLE_S / 3600)
                house_grid = (site.total_power() - sum(site.extra)) / 1000
                kw = car.power_kw(
                    quarter,
                    step * setup.step_s // 60,
                    setup.step_s / 3600,
                    house_grid,
                    totals.quarter_import_wh / 1000,
                )
                site.extra = (kw * 1000 / 3,) * 3
                car.charged(kw, (setup.step_s - SETTLE_S) / 3600)
            if engine is not None:
                result = engine.step(
                    Inputs(
                        t=t,
                        now=now,
                        grid_power=site.total_power(),
                        grid_age=0.0,
                        batteries=tuple(_view(b, i) for i, b in enumerate(batteries)),
                        pv_forecast_tomorrow_kwh=daily_pv_kwh.get((now.date().toordinal() + 1), 0.0),
                        zone=LOCAL,  # the data's clock: Brussels time, whatever this machine's zone
                        wallbox_power=sum(site.extra),
                        plan_step=executor.step if executor is not None else None,
                        plan_problem="" if executor is None or executor.step else "no plan",
                    )
                )
                by_id = {b.ble_mac: b for b in batteries}
                for command in result.commands:
                    _execute(by_id[command.battery_id], command, t)
                totals.decisions += len(result.decisions)
            _advance(batteries, setup.step_s - SETTLE_S, t, now, quarter, totals, site, prices, last_modes)
            t += setup.step_s - SETTLE_S
            if trace_quarters is not None and quarter in trace_quarters:
                trace.at.append(now)
                trace.load.append(sum(site.load) + sum(site.extra))
                trace.pv.append(sum(site.pv))
                trace.grid.append(site.total_power())
                for battery in batteries:
                    trace.battery_power[battery.ble_mac].append(battery.physics.ac_power)
                    trace.soc[battery.ble_mac].append(battery.physics.soc)
        # The meter's quarter is the data's quarter: clock-aligned, all of its minutes and only those.
        totals.peaks[month] = max(totals.peaks.get(month, 0.0), totals.quarter_import_wh / 250)
        totals.quarter_import_wh = 0.0
        if progress is not None:
            progress(1)
    figures = _figures(
        scenario, totals, batteries, tariff, first_local, year, start_quarter, quarters, trace, setup
    )
    if monthly is not None:
        monthly.update(_monthly(totals, tariff, month_fractions(start_quarter, quarters, year.clock)))
    if year.ev_w:
        delivered = (
            car.delivered
            if car is not None
            else {i: v.energy_kwh for i, v in enumerate(sessions)}  # the profile charges each in full
        )
        missing = [max(0.0, v.energy_kwh - delivered.get(i, 0.0)) for i, v in enumerate(sessions)]
        figures["car"] = {
            "mode": "plan" if car is not None else "fixed",
            "charged_kwh": round(totals.car_wh / 1000, 1),
            "sessions": len(sessions),
            "sessions_met": sum(m <= MET_TOLERANCE_KWH for m in missing),
            "missing_kwh": round(sum(missing), 2),
            "battery_to_car_kwh": round(totals.battery_to_car_wh / 1000, 2),
        }
        if car is not None:
            figures["car"]["peak_from_arrival_kw"] = _peaks_from_arrival(
                year, clock, sessions, stored_at_arrival
            )
    return figures


def _deliverable_kwh(batteries: list[SimulatedBattery]) -> float:
    """What the batteries could deliver now: their energy above the floor, after the inverter's loss."""
    return sum(
        max(0.0, b.physics.soc - b.physics.soc_floor)
        / 100
        * b.physics.capacity_wh
        / 1000
        * b.physics.discharge_efficiency
        for b in batteries
    )


def _peaks_from_arrival(
    year: HouseholdYear, clock: tuple[datetime, ...], sessions: tuple[Visit, ...], stored: dict[int, float]
) -> dict[str, float]:
    """Per month, the lowest peak its sessions allowed from the batteries' state at each plug-in
    (`sessions.peak_from_arrival_kw`); only sessions within one month (a stay across two bounds their
    higher peak, not each), and only months with one."""
    net_kw = [(load - pv) / 1000 for load, pv in zip(year.load_w, year.pv_w, strict=True)]
    months: dict[str, float] = {}
    for index, usable in stored.items():
        visit = sessions[index]
        first, last = clock[visit.arrival], clock[min(visit.departure, len(clock)) - 1]
        if (first.year, first.month) != (last.year, last.month):
            continue
        key = f"{first.year}-{first.month:02d}"
        months[key] = round(max(months.get(key, 0.0), peak_from_arrival_kw(visit, net_kw, usable)), 3)
    return dict(sorted(months.items()))


def car_visits(year: HouseholdYear, start_quarter: int, quarters: int) -> tuple[Visit, ...]:
    """The car's sessions within the replayed quarters (none without a car)."""
    if not year.ev_w:
        return ()
    return clipped(visits(year.ev_w, year.ev_stays), year.ev_w, start_quarter, start_quarter + quarters)


def _advance(
    batteries: list[SimulatedBattery],
    seconds: int,
    t: float,
    now: datetime,
    quarter: int,
    totals: Totals,
    site: Site,
    prices: PriceYear,
    last_modes: dict[str, str],
) -> None:
    for battery in ticking_order(batteries):
        battery.tick(seconds, t, now)
    _account(totals, site, batteries, prices, now, quarter, seconds, last_modes)


def _daily_pv(year: HouseholdYear) -> dict[int, float]:
    days: dict[int, float] = defaultdict(float)
    for quarter, watts in enumerate(year.pv_w):
        days[year.local_time(quarter).date().toordinal()] += watts / 4000
    return days


def _account(
    totals: Totals,
    site: Site,
    batteries: list[SimulatedBattery],
    prices: PriceYear,
    now: datetime,
    quarter: int,
    seconds: int,
    last_modes: dict[str, str],
) -> None:
    grid = site.total_power()
    hours = seconds / 3600
    if grid >= 0:
        cost = grid * hours / 1000 * float(prices.import_price[quarter])
        totals.import_wh += grid * hours
        totals.energy_cost += cost
        totals.quarter_import_wh += grid * hours
    else:
        cost = grid * hours / 1000 * float(prices.export_price[quarter])
        totals.export_wh -= grid * hours
        totals.energy_cost += cost
    if totals.month_energy_cost is not None:
        totals.month_energy_cost[(now.year, now.month)] += cost
    load, pv, car = sum(site.load), sum(site.pv), sum(site.extra)
    totals.load_wh += (load + car) * hours
    totals.pv_wh += pv * hours
    if car > 0:
        # The batteries' output goes to the house first (its load beyond the PV), then to the car.
        house = max(0.0, load - pv)
        battery_out = sum(b.physics.ac_power for b in batteries)
        totals.car_wh += car * hours
        totals.battery_to_car_wh += min(car, max(0.0, battery_out - house)) * hours
    in_auto = 0
    for battery in batteries:
        p = battery.physics
        if abs(p.ac_power) > max(p.max_charge_w, p.max_discharge_w) + 1:
            totals.limit_violations += 1
        if p.soc < p.soc_floor - 1 or p.soc > 100.0:
            totals.soc_violations += 1
        if battery.mode != last_modes[battery.ble_mac]:
            totals.switches[(battery.ble_mac, now.strftime("%Y-%m-%d %H"))] += 1
            last_modes[battery.ble_mac] = battery.mode
        in_auto += battery.mode == "Auto"
    if in_auto > 1:
        totals.two_in_auto_minutes += 1


def _figures(
    scenario: str,
    totals: Totals,
    batteries: list[SimulatedBattery],
    tariff: Tariff,
    first: datetime,
    year: HouseholdYear,
    start: int,
    quarters: int,
    trace: Trace,
    setup: ReplaySetup,
) -> dict[str, Any]:
    covered = month_fractions(start, quarters, year.clock)
    peaks = {f"{y}-{m:02d}": round(totals.peaks.get((y, m), 0.0), 3) for (y, m) in covered}
    capacity = sum(
        tariff.capacity_price / 12 * max(tariff.capacity_floor_kw, totals.peaks.get(month, 0.0)) * share
        for month, share in covered.items()
    )
    capacity_wh = sum(b.physics.capacity_wh for b in batteries)
    discharged = sum(b.physics.ac_out_wh for b in batteries)
    charged = sum(b.physics.ac_in_wh for b in batteries)
    stored_change = sum((b.physics.soc - setup.start_soc) / 100 * b.physics.capacity_wh for b in batteries)
    pv = totals.pv_wh
    balance = totals.load_wh - pv - discharged + charged - (totals.import_wh - totals.export_wh)
    figures = {
        "scenario": scenario,
        "bill_eur": round(totals.energy_cost + capacity, 2),
        "energy_cost_eur": round(totals.energy_cost, 2),
        "capacity_cost_eur": round(capacity, 2),
        "import_kwh": round(totals.import_wh / 1000, 1),
        "export_kwh": round(totals.export_wh / 1000, 1),
        "self_consumption": round((pv - totals.export_wh) / pv, 4) if pv else 0.0,
        "mean_monthly_peak_kw": round(sum(peaks.values()) / len(peaks), 3) if peaks else 0.0,
        "monthly_peaks_kw": peaks,
        "battery_cycles": round(discharged / capacity_wh, 1) if capacity_wh else 0.0,
        "max_switches_per_hour": max(totals.switches.values(), default=0),
        "minutes_with_two_in_auto": totals.two_in_auto_minutes,
        "limit_violations": totals.limit_violations,
        "soc_violations": totals.soc_violations,
        "energy_balance_error_kwh": round(balance / 1000, 6),
        "battery_loss_kwh": round((charged - discharged - stored_change) / 1000, 1),
        "load_kwh": round(totals.load_wh / 1000, 1),
        "pv_kwh": round(pv / 1000, 1),
        "decisions": totals.decisions,
        "from": first.isoformat(timespec="minutes"),
        "trace": trace if trace.at else None,
    }
    if totals.plans:
        solve_ms = np.asarray(totals.plan_seconds) * 1000
        figures["plans"] = totals.plans
        figures["plans_without_steps"] = totals.plans_without_steps
        figures["plan_ms_p50"] = round(float(np.percentile(solve_ms, 50)), 2)
        figures["plan_ms_p99"] = round(float(np.percentile(solve_ms, 99)), 2)
    return figures


def _monthly(
    totals: Totals, tariff: Tariff, covered: dict[tuple[int, int], float]
) -> dict[str, dict[str, float]]:
    """Each month's bill, billed as `_figures` bills the whole (a partial month at its share)."""
    months = {}
    for (y, m), share in covered.items():
        peak = totals.peaks.get((y, m), 0.0)
        energy = (totals.month_energy_cost or {}).get((y, m), 0.0)
        capacity = tariff.capacity_price / 12 * max(tariff.capacity_floor_kw, peak) * share
        months[f"{y}-{m:02d}"] = {
            "energy_cost_eur": energy,
            "capacity_cost_eur": capacity,
            "peak_kw": peak,
            "share": share,
        }
    return months


def _clock(year: HouseholdYear) -> tuple[datetime, ...]:
    """The local wall-clock start of each of the year's quarters: its own, or the 2021 data year's."""
    return year.clock if year.clock is not None else local_times()


def month_fractions(
    start: int, quarters: int, clock: tuple[datetime, ...] | None = None
) -> dict[tuple[int, int], float]:
    """How much of each calendar month the replay covers (a partial month pays its share of the tariff).
    `clock`: a recorded history's own quarters (their wall-clock starts), a month's share counted against
    its calendar days; None: the 2021 data year's."""
    if clock is not None:
        counts_of: dict[tuple[int, int], int] = defaultdict(int)
        for local in clock[start : start + quarters]:
            counts_of[(local.year, local.month)] += 1
        return {(y, m): count / (calendar.monthrange(y, m)[1] * 96) for (y, m), count in counts_of.items()}
    counts: dict[tuple[int, int], int] = defaultdict(int)
    totals: dict[tuple[int, int], int] = defaultdict(int)
    for quarter, local in enumerate(local_times()):
        totals[(local.year, local.month)] += 1
        if start <= quarter < start + quarters:
            counts[(local.year, local.month)] += 1
    return {month: counts[month] / totals[month] for month in counts if counts[month]}
