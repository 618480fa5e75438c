"""The cost-optimal planner: a linear program over the coming 24-48 h in 15-minute steps, solved with HiGHS.

Pure: state and forecasts in, a plan out; no I/O, no clock (the caller says what time it is).

API
---
    plan(PlanInputs) -> Plan          one solve with a fresh solver
    Planner().plan(PlanInputs)        the same plan; a re-plan that keeps the horizon's end and moves its
                                      start forward reuses the solver and starts from the last optimum, so
                                      a rolling caller (every 15 min) pays a few milliseconds per solve
    Plan.first                        the running step (cheap); Plan.steps: all of them, built on first use
    setpoint(step, grid_kw, battery_kw, wallbox_kw) -> Setpoint
                                      how to carry out the running step from the meter, once a minute:
                                      Auto, or a total Passive power (+ = discharge)
    split_power(total_kw, [Headroom]) -> per-battery kW
                                      a total shared over batteries within their limits, SOCs kept together
    horizon_steps(start) -> int       quarter-hours from `start` to the end of tomorrow (the default horizon)

`PlanInputs` holds per quarter-hour, from the running quarter on (step 0 runs from `start` to the next
clock quarter; the import prices set the horizon): import and export prices (EUR/kWh), the house load
without the wallbox, PV and the wallbox (kW), optionally what the house load could reach (`load_high_kw`, a
high quantile: see the capacity reserve); the batteries (`BatterySpec`: SOC, window, limits, efficiencies,
standby); the capacity tariff (`CapacityTariff`: price per kW-year, floor, this month's peak so far, the
running quarter's import so far; None: no capacity tariff); the terminal value, the wear cost and whether
the batteries may feed the car. `Plan.steps` holds per quarter the action (`Action`) and its reason, the
target net battery power (total and per battery), the SOC per battery at the step's end, the expected grid
flow and energy cost, the month's planned peak and whether energy is scarce (see `setpoint`). A forecast
shorter than the prices (stale) is extended: no PV, the load of the same quarter a day earlier; `Plan.notes`
says so. `Plan.status` is "optimal" or what HiGHS said (then there are no steps: keep the batteries in Auto).

The linear program (kW, kWh, EUR; step t lasts dt_t hours; batteries with the same efficiencies and standby
are modelled as their sum, a "group" g; three Venus E are one group: 5 variables and 3 rows a step):

    min  sum_t dt_t (pi_t imp_t - pe_t exp_t + wear dis_gt + tie-breaks) + sum_m kappa_m peak_m
         - v sum_g soc_g,end + sum_s (mu miss_s + w later_s)
    imp_t - exp_t + sum_g (dis_gt - chg_gt) - car_t = load_t + wallbox_t - pv_t + standby         (meter)
    sum_{t in s} dt_t car_t + later_s + miss_s = E_s            (each car session's energy, see below)
    soc_gt = soc_g,t-1 + dt_t (eta_c chg_gt - dis_gt / eta_d)                                    (storage)
    (quarter_so_far + dt_t imp_t) / 0.25 <= peak_m(t)          (capacity: clock-aligned quarter averages)
    sum_g (dis_gt - chg_gt) <= max(0, load_t - pv_t)   while the car charges, unless it may be fed
    0 <= chg_gt <= C_g, 0 <= dis_gt <= D_g, E_g,min + reserve_gt <= soc_gt <= E_g,max,
    peak_m >= max(floor, peak so far), 0 <= car_t <= the session's max (0 outside sessions)

- No energy from nothing: export is never worth more than import in the same quarter (pe_t is capped at
  pi_t; simultaneous import and export then never pays and is netted in the plan), and a quarter where the
  solution charges and discharges a group at once (only ever "worth" it when energy has a negative value) is
  re-solved with the smaller direction forbidden, until no quarter does.
- Capacity tariff: one peak variable per calendar month in the horizon at kappa = price per kW-year / 12 (the
  marginal bill of a month's peak: 1/12 of the 12-month average in each of 12 bills). The running month starts
  from the peak already reached, a month that begins inside the horizon from the floor. Both are valued in
  full although only part of the month is in view: a peak set now is paid whatever the rest of the month does,
  and every later re-plan sees it as free headroom ("follow the peak"), so the planner neither guesses the
  rest of the month nor discounts today's peak by it.
- Capacity reserve: with `load_high_kw`, the batteries end each step holding what the next hour of such load
  would need from them to keep the import under the month's peak as it stands (at most half their usable
  energy; in the next four hours at most what is stored now, so it is never bought in a hurry, less what
  the forecast load itself needs above the peak until then: the spike in view comes first). A mean load
  forecast never sees the oven and the kettle at once; the reserve is the energy for it, and `setpoint`
  spends it only on load above the peak.
- Terminal value v per kWh stored at the end (default: the lowest import price of the horizon's last day,
  times the discharge efficiency, never below 0): energy left over still saves at least that much later, so
  the end of the horizon is not dumped; and v stays below the cost of storing a kWh bought then, so the
  batteries are not filled for its sake (with a tariff's periods: 0.208 x 0.95 per kWh stored against
  0.208 / 0.95 to store it).
- PV: the add-on plans with `pv_plan_factor` = PV_PLAN_FACTOR (1.1) times the forecast, as PV above the
  forecast costs more than PV below it (see the constant); the plan's series show the forecast as given.
- Tie-breaks (1e-5 to 1e-4 EUR/kWh, never enough to change a real decision): doing nothing beats cycling
  between equal prices, and trading with the grid later beats trading now (the surplus is stored and the
  load covered now, while the forecast of later may be wrong).
- Standby is planned as a small AC load (re-planning corrects the SOC drift it leaves).
- The car (`PlanInputs.car`, `optimiser.car_sessions.CarSession`): while it is plugged in, its power per
  quarter is a variable, 0..max (the wallbox's "0 or at least 6 A" relaxed: `car_sessions.wallbox_minutes`
  carries a quarter below the minimum out as the minimum for part of it), and the session's energy is due by
  its departure.
  The due energy is a soft constraint: each kWh missing costs mu = MISSING_EUR_PER_KWH (far above any
  energy or capacity cost of a kWh), so a departure that cannot be met still gives a plan, which says what
  will be missing (`Plan.car`). An expected car (not there yet) misses a kWh at just above the dearest
  price: it is planned for, but never with a higher peak. A departure beyond the horizon may leave for
  later what the wallbox could still charge after the horizon's end, at w per kWh (the cheap hours of the
  last day, its 20 % quantile).
  The batteries feed the car only if allowed (the cover row, as for the fixed `wallbox_kw`).
  While it is plugged in, the import is planned CAR_PEAK_MARGIN_KW under the month's peak: the wallbox is
  carried out PEAK_MARGIN_KW under it, and the rest is room for the house above its forecast (else a long
  session comes short every quarter and makes it up with a new peak before the departure: in the replay,
  November's peak with a Tesla 4.93 kW without a margin, 4.67 kW at 0.05 kW, 4.29 kW at 0.15 kW).
  Ties go to the lowest import at a short stay's highest quarter with the capacity tariff
  (STAY_PEAK_EUR_PER_KW), then to charging sooner. The car's own taper near full is not modelled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cached_property

import highspy
import numpy as np
import numpy.typing as npt
from highspy._core import _Highs

from .car_sessions import CarSession, SessionPlan
from .tariff import quarter_start

QUARTER_H = 0.25
QUARTER = timedelta(minutes=15)
TIE_BREAK_EUR_PER_KWH = 1e-5  # doing nothing wins a tie: no pointless cycling between equal prices
# Between equally cheap plans, the one that trades with the grid later wins: the surplus is stored and the
# load covered now rather than later, when the forecast may have been wrong (a tie left to the solver
# exported PV at noon to store the afternoon's, which then did not come).
SOONER_EUR_PER_KWH = 1e-4
PEAK_MARGIN_KW = 0.05  # carrying out a step aims this far under the month's peak: no creeping up by watts
# While the car is plugged in, the import is planned this far under the month's peak: the wallbox is carried
# out PEAK_MARGIN_KW under it, and the rest is room for the house above its forecast. The car is the load that
# waits when the house takes more than planned; without room, a long session falls behind quarter by quarter
# and makes it up with a new peak before its departure. Measured in the replay (plan mode, the year): 0.15 kW
# against 0.05 takes February's peak with a Tesla from 2.80 to 2.66 kW (the bound's: 2.50), November's from
# 4.67 to 4.29, for EUR 3 a year less over three cars and households (one EUR 0.43 more).
CAR_PEAK_MARGIN_KW = 0.15
# Between equally cheap plans for a short stay, with the capacity tariff, the one with the lowest import at
# its highest quarter wins: the import is spread over the stay rather than taken at its start ("sooner"), so
# a house load above its forecast finds room under the month's peak. (A 45-minute stay at noon in August took
# the wallbox's full power in its first quarter, PV covering the rest later; the house came 0.7 kW above its
# forecast and set the month's peak 0.3 kW over the bound's.) Not for a long stay: spread over a night, its
# import falls below the wallbox's minimum, which charges in bursts, a start every quarter-hour where one run
# would do, and a car that leaves early is the emptier.
STAY_PEAK_EUR_PER_KW = 1e-4
SHORT_STAY_STEPS = 8  # two hours
RESERVE_STEPS = 4  # the capacity reserve covers this many quarter-hours of high load ahead
SCARCE_STEPS = 24  # energy is scarce when the plan empties the batteries within this many quarter-hours
RESERVE_SHARE = 0.5  # and never more than this share of the usable energy
RESERVE_NOW_STEPS = 16  # within this many quarter-hours the reserve is what is stored, not bought
ACTION_TOLERANCE_KW = 0.05
SCARCE_HYSTERESIS_KW = 0.25  # a scarce step holding back returns to Auto this far under the ceiling
MAX_REPAIRS = 6
# The automatic terminal value prices stored energy at what refilling it costs on the horizon's last day at
# its cheapest (a tariff's cheapest period; with dynamic prices the cheapest quarter, when the PV and the
# price dip fill the batteries anyway). Valued higher, energy is kept at the end that the evening peak should
# have bought: the replay with the synthetic dynamic prices earns 1-2 % less of the achievable saving with
# the cheapest fifth instead, and the same with a tariff's periods.
TERMINAL_QUANTILE = 0.0
# Energy a car session leaves for after the horizon is valued at the cheap hours of the last day.
LATER_QUANTILE = 0.2
# The PV forecast the plan counts on is this much above the forecast given. A forecast misses both ways,
# but the misses do not cost the same: PV above the forecast finds the batteries full and is exported at
# the day's lowest price (with dynamic prices often below zero; with a tariff's periods at the injection
# price, after grid energy was bought at night to stand in for it), while PV below the forecast is made up
# from the grid at midday prices or not bought at night. Planned against the optimistic side, the batteries
# make room for the PV that may come. Measured in the replay: about 1 % more of the achievable saving with
# dynamic prices, the same with a tariff's periods (README); 1.1 rather than 1.15 since the load forecast
# keeps the last quarter-hour's departure (2_persons_over65, synthetic prices: EUR 101.90 against 102.03 in
# region 5, 22.94 against 24.30 in region 13; 1.05: 102.60 and 21.27). The add-on and the replay pass it in
# `PlanInputs.pv_plan_factor`; a plan made without it counts on the forecast as given.
PV_PLAN_FACTOR = 1.1
# A kWh the car misses at its departure: above any energy price plus the capacity cost of charging it in one
# quarter at a few kW (52 EUR per kW-year / 12 x 4 kW per kWh is 17 EUR): only the impossible is missed.
MISSING_EUR_PER_KWH = 100.0
# A kWh an expected car (`CarSession.expected`, not plugged in yet) misses: just above its stay's dearest
# energy, at most what keeps a higher month's peak from paying (`_expected_miss_price`): a car that does not
# come has not raised the target.
EXPECTED_MISSING_MARGIN_EUR_PER_KWH = 0.05

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int32]
Series = Sequence[float] | FloatArray  # one value per quarter-hour


# ---------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class BatterySpec:
    """One battery as the planner sees it. Energies in kWh, powers in kW, SOC in %."""

    id: str
    capacity_kwh: float
    soc: float
    soc_min: float = 12.0
    soc_max: float = 100.0
    max_charge_kw: float = 2.5
    max_discharge_kw: float = 2.5
    charge_efficiency: float = 0.95  # AC -> stored
    discharge_efficiency: float = 0.95  # stored -> AC
    standby_kw: float = 0.003

    @property
    def stored_kwh(self) -> float:
        return self.capacity_kwh * self.soc / 100

    @property
    def min_kwh(self) -> float:
        return self.capacity_kwh * self.soc_min / 100

    @property
    def max_kwh(self) -> float:
        return self.capacity_kwh * self.soc_max / 100


@dataclass(frozen=True)
class CapacityTariff:
    """The Flemish capacity tariff: the month's highest quarter-hour average offtake, at least the floor."""

    price_per_kw_year: float = 52.37
    floor_kw: float = 2.5
    month_peak_kw: float = 0.0  # this month's peak so far
    quarter_import_kwh: float = 0.0  # imported so far in the running clock quarter

    @property
    def per_kw_month(self) -> float:
        return self.price_per_kw_year / 12


