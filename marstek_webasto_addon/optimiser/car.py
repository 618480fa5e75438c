"""The car's charge modes: one `CarController.step(inputs)` per control interval (1-10 s), a current out.

Pure: no I/O, no clock (t: seconds on a monotonic clock, for durations; now: local time, for the record).

Modes, per wallbox (`ChargeMode`):
- off: no charging (current 0: the session is paused);
- now: the maximum current the wallbox, the cable and the car allow;
- min_pv: the minimum current whenever the car wants energy, more with PV surplus;
- pv: PV surplus only. It starts once the surplus has covered the minimum current for the start delay and
  stops once it has been short for the stop delay (a passing cloud does not stop it); minimum on- and
  off-times keep the contactor from chattering; while charging the current follows the surplus in whole
  amperes, with a deadband and at most one change per interval;
- plan: the planner's power for this quarter-hour, within the wallbox's limits. With no plan at all (the
  planner off, or failing for a while) as `now`, so the car is ready by its departure; a plan that goes or
  comes back is no person's act: the minimum on- and off-times guard those starts and stops.

Surplus: the PV the house does not use (what would be exported if neither the car nor the home batteries
took anything), less what the home batteries should take first under the priority. Battery discharge is
never surplus, unless the batteries may feed the car (then down to a SOC, and only the discharge already
flowing: the batteries keep a session going, they never start one).

Capacity cap, in every mode: the current is limited so this clock quarter-hour's average import stays under
the month's target. When even the minimum current would break it, pv and plan pause; now and min_pv keep the
minimum, because a person asked for charging (the reason says so). In plan, only while the session has slack
(`car_sessions.has_slack`): a car that could no longer make up later what it does not take now gets the
planned power, whatever the quarter comes to (the replay carries out the plan the same way).

Phases: a wallbox that can switch (the UNITE, when it says so) charges on one phase in pv and min_pv while
the surplus is too small for three; a switch interrupts charging, so it waits for the wish to last and comes
at most once per interval. A wallbox that cannot (the NEXT) keeps the phases it has.

A person's acts count at once: a mode change, a car unplugged or full. The delays and minimum times only
guard the controller's own starts and stops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from .car_sessions import CAP_MARGIN_KW, burst_hours
from .tariff import quarter_end, quarter_start

QUARTER_H = 0.25


class ChargeMode(StrEnum):
    OFF = "off"
    NOW = "now"
    MIN_PV = "min_pv"
    PV = "pv"
    PLAN = "plan"


class SurplusPriority(StrEnum):
    """Who gets PV surplus first: the home batteries or the car."""

    BATTERIES_FIRST = "batteries_first"
    CAR_FIRST = "car_first"
    BATTERIES_FIRST_UNTIL_SOC = "batteries_first_until_soc"  # the batteries until their SOC reaches a value


class CarState(StrEnum):
    OFF = "off"  # the mode says no charging
    NO_CAR = "no_car"  # nothing plugged in, the car wants no energy, or the limits allow no charging
    WAITING = "waiting"  # for surplus, a delay, the off-time or the plan
    CHARGING = "charging"
    PAUSED = "paused"  # the capacity cap holds it back


@dataclass(frozen=True)
class WallboxLimits:
    min_current_a: int = 6
    max_current_a: int = 16  # min(installation maximum, cable, car)
    phases: int = 3  # in use now: 1 or 3
    volts: float = 230.0
    can_switch_phases: bool = False  # the UNITE, when the device says it can; never the NEXT


@dataclass(frozen=True)
class HomeBatteries:
    """All home batteries together."""

    power_w: float = 0.0  # + = discharging
    charge_room_w: float = 0.0  # how much more they could take in charge, on top of what they take now
    soc: float | None = None  # %


PLAN_CARRY_AS = 60.0  # plan: ampere-seconds behind (or ahead) before the current steps up (or back)
# plan: a car not charging does not start in a quarter's last seconds. Its minimum on-time would run on into
# the next quarter whatever that quarter's plan is (or start and stop it within seconds, where the capacity
# budget ends it); the next quarter's plan decides a moment later.
PLAN_LATE_START_S = 60.0


@dataclass(frozen=True)
class QuarterBudget:
    """The capacity tariff's running clock quarter-hour; a new quarter comes with its import back at 0."""

    import_wh: float  # this quarter's import so far
    seconds_left: float
    target_kw: float  # the month's target for a quarter's average import