@dataclass(frozen=True)
class PlanInputs:
    """Per-step series start with the running clock quarter; the prices set the horizon's length."""

    start: datetime  # local wall-clock time
    import_price: Series  # EUR/kWh
    export_price: Series  # EUR/kWh (may be negative)
    load_kw: Series  # the house without the wallbox
    pv_kw: Series
    batteries: tuple[BatterySpec, ...]
    wallbox_kw: Series = ()
    pv_plan_factor: float = 1.0  # the PV counted on, times the forecast (the add-on: PV_PLAN_FACTOR)
    capacity: CapacityTariff | None = field(default_factory=CapacityTariff)
    terminal_value_per_kwh: float | None = None  # EUR per kWh stored at the end; None: automatic
    wear_cost_per_kwh: float = 0.0  # EUR per kWh discharged
    batteries_cover_wallbox: bool = False
    # What the house load could reach per quarter (a high quantile, without the car): with the capacity
    # tariff, the batteries keep enough energy to hold an hour of such load under the month's peak.
    load_high_kw: Series = ()
    # The car's sessions (one car: they do not overlap): its power is planned, on top of `wallbox_kw`.
    car: tuple[CarSession, ...] = ()


# --------------------------------------------------------------------------------------------- outputs


class Action(StrEnum):
    """What a step asks of the batteries, and how `setpoint` carries it out."""

    SELF_CONSUMPTION = "self_consumption"  # the batteries' own control: cover the load, store the surplus
    CHARGE = "charge"  # charge beyond the PV surplus, from the grid
    HOLD = "hold"  # keep the energy for later: the batteries cover only load above the month's peak
    LIMIT_CHARGE = "limit_charge"  # store only the surplus above the planned export: keep room for later
    DISCHARGE = "discharge"  # discharge beyond the load, to the grid


@dataclass(frozen=True)
class BatteryStep:
    id: str
    power_kw: float  # + = discharging (AC side)
    soc: float  # % at the step's end


@dataclass(frozen=True)
class PlanStep:
    start: datetime
    hours: float
    import_price: float
    export_price: float
    load_kw: float  # the forecasts the plan used
    pv_kw: float
    wallbox_kw: float  # the wallbox in all: the fixed forecast and the planned car
    battery_kw: float  # total, + = discharging
    grid_kw: float  # + = import
    cost_eur: float  # energy cost of the step
    action: Action
    reason: str
    batteries: tuple[BatteryStep, ...]
    peak_kw: float = math.inf  # the month's planned capacity peak: import up to it costs no capacity money
    scarce: bool = False  # the plan empties the batteries within a few hours: a load spike gets only the
    # energy that keeps the import under the peak (the rest of the evening would import the same anyway)
    feed_car: bool = False  # the batteries may cover the wallbox
    car_kw: float = 0.0  # the planned car power (part of wallbox_kw)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(hours=self.hours)


@dataclass(frozen=True, eq=False)
class PlanSeries:
    """The plan as arrays, one entry per step (kW, EUR/kWh, hours); `battery` and `stored` per group."""

    start: datetime
    hours: FloatArray
    import_price: FloatArray
    export_price: FloatArray
    load: FloatArray
    pv: FloatArray
    wallbox: FloatArray  # the fixed forecast and the planned car
    battery: FloatArray  # groups x steps, + = discharging
    stored: FloatArray  # groups x steps, kWh at each step's end
    grid: FloatArray
    cost: FloatArray
    actions: tuple[Action, ...]
    month_peak: FloatArray  # the planned peak of each step's month
    scarce: FloatArray  # 1 where the plan empties the batteries within SCARCE_STEPS: none to spare
    members: tuple[tuple[int, ...], ...]  # battery indices per group
    feed_car: bool
    car: FloatArray  # the planned car power