@dataclass(frozen=True)
class CarSettings:
    priority: SurplusPriority = SurplusPriority.BATTERIES_FIRST
    priority_soc: float = 80.0  # batteries_first_until_soc: the batteries come first below this SOC
    batteries_feed_car: bool = False
    feed_car_min_soc: float = 30.0  # the batteries feed the car only while above this SOC
    start_delay_s: float = 60.0
    stop_delay_s: float = 300.0
    min_on_s: float = 300.0
    min_off_s: float = 300.0
    current_interval_s: float = 15.0  # at most one current change this often (the cap lowers it at once)
    deadband_w: float = 100.0  # the surplus must pass the next ampere by this much before the current moves
    phase_delay_s: float = 120.0  # a phase wish must last this long before a switch interrupts charging
    phase_interval_s: float = 600.0  # at most one phase switch while charging this often
    phase_up_margin_w: float = 300.0  # back to three phases only with this much above the three-phase minimum


@dataclass(frozen=True)
class CarInputs:
    t: float  # seconds on a monotonic clock: durations
    now: datetime  # local wall-clock time
    mode: ChargeMode
    grid_power: float | None  # W at the meter, + = import; None when stale
    car_power: float  # W the car draws now
    plugged_in: bool
    wants_energy: bool = True  # False: the car is full or has stopped taking energy
    limits: WallboxLimits = field(default_factory=WallboxLimits)
    batteries: HomeBatteries = field(default_factory=HomeBatteries)
    settings: CarSettings = field(default_factory=CarSettings)
    quarter: QuarterBudget | None = None  # None: no capacity tariff
    planned_power_w: float | None = 0.0  # plan: the planner's car power for this quarter-hour; None: no plan
    # plan: the session can still be met if the car waits (`car_sessions.has_slack`); without slack the
    # capacity cap does not hold the planned power back: the departure comes first
    plan_slack: bool = True
    # plan, without slack: what the car must draw for the rest of the quarter so that half the wallbox's full
    # power after it still meets the departure (`car_sessions.departure_floor_kwh`, as W); the capacity cap
    # holds it down to that, not below. None: not known, the planned power goes past the cap
    plan_floor_w: float | None = None


@dataclass(frozen=True)
class CarDecision:
    at: datetime
    current_a: int  # 0 = pause; otherwise between the wallbox's minimum and maximum
    charge: bool
    phases: int  # wanted: 1 or 3
    state: CarState
    reason: str
    available_w: float | None  # what the car may take from PV (and the batteries, when allowed); None: stale
    batteries_may_feed_car: bool
    batteries_not_to_car_w: float  # the car's power the home batteries must not deliver (0 when they may)


@dataclass(frozen=True)
class _Cap:
    """The capacity cap for this step: the most amperes the quarter's budget allows at the phases in use."""

    amps: int | None  # None: no capacity tariff
    note: str = ""  # why the cap is what it is when it could not be worked out
    target_kw: float = 0.0
    import_wh: float = 0.0
    budget_wh: float = 0.0  # what the quarter may still import: up to CAP_MARGIN_KW under the target
    house_w: float = 0.0  # the rest of the house's import
    hours_left: float = 0.0
    per_amp: float = 0.0

    def below(self, margin_w: float) -> int:
        """The most amperes that keep `margin_w` under the budget."""
        if self.amps is None or self.note:
            return self.amps or 0
        room_w = self.budget_wh / self.hours_left - self.house_w - margin_w
        return math.floor(room_w / self.per_amp + 1e-9)

    def burst_fits(self, amps: int, hold_s: float) -> bool:
        """Whether the car may draw `amps` for `hold_s` more and then stop within the budget, the house's
        own import to the quarter's end counted too (`car_sessions.burst_hours`, the replay's rule)."""
        if self.amps is None or self.note:
            return False
        hold_h = min(self.hours_left, hold_s / 3600)
        car_kw = amps * self.per_amp / 1000
        fits_h = burst_hours(self.budget_wh / 1000, self.hours_left, self.house_w / 1000, car_kw)
        return hold_h <= fits_h + 1e-9

    def heading(self, amps: int) -> str:
        """What the quarter comes to if the car drew `amps` to its end, as the reason shows it."""
        if self.note:
            return self.note
        car_w = amps * self.per_amp
        kw = (self.import_wh + max(0.0, self.house_w + car_w) * self.hours_left) / (QUARTER_H * 1000)
        return f"capacity: quarter-hour heading for {kw:.1f} kW over {self.target_kw:.1f} kW target"