@dataclass(frozen=True, eq=False)
class Plan:
    """The plan; `steps` (with per-battery figures and reasons) is built on first use, `first` cheaply."""

    start: datetime
    batteries: tuple[BatterySpec, ...]
    series: PlanSeries = field(repr=False)
    energy_cost_eur: float  # the horizon's energy bill as planned
    capacity_cost_eur: float  # what the plan adds to the capacity bills above the peaks already reached
    month_peaks_kw: dict[str, float]  # "YYYY-MM" -> the planned peak of each month in the horizon
    terminal_value_per_kwh: float
    stored_end_kwh: float
    status: str  # "optimal", or what went wrong (then there are no steps)
    notes: tuple[str, ...] = ()
    car: tuple[SessionPlan, ...] = ()  # per car session: planned, left for later, missing

    @cached_property
    def steps(self) -> tuple[PlanStep, ...]:
        return _steps(self, len(self.series.hours))

    @cached_property
    def first(self) -> PlanStep | None:
        """The running step (what to do now), without building the others."""
        steps = _steps(self, 1) if len(self.series.hours) else ()
        return steps[0] if steps else None

    def step_at(self, at: datetime) -> PlanStep | None:
        for step in self.steps:
            if step.start <= at < step.end:
                return step
        return None


# ------------------------------------------------------------------------------------ the LP in arrays


@dataclass(frozen=True)
class Group:
    """Batteries with the same efficiencies and standby, summed. Energies kWh, powers kW."""

    stored: float
    min_kwh: float
    max_kwh: float
    max_charge: float
    max_discharge: float
    eta_c: float
    eta_d: float
    standby: float

    @property
    def holds_reserve(self) -> bool:
        """Only a group that can discharge holds a share of the capacity reserve."""
        return self.max_discharge > 0


@dataclass(frozen=True)
class CarNeed:
    """A car session in the LP: its steps [begin, end), the kWh due, and how much may wait beyond the horizon
    at what price (kWh, EUR/kWh)."""

    begin: int
    end: int
    energy: float
    later_kwh: float = 0.0
    later_price: float = 0.0
    miss_price: float = MISSING_EUR_PER_KWH  # EUR per kWh missing at the departure


@dataclass(frozen=True)
class Problem:
    """The LP's numbers, step by step; steps before `first` are past (fixed at zero, for warm starts).

    `standby_choice`: the perfect-foresight bound lets each quarter's standby come from the cells or the AC
    side, whichever is cheaper (a relaxation of the simulator, which takes it from the cells above the floor
    and from the AC side at it); the planner adds it to the load.
    """

    dt: FloatArray  # hours per step
    net: FloatArray  # load + wallbox - pv (kW)
    import_price: FloatArray
    export_price: FloatArray
    house_net: FloatArray | None  # load - pv where the batteries must not feed the car (else inf), or None
    groups: tuple[Group, ...]
    month: IntArray  # month index per step
    month_floor: FloatArray  # lower bound of each month's peak (kW)
    month_weight: FloatArray  # EUR per kW of each month's peak (0: no capacity tariff)
    quarter_so_far: float  # kWh imported in step 0's clock quarter before step 0 began
    terminal_value: float
    wear: float
    first: int = 0
    standby_choice: bool = False
    tie_breaks: bool = True  # off for the bound: its objective must be the bill and nothing else
    reserve: FloatArray | None = None  # kWh all groups must hold at each step's end, for unforeseen peaks
    car_max: FloatArray | None = None  # kW the car may take per step (0 outside its sessions); None: no car
    car_needs: tuple[CarNeed, ...] = ()
    # kW under the month's peak that the import keeps while the car is plugged in (CAR_PEAK_MARGIN_KW; 0 for
    # the bound, which knows the house's load)
    car_peak_margin: float = 0.0

    @property
    def steps(self) -> int:
        return len(self.dt)

    def layout(self) -> tuple[object, ...]:
        return (
            self.steps,
            len(self.groups),
            len(self.month_weight),
            self.house_net is not None,
            bool(np.any(self.month_weight > 0)),
            self.standby_choice,
            self.car_max is not None,
            tuple((need.begin, need.end) for need in self.car_needs),
            # which stays get a stay-peak column: it turns on the tie-breaks too, which nothing above shows
            self.priced_stays(),
        )

    def priced_stays(self) -> tuple[int, ...]:
        """The car needs whose highest import is priced (STAY_PEAK_EUR_PER_KW): the short stays, with the
        capacity tariff and the tie-breaks. Only they get a stay-peak column and rows: elsewhere the column
        would cost nothing and its rows, one per quarter of a night's stay, would only slow the solve."""
        if not self.tie_breaks or not np.any(self.month_weight > 0):
            return ()
        return tuple(i for i, need in enumerate(self.car_needs) if need.end - need.begin <= SHORT_STAY_STEPS)


@dataclass(frozen=True)
class Solution:
    imp: FloatArray
    exp: FloatArray
    chg: FloatArray  # groups x steps
    dis: FloatArray
    soc: FloatArray  # groups x steps, at each step's end
    standby_ac: FloatArray  # groups x steps (bound only)
    peaks: FloatArray
    status: str
    repairs: int
    car: FloatArray  # the car's power per step (zeros without a car)
    missing: FloatArray  # per car session: kWh missing at its departure
    later: FloatArray  # per car session: kWh left for after the horizon


class _Index:
    """Where each variable and constraint sits (block layout: one block per kind, one entry per step)."""

    def __init__(self, problem: Problem) -> None:
        n, groups, months = problem.steps, len(problem.groups), len(problem.month_weight)
        self.capacity = bool(np.any(problem.month_weight > 0))
        self.choice = problem.standby_choice
        steps = np.arange(n, dtype=np.int32)
        self.imp = steps
        self.exp = n + steps
        col = 2 * n
        self.chg = col + np.arange(groups * n, dtype=np.int32).reshape(groups, n)
        col += groups * n
        self.dis = col + np.arange(groups * n, dtype=np.int32).reshape(groups, n)
        col += groups * n
        self.soc = col + np.arange(groups * n, dtype=np.int32).reshape(groups, n)
        col += groups * n
        self.stb = col + np.arange(groups * n, dtype=np.int32).reshape(groups, n)
        col += groups * n if self.choice else 0
        self.peak = col + np.arange(months if self.capacity else 0, dtype=np.int32)
        col += len(self.peak)
        self.with_car = problem.car_max is not None
        self.car = col + steps if self.with_car else steps[:0]
        col += len(self.car)
        needs = len(problem.car_needs)
        self.miss = col + np.arange(needs, dtype=np.int32)
        col += needs
        self.later = col + np.arange(needs, dtype=np.int32)
        col += needs
        # One stay-peak column and its rows per priced stay, in the order of `stays` (car need indices).
        self.stays = problem.priced_stays()
        self.stay_peak = col + np.arange(len(self.stays), dtype=np.int32)
        col += len(self.stays)
        self.cols = col
        self.balance = steps
        row = n
        self.storage = row + np.arange(groups * n, dtype=np.int32).reshape(groups, n)
        row += groups * n
        self.peak_row = row + steps if self.capacity else steps[:0]
        row += n if self.capacity else 0
        self.cover = row + steps if problem.house_net is not None else steps[:0]
        row += n if problem.house_net is not None else 0
        self.need = row + np.arange(needs, dtype=np.int32)
        row += needs
        self.stay_rows: list[npt.NDArray[np.int32]] = []
        for i in self.stays:
            span = problem.car_needs[i].end - problem.car_needs[i].begin
            self.stay_rows.append(row + np.arange(span, dtype=np.int32))
            row += span
        self.rows = row


def _matrix(problem: Problem, ix: _Index) -> tuple[IntArray, IntArray, FloatArray]:
    """The constraint matrix, column-wise (HiGHS' compressed sparse column arrays)."""
    n = problem.steps
    dt = problem.dt
    cols: list[npt.NDArray[np.int64]] = []
    rows: list[npt.NDArray[np.int64]] = []
    vals: list[FloatArray] = []

    def put(col: npt.ArrayLike, row: npt.ArrayLike, val: npt.ArrayLike) -> None:
        c = np.asarray(col, dtype=np.int64).ravel()
        cols.append(c)
        rows.append(np.broadcast_to(np.asarray(row, dtype=np.int64), c.shape).ravel())
        vals.append(np.broadcast_to(np.asarray(val, dtype=np.float64), c.shape).ravel())

    put(ix.imp, ix.balance, 1.0)
    put(ix.exp, ix.balance, -1.0)
    if ix.capacity:
        put(ix.imp, ix.peak_row, dt / QUARTER_H)
        put(ix.peak[problem.month], ix.peak_row, -1.0)
    for g, group in enumerate(problem.groups):
        put(ix.chg[g], ix.balance, -1.0)
        put(ix.dis[g], ix.balance, 1.0)
        put(ix.chg[g], ix.storage[g], -dt * group.eta_c)
        put(ix.dis[g], ix.storage[g], dt / group.eta_d)
        put(ix.soc[g], ix.storage[g], 1.0)
        put(ix.soc[g][: n - 1], ix.storage[g][1:], -1.0)
        if ix.choice:
            put(ix.stb[g], ix.balance, -1.0)
            put(ix.stb[g], ix.storage[g], -dt)
        if problem.house_net is not None:
            put(ix.chg[g], ix.cover, -1.0)
            put(ix.dis[g], ix.cover, 1.0)
    if ix.with_car:
        put(ix.car, ix.balance, -1.0)
    for i, need in enumerate(problem.car_needs):
        put(ix.car[need.begin : need.end], ix.need[i], dt[need.begin : need.end])
        put(ix.miss[i], ix.need[i], 1.0)
        put(ix.later[i], ix.need[i], 1.0)
    for k, i in enumerate(ix.stays):
        need = problem.car_needs[i]
        put(ix.imp[need.begin : need.end], ix.stay_rows[k], 1.0)
        put(np.full(len(ix.stay_rows[k]), ix.stay_peak[k]), ix.stay_rows[k], -1.0)
    col = np.concatenate(cols)
    row = np.concatenate(rows)
    val = np.concatenate(vals)
    order = np.lexsort((row, col))
    start = np.zeros(ix.cols + 1, dtype=np.int32)
    np.cumsum(np.bincount(col, minlength=ix.cols), out=start[1:])
    return start, row[order].astype(np.int32), val[order]