@dataclass
class CarController:
    """The controller's memory between steps; everything else comes in with the inputs."""

    mode: ChargeMode | None = None
    charging: bool = False
    current_a: int = 0
    phases: int | None = None  # what was last asked for
    could_switch: bool = False  # the box could switch phases at the last step
    started_t: float | None = None  # None: no start the minimum on-time still guards
    stopped_t: float | None = None  # None: no stop the minimum off-time still guards
    changed_t: float | None = None  # the last current change
    enough_since: float | None = None  # the surplus has covered the minimum since
    short_since: float | None = None  # the surplus has been short of the minimum since
    phase_wish: int | None = None
    phase_wish_since: float | None = None
    phase_changed_t: float | None = None  # the last switch that interrupted charging
    # plan: a planned power between two ampere steps gets the upper step for part of the quarter, so the
    # quarter gets its planned energy (always the lower one came short by half a step on average, 345 W on
    # three phases, and a long session made that up with a new capacity peak before its departure)
    plan_quarter: datetime | None = None
    plan_carry: float = 0.0  # A·s the plan asked for beyond what was given, this quarter
    plan_t: float | None = None
    plan_upper: bool = False

    def step(self, inputs: CarInputs) -> CarDecision:
        i = inputs
        lim = i.limits
        if i.mode != self.mode:
            # A person changed the mode: it acts at once, and the surplus timers start afresh.
            self.mode = i.mode
            self.started_t = self.stopped_t = None
            self._forget_surplus()
        # Without switching the box's phases are the ones; when switching comes back (a refused switch's
        # retry, a car's phases learnt), from the phases the box is on, not from what was asked before.
        if self.phases is None or not lim.can_switch_phases or not self.could_switch:
            self.phases = lim.phases
        self.could_switch = lim.can_switch_phases
        feed = self._may_feed(i)
        available = _available(i, feed)
        idle = _idle(i)
        if idle is not None or i.mode is not ChargeMode.PLAN:
            self.plan_t = None  # a gap in the plan's steps is not booked against the next quarter's current
        if idle is not None:
            # A car plugged in again waits the whole start delay, not what was left of an old one.
            self._forget_surplus()
            current, state, reason = 0, *idle
        elif i.mode is ChargeMode.NOW:
            current, state, reason = self._now(i)
        elif i.mode is ChargeMode.PLAN:
            current, state, reason = self._plan(i)
        else:
            current, state, reason = self._surplus(i, available, minimum=i.mode is ChargeMode.MIN_PV)
        return self._decide(i, current, state, reason, feed, available)

    def _forget_surplus(self) -> None:
        self.enough_since = self.short_since = None
        self.phase_wish = self.phase_wish_since = None

    # modes --------------------------------------------------------------------------------------------

    def _now(self, i: CarInputs) -> tuple[int, CarState, str]:
        lim = i.limits
        note = self._follow_phases(i, 3, delay_s=0.0) if self.charging else ""
        if not self.charging:
            self.phases = 3 if lim.can_switch_phases else lim.phases
        want = self._paced(i, lim.max_current_a)
        return self._capped(i, want, f"{note}as fast as allowed: {want} A", keep_minimum=True)

    def _plan(self, i: CarInputs) -> tuple[int, CarState, str]:
        lim = i.limits
        if i.planned_power_w is None:
            self.plan_t = None
            if not self.charging and not self._off_time_over(i):
                return 0, CarState.WAITING, f"no plan: off-time, starts in {self._off_left(i):.0f} s"
            current, state, reason = self._now(i)
            return current, state, f"no plan: {reason}"
        planned = max(0.0, i.planned_power_w)
        wish = lim.phases
        if lim.can_switch_phases:
            # A planned power only one phase can carry goes on one phase; anything else on three.
            wish = 1 if lim.min_current_a * lim.volts <= planned < self._minimum_w(lim, 3) else 3
        note = self._follow_phases(i, wish, delay_s=0.0) if self.charging else ""
        if not self.charging:
            self.phases = wish
        amps = min(lim.max_current_a, _amps(planned, self._per_amp(lim)))
        amps += self._plan_step_up(i, min(float(lim.max_current_a), planned / self._per_amp(lim)), amps)
        text = f"plan {planned / 1000:.1f} kW"
        if amps < lim.min_current_a:
            if self.charging and not self._on_time_over(i):
                left = self._on_left(i)
                return self._capped(
                    i,
                    lim.min_current_a,
                    f"{text}: minimum on-time, {lim.min_current_a} A for {left:.0f} s",
                    burst=True,
                )
            minimum = self._minimum_w(lim, self._phases())
            return 0, CarState.WAITING, f"{text}, below the {minimum / 1000:.1f} kW minimum: paused"
        if not self.charging and not self._off_time_over(i):
            return 0, CarState.WAITING, f"{text}: off-time, starts in {self._off_left(i):.0f} s"
        if not self.charging and (quarter_end(i.now) - i.now).total_seconds() < PLAN_LATE_START_S:
            return 0, CarState.WAITING, f"{text}: the quarter-hour ends, the next one's plan decides"
        want = self._paced(i, amps)
        if not i.plan_slack:
            cap = self._cap(i)
            if cap.amps is None or cap.amps >= want:
                return want, CarState.CHARGING, f"{note}{text}: {want} A"
            due = want if i.plan_floor_w is None else self._due_amps(i, want)
            held = self._capped(i, want, f"{note}{text}: {want} A", burst=True)
            if held[0] >= due:
                return held
            return due, CarState.CHARGING, f"{note}{text}: {due} A, the departure first ({cap.heading(due)})"
        return self._capped(i, want, f"{note}{text}: {want} A", burst=True)

    def _due_amps(self, i: CarInputs, want: int) -> int:
        """The amperes the departure needs now (`plan_floor_w`): at least the minimum when it needs any, at
        most what the plan wants."""
        floor_w = i.plan_floor_w or 0.0
        if floor_w <= 0:
            return 0
        amps = max(i.limits.min_current_a, math.ceil(floor_w / self._per_amp(i.limits) - 1e-9))
        return min(want, amps)

    def _plan_step_up(self, i: CarInputs, exact: float, lower: int) -> int:
        """1 while the quarter is behind its plan by PLAN_CARRY_AS and until it is as far ahead (a hysteresis:
        the current changes every few minutes, not every step); else 0."""
        quarter = quarter_start(i.now)
        if quarter != self.plan_quarter:
            self.plan_quarter, self.plan_carry, self.plan_upper = quarter, 0.0, False
        elif self.plan_t is not None:
            given = self.current_a if self.charging else 0
            self.plan_carry += (exact - given) * max(0.0, i.t - self.plan_t)
        self.plan_t = i.t
        if self.plan_carry > PLAN_CARRY_AS:
            self.plan_upper = True
        elif self.plan_carry < -PLAN_CARRY_AS:
            self.plan_upper = False
        return 1 if self.plan_upper and exact - lower > 1e-9 and lower > 0 else 0

    def _surplus(self, i: CarInputs, available: float | None, *, minimum: bool) -> tuple[int, CarState, str]:
        """pv, and min_pv (`minimum`: never below the minimum while the car wants energy)."""
        s, lim = i.settings, i.limits
        power = 0.0 if available is None else available
        stale = "grid reading stale, counted as no surplus; " if available is None else ""
        note = ""
        phases = self._phases()
        if self.charging:
            note = self._follow_phases(i, self._surplus_wish(i, power, minimum), delay_s=s.phase_delay_s)
            phases = self._phases()
        elif lim.can_switch_phases:
            # Nothing to interrupt: a start takes the phases the surplus suits (set only when it starts, so a
            # waiting wallbox is not told to switch back and forth).
            phases = 3 if power >= self._minimum_w(lim, 3) else 1
        per_amp = phases * lim.volts
        floor_w = lim.min_current_a * per_amp
        enough = power >= floor_w
        if enough:
            self.short_since = None
            self.enough_since = i.t if self.enough_since is None else self.enough_since
        else:
            self.enough_since = None
            self.short_since = i.t if self.short_since is None else self.short_since
        shown = f"{power / 1000:.1f} of {floor_w / 1000:.1f} kW"
        if minimum:
            self.phases = phases
            want = self._paced(i, self._follow(i, power, per_amp))
            text = (
                f"{stale}PV surplus {power / 1000:.1f} kW: {want} A"
                if want > lim.min_current_a
                else f"{stale}minimum {want} A (surplus {shown})"
            )
            return self._capped(i, want, note + text, keep_minimum=True)
        if not self.charging:
            if not enough:
                return 0, CarState.WAITING, f"{stale}waiting for surplus: {shown}"
            assert self.enough_since is not None
            waited = i.t - self.enough_since
            if waited < s.start_delay_s:
                return (
                    0,
                    CarState.WAITING,
                    f"waiting for surplus: {shown} for {waited:.0f} of {s.start_delay_s:.0f} s",
                )
            if not self._off_time_over(i):
                return 0, CarState.WAITING, f"surplus {shown}: off-time, starts in {self._off_left(i):.0f} s"
            self.phases = phases
            want = self._follow(i, power, per_amp)
            return self._capped(i, want, f"PV surplus {power / 1000:.1f} kW: {want} A")
        if not enough:
            assert self.short_since is not None
            short = i.t - self.short_since
            if short >= s.stop_delay_s and self._on_time_over(i):
                return 0, CarState.WAITING, f"{stale}surplus short for {short:.0f} s ({shown}): stopped"
            if short >= s.stop_delay_s:
                why = f"minimum on-time, {self._on_left(i):.0f} s left"
            else:
                why = f"for {short:.0f} of {s.stop_delay_s:.0f} s"
            text = f"{note}{stale}surplus short: {shown} {why}: {lim.min_current_a} A"
            return self._capped(i, lim.min_current_a, text)
        want = self._paced(i, self._follow(i, power, per_amp))
        return self._capped(i, want, f"{note}PV surplus {power / 1000:.1f} kW: {want} A")

    # limits ---------------------------------------------------------------------------------------------

    def _capped(
        self, i: CarInputs, want: int, reason: str, *, keep_minimum: bool = False, burst: bool = False
    ) -> tuple[int, CarState, str]:
        """The capacity cap over a current the mode wants: lower at once (the bill counts every second);
        below the minimum, a pause, or the minimum where a person asked for charging.

        `burst` (plan): below the minimum, the minimum for as long as the quarter's budget lasts, then a
        pause. A plan below the wallbox's minimum is carried out as the minimum for part of the quarter
        (`wallbox_minutes`); judged as if it ran to the quarter's end, the cap paused it until the last
        minutes, and the car got about half of what the budget allowed."""
        lim = i.limits
        cap = self._cap(i)
        if cap.amps is None or cap.amps >= want:
            return want, CarState.CHARGING, reason
        if cap.amps >= lim.min_current_a:
            amps = cap.amps
            if self.charging and 0 < self.current_a < amps:
                # Up only with the deadband's margin: the cap lowers the current at once, so a house load
                # wobbling round an ampere's edge would otherwise move it up and down at every pace.
                amps = max(self.current_a, min(amps, cap.below(i.settings.deadband_w)))
            return amps, CarState.CHARGING, f"{cap.heading(want)}: {amps} A"
        even = f"{cap.heading(lim.min_current_a)} even at {lim.min_current_a} A"
        # Started, the minimum runs its on-time; running, it stops at the next step if the budget is gone.
        hold_s = i.settings.current_interval_s if self.charging else i.settings.min_on_s
        if burst and cap.burst_fits(lim.min_current_a, hold_s):
            lasts = f"{lim.min_current_a} A while the quarter's budget lasts ({cap.target_kw:.1f} kW target)"
            return lim.min_current_a, CarState.CHARGING, f"{reason}, capped: {lasts}"
        if keep_minimum:
            return lim.min_current_a, CarState.CHARGING, f"{even}: the minimum kept, charging was asked for"
        return 0, CarState.PAUSED, f"{even}: paused"

    def _cap(self, i: CarInputs) -> _Cap:
        q, lim = i.quarter, i.limits
        if q is None:
            return _Cap(None)
        if i.grid_power is None:
            return _Cap(lim.min_current_a, "grid reading stale, the capacity cap cannot be checked")
        hours_left = max(q.seconds_left, 1.0) / 3600
        budget_wh = (q.target_kw - CAP_MARGIN_KW) * QUARTER_H * 1000 - q.import_wh
        house_w = i.grid_power - i.car_power  # negative: the house exports, and the car may take that too
        per_amp = self._per_amp(lim)
        amps = math.floor((budget_wh / hours_left - house_w) / per_amp + 1e-9)
        return _Cap(amps, "", q.target_kw, q.import_wh, budget_wh, house_w, hours_left, per_amp)

    def _may_feed(self, i: CarInputs) -> bool:
        s, soc = i.settings, i.batteries.soc
        return s.batteries_feed_car and soc is not None and soc > s.feed_car_min_soc

    # amperes and phases ---------------------------------------------------------------------------------

    def _follow(self, i: CarInputs, power: float, per_amp: float) -> int:
        """Whole amperes for `power`, between the limits; while charging the current moves only when the
        surplus passes the next ampere by the deadband (up), or falls short of this one by it (down)."""
        lim, band = i.limits, i.settings.deadband_w
        if not self.charging or self.current_a == 0:
            want = _amps(power, per_amp)
        else:
            want = self.current_a
            if _amps(power - band, per_amp) > want:
                want = _amps(power - band, per_amp)
            elif _amps(power + band, per_amp) < want:
                want = _amps(power + band, per_amp)
        return min(lim.max_current_a, max(lim.min_current_a, want))

    def _paced(self, i: CarInputs, want: int) -> int:
        """At most one change per interval while charging (the car takes seconds to settle on a new current,
        and the meter to show it). The maximum is never paced: a lower one (a cable swapped for a weaker one)
        holds at once, whatever the pace."""
        if not self.charging or self.current_a == 0 or want == self.current_a:
            return want
        if self.changed_t is not None and i.t - self.changed_t < i.settings.current_interval_s:
            return min(self.current_a, i.limits.max_current_a)
        return want

    def _surplus_wish(self, i: CarInputs, power: float, minimum: bool) -> int:
        """One phase while three cannot be fed (pv: and one can; min_pv: any surplus, one imports less),
        three again only with a margin above the three-phase minimum."""
        lim = i.limits
        three = self._minimum_w(lim, 3)
        if self._phases() == 1:
            return 3 if power >= three + i.settings.phase_up_margin_w else 1
        if power < three and (minimum or power >= self._minimum_w(lim, 1)):
            return 1
        return 3

    def _follow_phases(self, i: CarInputs, wish: int, delay_s: float) -> str:
        """Switch the phases of a running session once the wish has lasted `delay_s` and the last switch is
        an interval ago (a switch interrupts charging); a note for the reason when it switches."""
        lim, s = i.limits, i.settings
        if not lim.can_switch_phases or wish == self.phases:
            self.phase_wish = self.phase_wish_since = None
            return ""
        if wish != self.phase_wish:
            self.phase_wish, self.phase_wish_since = wish, i.t
        assert self.phase_wish_since is not None
        lasted = i.t - self.phase_wish_since >= delay_s
        spaced = self.phase_changed_t is None or i.t - self.phase_changed_t >= s.phase_interval_s
        if not (lasted and spaced):
            return ""
        self.phases, self.phase_changed_t = wish, i.t
        self.phase_wish = self.phase_wish_since = None
        self.changed_t = None  # the new phases need their own current at once
        self.current_a = 0  # ...worked out afresh, as at a start
        return f"switched to {wish} phase{'s' if wish > 1 else ''} (charging pauses briefly); "

    def _phases(self) -> int:
        return self.phases or 3

    def _per_amp(self, lim: WallboxLimits) -> float:
        return self._phases() * lim.volts

    @staticmethod
    def _minimum_w(lim: WallboxLimits, phases: int) -> float:
        return lim.min_current_a * phases * lim.volts

    # minimum times ---------------------------------------------------------------------------------------

    def _on_left(self, i: CarInputs) -> float:
        return 0.0 if self.started_t is None else max(0.0, i.settings.min_on_s - (i.t - self.started_t))

    def _off_left(self, i: CarInputs) -> float:
        return 0.0 if self.stopped_t is None else max(0.0, i.settings.min_off_s - (i.t - self.stopped_t))

    def _on_time_over(self, i: CarInputs) -> bool:
        return self._on_left(i) <= 0

    def _off_time_over(self, i: CarInputs) -> bool:
        return self._off_left(i) <= 0

    # the decision ----------------------------------------------------------------------------------------

    def _decide(
        self,
        i: CarInputs,
        current: int,
        state: CarState,
        reason: str,
        feed: bool,
        available: float | None,
    ) -> CarDecision:
        charging = current > 0
        person = i.mode is ChargeMode.OFF or not i.plugged_in or not i.wants_energy
        if charging and not self.charging:
            self.started_t = i.t
        if not charging and self.charging:
            # A stop the controller chose starts the minimum off-time; one a person or the car made does not.
            self.stopped_t = None if person else i.t
            self.started_t = None
        if charging != self.charging or current != self.current_a:
            self.changed_t = i.t
        self.charging, self.current_a = charging, current
        phases = self._phases()
        power_w = current * phases * i.limits.volts
        return CarDecision(
            at=i.now,
            current_a=current,
            charge=charging,
            phases=phases,
            state=state,
            reason=reason,
            available_w=available,
            batteries_may_feed_car=feed,
            batteries_not_to_car_w=0.0 if feed else max(power_w, i.car_power),
        )


def _idle(i: CarInputs) -> tuple[CarState, str] | None:
    """Why there is nothing to charge whatever the surplus, or None."""
    lim = i.limits
    if i.mode is ChargeMode.OFF:
        return CarState.OFF, "off: no charging"
    if not i.plugged_in:
        return CarState.NO_CAR, "no car plugged in"
    if not i.wants_energy:
        return CarState.NO_CAR, "the car takes no energy (full, or its own timer)"
    if lim.max_current_a < lim.min_current_a:
        return (
            CarState.NO_CAR,
            f"the limits allow {lim.max_current_a} A, below the {lim.min_current_a} A minimum",
        )
    return None


def _amps(power_w: float, per_amp: float) -> int:
    # 1e-9: a power worked out as exactly n amperes must not round down to n - 1
    return max(0, math.floor(power_w / per_amp + 1e-9))


def _available(i: CarInputs, feed: bool) -> float | None:
    """What the car may take: PV the house does not use, less the batteries' part under the priority, plus
    (when allowed) the discharge already flowing into the car. None: no meter reading."""
    if i.grid_power is None:
        return None
    b, s = i.batteries, i.settings
    # PV beyond the house's own use: what would be exported if neither the car nor the batteries took any.
    surplus = i.car_power - i.grid_power - b.power_w
    first = s.priority is SurplusPriority.BATTERIES_FIRST or (
        s.priority is SurplusPriority.BATTERIES_FIRST_UNTIL_SOC and (b.soc is None or b.soc < s.priority_soc)
    )
    if first:
        surplus -= max(0.0, -b.power_w) + max(0.0, b.charge_room_w)
    available = max(0.0, surplus)
    if feed:
        available += max(0.0, b.power_w)
    return available