def _numbers(
    problem: Problem, ix: _Index
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """Costs, column bounds and row bounds; past steps (before `first`) fixed at zero and left free."""
    n, first, dt = problem.steps, problem.first, problem.dt
    inf = math.inf
    cost = np.zeros(ix.cols)
    lower = np.zeros(ix.cols)
    upper = np.full(ix.cols, inf)
    row_lo = np.empty(ix.rows)
    row_hi = np.empty(ix.rows)
    live = np.arange(n) >= first
    export_price = np.minimum(problem.export_price, problem.import_price)
    later = SOONER_EUR_PER_KWH * (1 - np.arange(n) / max(1, n)) if problem.tie_breaks else np.zeros(n)
    cost[ix.imp] = np.where(live, dt * (problem.import_price + later), 0.0)
    cost[ix.exp] = np.where(live, -dt * (export_price - later), 0.0)
    upper[ix.imp] = np.where(live, inf, 0.0)
    upper[ix.exp] = np.where(live, inf, 0.0)
    row_lo[ix.balance] = np.where(live, problem.net, -inf)
    row_hi[ix.balance] = np.where(live, problem.net, inf)
    for g, group in enumerate(problem.groups):
        tie = TIE_BREAK_EUR_PER_KWH * dt if problem.tie_breaks else np.zeros(n)
        cost[ix.chg[g]] = np.where(live, tie, 0.0)
        cost[ix.dis[g]] = np.where(live, tie + problem.wear * dt, 0.0)
        upper[ix.chg[g]] = np.where(live, group.max_charge, 0.0)
        upper[ix.dis[g]] = np.where(live, group.max_discharge, 0.0)
        floor = np.full(n, group.min_kwh)
        if problem.reserve is not None and group.holds_reserve:
            # Shared by the groups that can give it, each at most what it can itself hold by then: a share
            # it cannot reach (a battery that cannot charge, or only slowly) would leave no plan at all.
            able = sum(h.max_kwh - h.min_kwh for h in problem.groups if h.holds_reserve)
            share = (group.max_kwh - group.min_kwh) / max(1e-9, able)
            reach = group.stored + np.cumsum(np.where(live, dt, 0.0)) * group.max_charge * group.eta_c
            reach[np.arange(n) - first < RESERVE_NOW_STEPS] = group.stored
            floor = np.minimum(np.minimum(group.max_kwh, floor + share * problem.reserve), reach)
        lower[ix.soc[g]] = np.where(live, floor, group.stored)
        upper[ix.soc[g]] = np.where(live, group.max_kwh, group.stored)
        cost[ix.soc[g][-1]] = -problem.terminal_value
        drain = -dt * group.standby if ix.choice else np.zeros(n)
        row_lo[ix.storage[g]] = np.where(live, drain, -inf)
        row_hi[ix.storage[g]] = np.where(live, drain, inf)
        if first == 0:
            row_lo[ix.storage[g][0]] += group.stored
            row_hi[ix.storage[g][0]] += group.stored
        if ix.choice:
            upper[ix.stb[g]] = np.where(live, group.standby, 0.0)
    if ix.capacity:
        cost[ix.peak] = problem.month_weight
        lower[ix.peak] = problem.month_floor
        row_lo[ix.peak_row] = -inf
        row_hi[ix.peak_row] = 0.0
        if problem.car_max is not None and problem.car_peak_margin:
            row_hi[ix.peak_row] = np.where(live & (problem.car_max > 0), -problem.car_peak_margin, 0.0)
        if first < n:
            row_hi[ix.peak_row[first]] += -problem.quarter_so_far / QUARTER_H
    if problem.house_net is not None:
        row_lo[ix.cover] = -inf
        row_hi[ix.cover] = np.where(live, np.maximum(0.0, problem.house_net), inf)
    if problem.car_max is not None:
        # Between equally cheap quarters the car charges sooner (a car that leaves early is the fuller).
        sooner = 2 * SOONER_EUR_PER_KWH * np.arange(n) / max(1, n) if problem.tie_breaks else np.zeros(n)
        cost[ix.car] = np.where(live, dt * sooner, 0.0)
        upper[ix.car] = np.where(live, problem.car_max, 0.0)
    for i, need in enumerate(problem.car_needs):
        cost[ix.miss[i]] = need.miss_price
        cost[ix.later[i]] = need.later_price + (2 * SOONER_EUR_PER_KWH if problem.tie_breaks else 0.0)
        upper[ix.later[i]] = need.later_kwh
        row_lo[ix.need[i]] = need.energy
        row_hi[ix.need[i]] = need.energy
    cost[ix.stay_peak] = STAY_PEAK_EUR_PER_KW
    for rows in ix.stay_rows:
        row_lo[rows] = -inf
        row_hi[rows] = 0.0
    return cost, lower, upper, row_lo, row_hi


class _Solver:
    """A HiGHS instance holding one problem layout, re-solved in place when only the numbers change."""

    def __init__(self, problem: Problem, solver: str = "simplex", time_limit_s: float | None = None) -> None:
        self.layout = problem.layout()
        self.ix = _Index(problem)
        self.dt_first = QUARTER_H
        # The bare core: highspy.Highs adds callback plumbing and prints a banner on stdout when created.
        self.highs = _Highs()
        self.highs.setOptionValue("output_flag", False)
        # A plan past this ends "not optimal": no plan, the safe fallback, instead of a stalled caller (see
        # solve).
        self.time_limit_s = time_limit_s
        if solver == "simplex":
            self.highs.setOptionValue("presolve", "off")  # measured: faster on a day or two of steps
            # The primal simplex: a re-plan changes prices and forecasts a little, and from the last basis the
            # primal method needs far fewer iterations than the dual (HiGHS' default). Measured with
            # bench/planner_solve.py: rolling p50 2.38 -> 1.06 ms, cold 4.59 -> 3.82 ms; the year's replay
            # 155 -> 129 s with the same bill (only 4 of 294 decisions told apart equally cheap plans).
            self.highs.setOptionValue("simplex_strategy", 4)
        else:
            self.highs.setOptionValue("solver", solver)
        cost, lower, upper, row_lo, row_hi = _numbers(problem, self.ix)
        start, index, value = _matrix(problem, self.ix)
        status = self.highs.passModel(
            self.ix.cols,
            self.ix.rows,
            len(value),
            int(highspy.MatrixFormat.kColwise),
            int(highspy.ObjSense.kMinimize),
            0.0,
            cost,
            lower,
            upper,
            row_lo,
            row_hi,
            start,
            index,
            value,
            np.zeros(self.ix.cols, dtype=np.int32),
        )
        if status != highspy.HighsStatus.kOk:
            raise RuntimeError(f"HiGHS rejected the model: {status}")
        self._upper = upper

    def update(self, problem: Problem) -> None:
        """New numbers for the same layout; the basis of the last solve stays as the starting point."""
        cost, lower, upper, row_lo, row_hi = _numbers(problem, self.ix)
        every_col = np.arange(self.ix.cols, dtype=np.int32)
        every_row = np.arange(self.ix.rows, dtype=np.int32)
        self.highs.changeColsCost(self.ix.cols, every_col, cost)
        self.highs.changeColsBounds(self.ix.cols, every_col, lower, upper)
        # in the binding, missing from its type stubs
        self.highs.changeRowsBounds(self.ix.rows, every_row, row_lo, row_hi)  # type: ignore[attr-defined]
        self._upper = upper
        self._set_first_duration(problem)

    def _set_first_duration(self, problem: Problem) -> None:
        """Step `first` may be a partial quarter (a re-plan in mid-quarter): its coefficients follow dt."""
        first = problem.first
        if first >= problem.steps:
            return
        dt = float(problem.dt[first])
        ix = self.ix
        for g, group in enumerate(problem.groups):
            self.highs.changeCoeff(int(ix.storage[g][first]), int(ix.chg[g][first]), -dt * group.eta_c)
            self.highs.changeCoeff(int(ix.storage[g][first]), int(ix.dis[g][first]), dt / group.eta_d)
            if ix.choice:
                self.highs.changeCoeff(int(ix.storage[g][first]), int(ix.stb[g][first]), -dt)
        if ix.capacity:
            self.highs.changeCoeff(int(ix.peak_row[first]), int(ix.imp[first]), dt / QUARTER_H)
        for i, need in enumerate(problem.car_needs):
            if need.begin <= first < need.end:
                self.highs.changeCoeff(int(ix.need[i]), int(ix.car[first]), dt)

    def solve(self, problem: Problem) -> Solution:
        ix = self.ix
        repairs = 0
        # HiGHS' time limit counts its run time since the instance was made, across every solve (and
        # clearSolver does not reset it): a solver kept for a day of re-plans would run out of it bit by bit.
        # Each plan, repairs and retry included, gets the limit afresh.
        deadline = None if self.time_limit_s is None else self.highs.getRunTime() + float(self.time_limit_s)
        while True:
            self._run(deadline)
            status = self.highs.getModelStatus()
            if status != highspy.HighsModelStatus.kOptimal:
                # A warm start now and then ends a hair short of optimal (HiGHS has said "Unknown" over a
                # dual infeasibility of 1e-5): the same model from scratch solves.
                self.highs.clearSolver()
                self._run(deadline)
                status = self.highs.getModelStatus()
            if status != highspy.HighsModelStatus.kOptimal:
                return _empty_solution(problem, ix, self.highs.modelStatusToString(status))
            x = np.asarray(self.highs.getSolution().col_value)
            chg, dis = x[ix.chg], x[ix.dis]
            both = (np.minimum(chg, dis) > 1e-6) & (np.arange(problem.steps) >= problem.first)
            if not both.any() or repairs >= MAX_REPAIRS:
                break
            # Charging and discharging at once only pays when energy has a negative value (it burns energy
            # in the losses): forbid the smaller direction there and solve again from this basis.
            repairs += 1
            groups, steps = np.nonzero(both)
            smaller = np.where(
                chg[groups, steps] < dis[groups, steps], ix.chg[groups, steps], ix.dis[groups, steps]
            )
            self.highs.changeColsBounds(
                len(smaller), smaller.astype(np.int32), np.zeros(len(smaller)), np.zeros(len(smaller))
            )
        return Solution(
            imp=x[ix.imp],
            exp=x[ix.exp],
            chg=chg,
            dis=dis,
            soc=x[ix.soc],
            standby_ac=x[ix.stb] if ix.choice else np.zeros_like(chg),
            peaks=x[ix.peak] if ix.capacity else np.zeros(len(problem.month_weight)),
            status="optimal",
            repairs=repairs,
            car=x[ix.car] if ix.with_car else np.zeros(problem.steps),
            missing=x[ix.miss],
            later=x[ix.later],
        )

    def _run(self, deadline: float | None) -> None:
        if deadline is not None:
            self.highs.setOptionValue("time_limit", deadline)
        self.highs.run()


def _empty_solution(problem: Problem, ix: _Index, status: str) -> Solution:
    shape = (len(problem.groups), problem.steps)
    return Solution(
        imp=np.zeros(problem.steps),
        exp=np.zeros(problem.steps),
        chg=np.zeros(shape),
        dis=np.zeros(shape),
        soc=np.array([[g.stored] * problem.steps for g in problem.groups]).reshape(shape),
        standby_ac=np.zeros(shape),
        peaks=np.zeros(len(problem.month_weight)),
        status=status,
        repairs=0,
        car=np.zeros(problem.steps),
        missing=np.zeros(len(problem.car_needs)),
        later=np.zeros(len(problem.car_needs)),
    )


def solve(problem: Problem, solver: str = "simplex") -> Solution:
    """Solve one problem with a fresh solver (the perfect-foresight bound uses this too, with a year of
    steps, where HiGHS' own choice or its interior-point method beats a plain simplex)."""
    return _Solver(problem, solver).solve(problem)


# ------------------------------------------------------------------------------ from inputs to a plan


def _series(values: Series, n: int, fill: float) -> tuple[FloatArray, bool]:
    """`values` as n steps; a short (stale) series goes on with `fill`."""
    given = np.asarray(values, dtype=np.float64)[:n]
    if len(given) >= n:
        return given, False
    return np.concatenate([given, np.full(n - len(given), fill)]), True


def _load_completion(load: FloatArray, n: int) -> FloatArray:
    """A load forecast that ends too early goes on with the same quarter a day earlier (or its mean)."""
    out = np.empty(n)
    k = len(load)
    out[:k] = load
    for t in range(k, n):
        out[t] = out[t - 96] if t >= 96 else (float(load.mean()) if k else 0.3)
    return out


def _groups(batteries: tuple[BatterySpec, ...]) -> tuple[tuple[Group, ...], list[list[int]]]:
    keyed: dict[tuple[float, float, float, bool, bool], list[int]] = {}
    for i, b in enumerate(batteries):
        # A battery that cannot charge (or discharge) at all is not summed with those that can: its energy
        # (or its room) would be planned through the others' power (a Venus whose own maximum reads 0).
        key = (
            b.charge_efficiency,
            b.discharge_efficiency,
            b.standby_kw,
            b.max_charge_kw > 0,
            b.max_discharge_kw > 0,
        )
        keyed.setdefault(key, []).append(i)
    groups = []
    for (eta_c, eta_d, standby, _, _), members in keyed.items():
        specs = [batteries[i] for i in members]
        lo = sum(b.min_kwh for b in specs)
        hi = sum(b.max_kwh for b in specs)
        groups.append(
            Group(
                stored=min(hi, max(lo, sum(b.stored_kwh for b in specs))),
                min_kwh=lo,
                max_kwh=hi,
                max_charge=sum(b.max_charge_kw for b in specs),
                max_discharge=sum(b.max_discharge_kw for b in specs),
                eta_c=eta_c,
                eta_d=eta_d,
                standby=standby * len(specs),
            )
        )
    return tuple(groups), list(keyed.values())


def horizon_steps(start: datetime, days_after: int = 1) -> int:
    """Quarter-hours from the running one to local midnight `days_after` days on: 24-48 h for tomorrow."""
    end = datetime.combine(start.date() + timedelta(days=days_after + 1), datetime.min.time())
    return math.ceil((end - quarter_start(start)) / QUARTER)


def _month_key(at: datetime) -> str:
    return f"{at.year}-{at.month:02d}"


def _months(q0: datetime, steps: int) -> tuple[list[str], IntArray]:
    """The calendar months the steps fall in, and each step's month index."""
    keys = [_month_key(q0)]
    month = np.zeros(steps, dtype=np.int32)
    boundary = q0.replace(day=1, hour=0, minute=0)
    while True:
        boundary = (boundary + timedelta(days=32)).replace(day=1)
        index = math.ceil((boundary - q0) / QUARTER)
        if index >= steps:
            return keys, month
        month[index:] += 1
        keys.append(_month_key(boundary))


@dataclass(frozen=True, eq=False)
class _Forecast:
    """The series the LP was given, completed where a forecast was too short."""

    load: FloatArray
    pv: FloatArray
    wallbox: FloatArray
    notes: list[str]
    car_needs: tuple[int | None, ...] = ()  # per car session: its CarNeed's index, None when not in view


def _problem(inputs: PlanInputs, window_start: datetime, window_steps: int) -> tuple[Problem, _Forecast]:
    """The LP numbers for a window of steps that starts at or before the running quarter."""
    q0 = quarter_start(inputs.start)
    first = round((q0 - window_start) / QUARTER)
    n_live = window_steps - first
    notes: list[str] = []
    pi = np.asarray(inputs.import_price, dtype=np.float64)[:n_live]
    pe, _ = _series(inputs.export_price, n_live, 0.0)
    given_pv, pv_short = _series(inputs.pv_kw, n_live, 0.0)
    pv = given_pv * inputs.pv_plan_factor
    given_load = np.asarray(inputs.load_kw, dtype=np.float64)[:n_live]
    load = _load_completion(given_load, n_live) if len(given_load) < n_live else given_load
    wallbox, _ = _series(inputs.wallbox_kw, n_live, 0.0)
    if pv_short:
        notes.append(f"PV forecast ends after {len(inputs.pv_kw)} quarter-hours: no PV assumed beyond")
    if len(given_load) < n_live:
        notes.append(
            f"load forecast ends after {len(given_load)} quarter-hours: yesterday's load assumed beyond"
        )
    groups, _ = _groups(inputs.batteries)
    standby = sum(g.standby for g in groups)
    dt = np.full(n_live, QUARTER_H)
    dt[0] = max(1e-3, (q0 + QUARTER - inputs.start).total_seconds() / 3600)
    keys, month = _months(q0, n_live)
    capacity = inputs.capacity
    if capacity is not None and capacity.price_per_kw_year > 0:
        floors = np.full(len(keys), capacity.floor_kw)
        floors[0] = max(capacity.floor_kw, capacity.month_peak_kw)
        weights = np.full(len(keys), capacity.per_kw_month)
        so_far = capacity.quarter_import_kwh
    else:
        floors = np.zeros(len(keys))
        weights = np.zeros(len(keys))
        so_far = 0.0
    eta_d = min((g.eta_d for g in groups), default=1.0)
    terminal = inputs.terminal_value_per_kwh
    if terminal is None:
        last_day = pi[-96:]
        terminal = max(0.0, _quantile(last_day, TERMINAL_QUANTILE) * eta_d) if len(pi) else 0.0
    car_max, needs, car_index = _car(inputs, window_start, first, dt, pi)
    car_on = car_max is not None and bool(np.any(car_max > 0))
    cover = None
    if not inputs.batteries_cover_wallbox and (np.any(wallbox > 0) or car_on):
        # Only where the wallbox may charge: at other steps the batteries may sell as without a car.
        charging = (wallbox > 0) | (car_max > 0 if car_max is not None else False)
        cover = np.where(charging, load - pv, math.inf)
    reserve = None
    if np.any(weights > 0) and len(inputs.load_high_kw):
        reserve = _reserve(inputs, groups, load + standby, pv, dt, floors[month], keys)

    def padded(live: FloatArray, fill: float = 0.0) -> FloatArray:
        return np.concatenate([np.full(first, fill), live]) if first else live

    problem = Problem(
        dt=padded(dt, QUARTER_H),
        net=padded(load + wallbox - pv + standby),
        import_price=padded(pi),
        export_price=padded(pe),
        house_net=None if cover is None else padded(cover),
        groups=groups,
        month=np.concatenate([np.zeros(first, dtype=np.int32), month]) if first else month,
        month_floor=floors,
        month_weight=weights,
        quarter_so_far=so_far,
        terminal_value=terminal,
        wear=inputs.wear_cost_per_kwh,
        first=first,
        reserve=None if reserve is None else padded(reserve),
        car_max=None if car_max is None else padded(car_max),
        car_needs=needs,
        car_peak_margin=CAR_PEAK_MARGIN_KW,
    )
    return problem, _Forecast(load, given_pv, wallbox, notes, car_index)


def _expected_miss_price(inputs: PlanInputs, prices: FloatArray, overlap_h: FloatArray) -> float:
    """What a kWh an expected car misses costs (EUR): just above the stay's dearest price, so it is planned
    at any of the stay's prices; but never so much that a higher month's peak pays: a kW more over the
    whole stay gains at most 0.9 of the capacity price of that kW (each kWh at most 0.9 x price / stay's
    hours above the stay's cheapest price)."""
    if not len(prices):
        return 0.0
    dearest = float(np.max(prices)) + EXPECTED_MISSING_MARGIN_EUR_PER_KWH
    if inputs.capacity is None or inputs.capacity.price_per_kw_year <= 0:
        return dearest
    hours = max(float(np.sum(overlap_h)), 0.25)
    return min(dearest, float(np.min(prices)) + 0.9 * inputs.capacity.per_kw_month / hours)


def _car(
    inputs: PlanInputs, window_start: datetime, first: int, dt: FloatArray, pi: FloatArray
) -> tuple[FloatArray | None, tuple[CarNeed, ...], tuple[int | None, ...]]:
    """The car's limit per live step (kW, by the share of the step it is plugged in), and each session in
    view as a `CarNeed` in window steps; a session that departed or arrives after the horizon has none."""
    if not inputs.car:
        return None, (), ()
    n = len(dt)
    ends = np.cumsum(dt) * 3600  # seconds from inputs.start
    starts = np.concatenate([[0.0], ends[:-1]])
    horizon_end = inputs.start + timedelta(seconds=float(ends[-1])) if n else inputs.start
    later_price = max(0.0, _quantile(pi[-96:], LATER_QUANTILE)) if n else 0.0
    car_max = np.zeros(n)
    needs: list[CarNeed] = []
    index: list[int | None] = []
    for session in inputs.car:
        arrive = (session.arrival - inputs.start).total_seconds()
        leave = (session.departure - inputs.start).total_seconds()
        overlap = np.clip(np.minimum(ends, leave) - np.maximum(starts, arrive), 0.0, None) / 3600
        if session.energy_kwh <= 0 or not np.any(overlap > 0):
            index.append(None)
            continue
        car_max = np.maximum(car_max, session.max_kw * overlap / dt)
        begin = max(0, math.floor((session.arrival - window_start) / QUARTER))
        end = min(first + n, math.ceil((session.departure - window_start) / QUARTER))
        after = max(0.0, (session.departure - horizon_end).total_seconds() / 3600)
        miss = MISSING_EUR_PER_KWH
        if session.expected:
            miss = _expected_miss_price(inputs, pi[overlap > 0], overlap)
        needs.append(CarNeed(begin, end, session.energy_kwh, session.max_kw * after, later_price, miss))
        index.append(len(needs) - 1)
    return car_max, tuple(needs), tuple(index)


def _quantile(values: FloatArray, quantile: float) -> float:
    """np.quantile, with its ends taken directly (the same value): it runs on every plan, 35 040 times in a
    year's replay, and its general case takes twenty times as long as a minimum."""
    if quantile <= 0.0:
        return float(np.min(values))
    if quantile >= 1.0:
        return float(np.max(values))
    return float(np.quantile(values, quantile))


def _reserve(
    inputs: PlanInputs,
    groups: tuple[Group, ...],
    load: FloatArray,
    pv: FloatArray,
    dt: FloatArray,
    level: FloatArray,
    keys: list[str],
) -> FloatArray:
    """Energy (kWh) to hold at each step's end: what the next hour of high load would need from the batteries
    to stay under the month's peak as it stands. In the next hours, only what is stored now: a reserve that
    had to be bought at once would be bought at any price and could itself set a new peak; later, within
    what charging from now could give."""
    n = len(dt)
    high, _ = _series(inputs.load_high_kw, n, 0.0)
    eta_d = min(g.eta_d for g in groups)
    excess = dt * np.maximum(0.0, high - pv - level) / eta_d
    window = RESERVE_STEPS
    ahead = np.concatenate([excess, np.zeros(window)])
    need = np.convolve(ahead, np.ones(window), mode="full")[window : window + n]  # steps t+1 .. t+window
    able = [g for g in groups if g.holds_reserve]
    stored = sum(g.stored - g.min_kwh for g in able)
    usable = sum(g.max_kwh - g.min_kwh for g in able)
    charge = sum(g.max_charge * g.eta_c for g in able)
    reachable = stored + np.cumsum(dt) * charge
    reachable[:RESERVE_NOW_STEPS] = stored
    # What the forecast load itself needs above the peak comes first: a reserve that kept it back would
    # set the very peak it is there to prevent.
    reachable -= np.cumsum(dt * np.maximum(0.0, load - pv - level) / eta_d)
    return np.maximum(0.0, np.minimum(np.minimum(need, reachable), RESERVE_SHARE * usable))


class Planner:
    """Plans one after another; a re-plan with the same horizon end warm-starts from the last solve.

    Holds only the solver between calls: every plan is fully determined by its inputs (up to the choice
    between equally cheap plans).
    """

    def __init__(self, time_limit_s: float | None = None) -> None:
        self._solver: _Solver | None = None
        self._window: tuple[datetime, int] | None = None
        self.time_limit_s = time_limit_s  # the add-on solves on its event loop: a bound on a stall

    def forget(self) -> None:
        self._solver, self._window = None, None

    def plan(self, inputs: PlanInputs) -> Plan:
        steps = len(inputs.import_price)
        if steps == 0 or not inputs.batteries:
            return _idle_plan(inputs, "nothing to plan: no prices or no batteries")
        for name in ("import_price", "export_price", "load_kw", "pv_kw", "wallbox_kw", "load_high_kw"):
            if not np.all(np.isfinite(np.asarray(getattr(inputs, name), dtype=np.float64)[:steps])):
                return _idle_plan(inputs, f"not planned: {name} has gaps (NaN or infinite values)")
        if not all(math.isfinite(s.energy_kwh) and math.isfinite(s.max_kw) for s in inputs.car):
            return _idle_plan(inputs, "not planned: a car session's energy or power is not a number")
        q0 = quarter_start(inputs.start)
        solver = self._solver
        if solver is not None and self._window is not None:
            window_start, window_steps = self._window
            if window_start <= q0 and window_start + window_steps * QUARTER == q0 + steps * QUARTER:
                problem, forecast = _problem(inputs, window_start, window_steps)
                if problem.layout() == solver.layout:
                    solver.update(problem)
                    return _plan(inputs, problem, solver.solve(problem), forecast, self)
        self._window = (q0, steps)
        problem, forecast = _problem(inputs, q0, steps)
        self._solver = _Solver(problem, time_limit_s=self.time_limit_s)
        return _plan(inputs, problem, self._solver.solve(problem), forecast, self)


def plan(inputs: PlanInputs) -> Plan:
    """The cost-optimal plan for these inputs (a fresh solver)."""
    return Planner().plan(inputs)


# ------------------------------------------------------------------------------------------ the plan


def _empty_series(start: datetime) -> PlanSeries:
    none = np.zeros(0)
    return PlanSeries(
        start,
        none,
        none,
        none,
        none,
        none,
        none,
        none.reshape(0, 0),
        none.reshape(0, 0),
        none,
        none,
        (),
        none,
        none,
        (),
        False,
        none,
    )


def _idle_plan(inputs: PlanInputs, why: str) -> Plan:
    stored = sum(b.stored_kwh for b in inputs.batteries)
    return Plan(inputs.start, inputs.batteries, _empty_series(inputs.start), 0.0, 0.0, {}, 0.0, stored, why)


def _plan(
    inputs: PlanInputs, problem: Problem, solution: Solution, forecast: _Forecast, owner: Planner
) -> Plan:
    if solution.status != "optimal":
        owner.forget()  # whatever went wrong, the next plan starts afresh
        return _idle_plan(inputs, f"not solved: {solution.status}")
    first = problem.first
    n = problem.steps - first
    _, members = _groups(inputs.batteries)
    car = solution.car[first:]
    wallbox = forecast.wallbox + car
    grid = (solution.imp - solution.exp)[first:]
    battery = (solution.dis - solution.chg)[:, first:]
    total = battery.sum(axis=0)
    dt = problem.dt[first:]
    pi = problem.import_price[first:]
    pe = np.minimum(problem.export_price, problem.import_price)[first:]
    cost = dt * (np.maximum(grid, 0) * pi + np.minimum(grid, 0) * pe)
    stored = solution.soc[:, first:]
    stored_total = stored.sum(axis=0)
    # At the edge of their window at the step's end, "less than all" was all the batteries had.
    empty = stored_total <= sum(g.min_kwh for g in problem.groups) + 0.01
    full = stored_total >= sum(g.max_kwh for g in problem.groups) - 0.01
    ahead = np.concatenate([empty, np.zeros(SCARCE_STEPS, dtype=bool)])
    scarce = np.lib.stride_tricks.sliding_window_view(ahead, SCARCE_STEPS + 1)[:n].any(axis=1)
    tol = ACTION_TOLERANCE_KW
    max_charge = sum(g.max_charge for g in problem.groups)
    max_discharge = sum(g.max_discharge for g in problem.groups)
    # A car the batteries may not feed is the grid's alone: the action is about the rest of the flow.
    house = grid if inputs.batteries_cover_wallbox else grid - wallbox
    codes = np.select(
        [
            np.abs(house) <= tol,
            (total < -tol) & (house > tol),
            (total > tol) & (house < -tol),
            (house > 0) & ~empty & (total < max_discharge - tol),
            (house < 0) & ~full & (total > -max_charge + tol),
        ],
        [0, 1, 2, 3, 4],
        default=0,
    )
    kinds = (Action.SELF_CONSUMPTION, Action.CHARGE, Action.DISCHARGE, Action.HOLD, Action.LIMIT_CHARGE)
    with_capacity = bool(np.any(problem.month_weight > 0))
    q0 = quarter_start(inputs.start)
    peaks: dict[str, float] = {}
    month_peak = np.full(n, math.inf)
    if with_capacity:
        month_peak = solution.peaks[problem.month[first:]]
        for m in sorted(set(problem.month[first:].tolist())):
            t = int(np.argmax(problem.month[first:] == m))
            peaks[_month_key(q0 + t * QUARTER)] = round(float(solution.peaks[m]), 3)
    series = PlanSeries(
        start=inputs.start,
        hours=dt,
        import_price=pi,
        export_price=pe,
        load=forecast.load,
        pv=forecast.pv,
        wallbox=wallbox,
        battery=battery,
        stored=stored,
        grid=grid,
        cost=cost,
        actions=tuple(kinds[c] for c in codes.tolist()),
        month_peak=month_peak,
        scarce=np.asarray(scarce, dtype=np.float64),
        members=tuple(tuple(m) for m in members),
        feed_car=inputs.batteries_cover_wallbox,
        car=car,
    )
    notes = list(forecast.notes)
    if solution.repairs:
        notes.append(f"{solution.repairs} re-solve(s) to keep charging and discharging apart")
    sessions = _session_plans(inputs, problem, solution, forecast.car_needs)
    for session in sessions:
        if session.session.expected:
            stay = session.session
            notes.append(
                f"the car is expected {stay.arrival:%H:%M}-{stay.departure:%H:%M} for "
                f"{stay.energy_kwh:.1f} kWh (its usual stay): planned for, charged once it is there"
            )
        elif not session.met:
            notes.append(
                f"the car misses {session.missing_kwh:.1f} kWh at its departure "
                f"{session.session.departure:%Y-%m-%d %H:%M} (the wallbox at full power cannot give more)"
            )
    capacity = (
        float(np.dot(problem.month_weight, solution.peaks - problem.month_floor)) if with_capacity else 0.0
    )
    return Plan(
        start=inputs.start,
        batteries=inputs.batteries,
        series=series,
        energy_cost_eur=round(float(cost.sum()), 4),
        capacity_cost_eur=round(capacity, 4),
        month_peaks_kw=peaks,
        terminal_value_per_kwh=problem.terminal_value,
        stored_end_kwh=round(float(stored_total[-1]), 4) if n else 0.0,
        status=solution.status,
        notes=tuple(notes),
        car=sessions,
    )


def _session_plans(
    inputs: PlanInputs, problem: Problem, solution: Solution, needs: tuple[int | None, ...]
) -> tuple[SessionPlan, ...]:
    """What the solution gives each car session (one not in view: all later, or all missing if departed)."""
    out = []
    for session, i in zip(inputs.car, needs, strict=True):
        if i is None:
            departed = session.departure <= inputs.start
            out.append(
                SessionPlan(
                    session,
                    0.0,
                    0.0 if departed else max(0.0, session.energy_kwh),
                    max(0.0, session.energy_kwh) if departed else 0.0,
                )
            )
            continue
        need = problem.car_needs[i]
        span = slice(need.begin, need.end)
        planned = float(np.dot(problem.dt[span], solution.car[span]))
        out.append(
            SessionPlan(
                session,
                round(planned, 4),
                round(float(solution.later[i]), 4),
                round(max(0.0, float(solution.missing[i])), 4),
            )
        )
    return tuple(out)


def _steps(plan: Plan, count: int) -> tuple[PlanStep, ...]:
    s = plan.series
    q0 = quarter_start(s.start)
    powers, socs = _per_battery(plan.batteries, s.members, s.battery[:, :count], s.hours[:count])
    total = s.battery.sum(axis=0)
    later = np.maximum.accumulate(s.import_price[::-1])[::-1]  # the dearest import from each step on
    steps = []
    for t in range(min(count, len(s.hours))):
        b, g = float(total[t]), float(s.grid[t])
        action = s.actions[t]
        price, export = float(s.import_price[t]), float(s.export_price[t])
        steps.append(
            PlanStep(
                start=s.start if t == 0 else q0 + t * QUARTER,
                hours=float(s.hours[t]),
                import_price=price,
                export_price=export,
                load_kw=float(s.load[t]),
                pv_kw=float(s.pv[t]),
                wallbox_kw=float(s.wallbox[t]),
                battery_kw=round(b, 4),
                grid_kw=round(g, 4),
                cost_eur=round(float(s.cost[t]), 5),
                action=action,
                reason=_reason(action, b, g, price, export, float(later[t]), float(s.month_peak[t])),
                batteries=tuple(
                    BatteryStep(spec.id, round(powers[i][t], 4), round(socs[i][t], 2))
                    for i, spec in enumerate(plan.batteries)
                ),
                peak_kw=float(s.month_peak[t]),
                scarce=bool(s.scarce[t]),
                feed_car=s.feed_car,
                car_kw=round(float(s.car[t]), 4),
            )
        )
    return tuple(steps)


def _at(values: FloatArray, n: int) -> FloatArray:
    if len(values) >= n:
        return values[:n]
    return np.concatenate([values, np.zeros(n - len(values))])


def _reason(
    action: Action, battery: float, grid: float, price: float, export: float, later: float, peak: float
) -> str:
    match action:
        case Action.SELF_CONSUMPTION:
            return "self-consumption: the batteries cover the load and store the surplus"
        case Action.CHARGE:
            why = f"up to {later:.3f} later" if later > price + 1e-9 else "the capacity peak later"
            return f"charge {-battery:.2f} kW from the grid at {price:.3f} EUR/kWh (for {why})"
        case Action.HOLD:
            level = f"import {grid:.2f} kW" + (" (this month's peak)" if abs(grid - peak) < 0.01 else "")
            return f"keep stored energy for dearer hours (up to {later:.3f} EUR/kWh): {level}"
        case Action.LIMIT_CHARGE:
            return f"export {-grid:.2f} kW at {export:.3f} EUR/kWh now, keep battery room for later"
        case Action.DISCHARGE:
            return f"discharge {battery:.2f} kW: export {-grid:.2f} kW at {export:.3f} EUR/kWh"


def _per_battery(
    batteries: tuple[BatterySpec, ...],
    members: tuple[tuple[int, ...], ...],
    battery: FloatArray,
    dt: FloatArray,
) -> tuple[list[list[float]], list[list[float]]]:
    """Each group's planned power shared over its members step by step (see `split_power`)."""
    n = battery.shape[1]
    powers = [[0.0] * n for _ in batteries]
    socs = [[b.soc] * n for b in batteries]
    for g, indices in enumerate(members):
        specs = [batteries[i] for i in indices]
        stored = [b.stored_kwh for b in specs]
        for t in range(n):
            shares = split_power(
                float(battery[g, t]),
                tuple(
                    Headroom(s, b.min_kwh, b.max_kwh, b.max_charge_kw, b.max_discharge_kw)
                    for s, b in zip(stored, specs, strict=True)
                ),
            )
            for k, (i, b) in enumerate(zip(indices, specs, strict=True)):
                p = shares[k]
                delta = -p / b.discharge_efficiency if p > 0 else -p * b.charge_efficiency
                stored[k] = min(b.max_kwh, max(b.min_kwh, stored[k] + delta * float(dt[t])))
                powers[i][t] = p
                socs[i][t] = 100 * stored[k] / b.capacity_kwh if b.capacity_kwh else 0.0
    return powers, socs


# ------------------------------------------------------------------------------ carrying out a step


@dataclass(frozen=True)
class Headroom:
    """What a battery can still give or take, for `split_power`."""

    stored_kwh: float
    min_kwh: float
    max_kwh: float
    max_charge_kw: float
    max_discharge_kw: float


def split_power(total_kw: float, batteries: Sequence[Headroom]) -> tuple[float, ...]:
    """Share a total (+ discharge) over batteries: in proportion to the energy each can still give (or the
    room it has), capped by its power limit, the rest passed on to the others. Keeps the SOCs together."""
    if not batteries:
        return ()
    if total_kw >= 0:
        weights = [max(0.0, b.stored_kwh - b.min_kwh) for b in batteries]
        caps = [b.max_discharge_kw if b.stored_kwh > b.min_kwh + 1e-6 else 0.0 for b in batteries]
    else:
        weights = [max(0.0, b.max_kwh - b.stored_kwh) for b in batteries]
        caps = [b.max_charge_kw if b.stored_kwh < b.max_kwh - 1e-6 else 0.0 for b in batteries]
    left = abs(total_kw)
    out = [0.0] * len(batteries)
    open_ = [i for i in range(len(batteries)) if caps[i] > 0]
    while left > 1e-9 and open_:
        weight = sum(weights[i] for i in open_)
        share = {i: left * (weights[i] / weight if weight > 0 else 1 / len(open_)) for i in open_}
        capped = [i for i in open_ if out[i] + share[i] >= caps[i] - 1e-12]
        if not capped:
            for i in open_:
                out[i] += share[i]
            left = 0.0
            break
        for i in capped:
            left -= caps[i] - out[i]
            out[i] = caps[i]
        open_ = [i for i in open_ if i not in capped]
    sign = 1.0 if total_kw >= 0 else -1.0
    return tuple(sign * p for p in out)


@dataclass(frozen=True)
class Setpoint:
    """How to carry out the running step now: the batteries' own Auto control, or a total in Passive."""

    auto: bool
    battery_kw: float = 0.0  # total, + = discharging, when not auto
    reason: str = ""
    capped: bool = False  # a scarce self-consumption step holding back (pass it on as `capped` next time)


def setpoint(
    step: PlanStep, grid_kw: float, battery_kw: float, wallbox_kw: float = 0.0, *, capped: bool = False
) -> Setpoint:
    """How to carry out `step` now, from the meter: grid (+ import), batteries (+ discharging), the wallbox.

    Self-consumption is the batteries' own control (Auto). The other steps are Passive at a total power
    worked out from the meter, so the forecast's error goes where the plan would want it, within the step's
    direction (a holding step never charges; a charging step discharges only to keep the import under the
    month's peak):
    - charge, limit charge: the batteries hold the planned grid flow;
    - discharge: the batteries hold the planned grid flow up to the plan's power; a load above it takes from
      the export, then from the grid up to the month's peak (the energy they hold back is the capacity
      reserve; the replay measured the import this costs against the peaks it saves);
    - hold: the grid takes the load up to the month's planned peak, the batteries only what is above it
      (a load spike the forecast missed sets no new capacity peak, and stored energy is not spent on it
      otherwise);
    - self-consumption while the plan expects to empty the batteries soon: a load above the peak gets only
      the part above it (the energy would run out before the evening does, and the import is the same).
      Once holding back (`capped`, as the last call said), the batteries go back to Auto only when the load
      is SCARCE_HYSTERESIS_KW below the ceiling: a load that hovers at it must not switch them back and
      forth.
    While the car charges and the batteries may not feed it, they follow the house without the car (in
    Passive, since Auto would feed the car too), and so all through a step whose plan charges the car.
    """
    car = 0.0 if step.feed_car else max(0.0, wallbox_kw)
    planned_car = 0.0 if step.feed_car else step.wallbox_kw
    house = grid_kw + battery_kw - car  # what the house needs, from the batteries or the grid
    ceiling = step.peak_kw - planned_car - PEAK_MARGIN_KW
    entry = ceiling - SCARCE_HYSTERESIS_KW if capped else ceiling
    if step.action is Action.SELF_CONSUMPTION and step.scarce and house > entry:
        # With the car, the ceiling is what the planned car leaves the house: below zero when the car
        # takes all of the peak, and never a reason to give the car the batteries' energy.
        power = max(0.0, house - ceiling) if car <= 0 else min(max(0.0, house - ceiling), max(0.0, house))
        why = "a load above this month's peak, with little energy to spare"
        return Setpoint(False, power, why if house > ceiling else f"{why} (a moment ago)", capped=True)
    # A step that plans the car (which the batteries may not feed) stays Passive all through: the wallbox may
    # start any minute, and Auto would answer it from the batteries before the next command.
    if step.action is Action.SELF_CONSUMPTION and car <= 0 and (step.feed_car or step.car_kw <= 0):
        return Setpoint(True, reason=step.reason)
    low, high = {
        Action.SELF_CONSUMPTION: (-math.inf, math.inf),
        Action.CHARGE: (-math.inf, 0.0),
        Action.LIMIT_CHARGE: (-math.inf, 0.0),
        Action.HOLD: (0.0, math.inf),
        Action.DISCHARGE: (0.0, math.inf),
    }[step.action]
    planned = step.grid_kw - planned_car
    target = {
        Action.SELF_CONSUMPTION: 0.0,
        Action.HOLD: max(planned, ceiling),
        Action.CHARGE: min(planned, ceiling),
    }.get(step.action, planned)
    power = min(high, max(low, house - target))
    if step.action is Action.DISCHARGE:
        # Selling: a house load above its forecast takes from the export (then from the grid, up to the
        # month's peak), not from the batteries beyond the plan's power. What they hold back is the capacity
        # reserve, kept for a spike above the peak; spent on the load's surprise it was gone when the spike
        # came (the spike itself is still shaved below).
        power = min(power, max(0.0, step.battery_kw))
    if house - power > ceiling:
        power = house - ceiling  # whatever the step: no new capacity peak while the batteries can help
    if car > 0:
        power = min(power, max(0.0, house))
    return Setpoint(False, power, step.reason)
