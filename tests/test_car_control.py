"""The car's charge modes on hand-made scenarios: a house whose meter follows the car's current at once.

Per ampere: 690 W on three phases, 230 W on one. The minimum (6 A): 4140 W on three phases, 1380 W on one.
The charge control's phase writes are tested on a simulated UNITE, over real TCP on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marstek_webasto_addon.addon import car_control
from marstek_webasto_addon.addon.car_control import PHASE_RETRY_S, CarControl
from marstek_webasto_addon.addon.inputs import GridInput
from marstek_webasto_addon.bridge.devices import WallboxDevice
from marstek_webasto_addon.devices.outcome import WriteOutcome, WriteStatus
from marstek_webasto_addon.devices.webasto.link import WallboxLink
from marstek_webasto_addon.devices.webasto.registers import RULES, WallboxModel
from marstek_webasto_addon.devices.webasto.simulator import Car, WallboxQuirks, WallboxSim
from marstek_webasto_addon.optimiser.car import (
    CarController,
    CarDecision,
    CarInputs,
    CarSettings,
    CarState,
    ChargeMode,
    HomeBatteries,
    QuarterBudget,
    SurplusPriority,
    WallboxLimits,
)
from marstek_webasto_addon.optimiser.car_sessions import CAP_MARGIN_KW, CarSession, wallbox_minutes

from .webasto_fixtures import BoxFactory, client_for, make_box

__all__ = ["make_box"]
START = datetime(2026, 6, 3, 12, 0)
NEXT = WallboxLimits(min_current_a=6, max_current_a=16, phases=3)  # three phases only
UNITE = WallboxLimits(min_current_a=6, max_current_a=16, phases=3, can_switch_phases=True)


@dataclass
class Site:
    """The wallbox's house: grid = house + car - PV - batteries (+ discharging); the car takes what it is
    given at once, and a switchable wallbox takes the phases it is given."""

    mode: ChargeMode = ChargeMode.PV
    pv_w: float = 0.0
    house_w: float = 500.0
    battery_w: float = 0.0
    room_w: float = 0.0
    soc: float | None = 50.0
    limits: WallboxLimits = NEXT
    settings: CarSettings = field(default_factory=CarSettings)
    quarter: QuarterBudget | None = None
    planned_w: float = 0.0
    plan_slack: bool = True
    plan_floor_w: float | None = None
    plugged_in: bool = True
    t: float = 0.0
    car_w: float = 0.0
    controller: CarController = field(default_factory=CarController)
    log: list[CarDecision] = field(default_factory=list)

    def surplus(self, watts: float) -> None:
        self.pv_w = self.house_w + watts

    def inputs(self) -> CarInputs:
        return CarInputs(
            t=self.t,
            now=START + timedelta(seconds=self.t),
            mode=self.mode,
            grid_power=self.house_w + self.car_w - self.pv_w - self.battery_w,
            car_power=self.car_w,
            plugged_in=self.plugged_in,
            limits=self.limits,
            batteries=HomeBatteries(self.battery_w, self.room_w, self.soc),
            settings=self.settings,
            quarter=self.quarter,
            planned_power_w=self.planned_w,
            plan_slack=self.plan_slack,
            plan_floor_w=self.plan_floor_w,
        )

    def step(self) -> CarDecision:
        decision = self.controller.step(self.inputs())
        if self.limits.can_switch_phases:
            self.limits = replace(self.limits, phases=decision.phases)
        self.car_w = decision.current_a * decision.phases * self.limits.volts
        self.log.append(decision)
        return decision

    def run(self, until: float, every: float = 5.0) -> CarDecision:
        """Steps every `every` seconds after the present one, the last at `until`; its decision."""
        while self.t + every <= until + 1e-9:
            self.t += every
            self.step()
        return self.log[-1]


def charging_pv_site(surplus: float = 5520.0, settings: CarSettings | None = None) -> Site:
    """A pv session that started at t = 60 (the start delay) and is past its minimum on-time at 400."""
    site = Site(settings=settings or CarSettings())
    site.surplus(surplus)
    site.step()
    site.run(400)
    assert site.log[-1].charge
    return site


# --- pv: start and stop --------------------------------------------------------------------------------


def test_pv_starts_after_the_start_delay_and_not_before() -> None:
    site = Site()
    site.surplus(5600)
    first = site.step()
    assert (first.current_a, first.state) == (0, CarState.WAITING)
    assert site.run(35).reason == "waiting for surplus: 5.6 of 4.1 kW for 35 of 60 s"
    assert site.run(55).current_a == 0
    started = site.run(60)
    # 5600 W / 690 W per ampere = 8.1: 8 A
    assert (started.current_a, started.charge, started.phases) == (8, True, 3)
    assert started.reason == "PV surplus 5.6 kW: 8 A"
    assert started.state is CarState.CHARGING


def test_pv_never_starts_on_a_surplus_below_the_minimum() -> None:
    site = Site()
    site.surplus(3000)
    site.step()
    last = site.run(3600)
    assert all(d.current_a == 0 for d in site.log)
    assert last.reason == "waiting for surplus: 3.0 of 4.1 kW"


def test_pv_stops_once_the_surplus_has_been_short_for_the_stop_delay() -> None:
    site = charging_pv_site()
    site.surplus(2000)
    short = site.run(405)  # short since t = 405
    assert (short.current_a, short.charge) == (6, True)  # the minimum meanwhile
    assert short.reason == "surplus short: 2.0 of 4.1 kW for 0 of 300 s: 6 A"
    assert site.run(700).current_a == 6  # 295 s
    stopped = site.run(705)
    assert (stopped.current_a, stopped.charge, stopped.state) == (0, False, CarState.WAITING)
    assert stopped.reason == "surplus short for 300 s (2.0 of 4.1 kW): stopped"


def test_a_passing_cloud_does_not_stop_it() -> None:
    site = charging_pv_site(5700)
    assert site.log[-1].current_a == 8  # 5700 / 690 = 8.3
    site.surplus(1000)
    site.run(520)  # a two-minute dip
    dip = site.log[-24:]
    assert {d.current_a for d in dip} == {6}
    site.surplus(5700)
    back = site.run(540)
    assert back.current_a == 8  # from 6 A: (5700 - 100) / 690 = 8.1
    assert all(d.charge for d in site.log[1 + 12 :])  # never stopped since the start at t = 60


def test_minimum_on_time_and_off_time() -> None:
    site = Site(settings=CarSettings(stop_delay_s=60.0))
    site.surplus(5520)
    site.step()
    assert site.run(60).current_a == 8  # started at 60
    site.surplus(2000)
    held = site.run(130)  # short since 65, the 60 s stop delay is over at 125
    assert held.current_a == 6
    assert held.reason == "surplus short: 2.0 of 4.1 kW minimum on-time, 230 s left: 6 A"
    assert site.run(355).current_a == 6
    assert site.run(360).current_a == 0  # 300 s after the start
    site.surplus(5520)
    waiting = site.run(600)  # the start delay (60 s from 365) is long over; the off-time is not
    assert waiting.current_a == 0
    assert waiting.reason == "surplus 5.5 of 4.1 kW: off-time, starts in 60 s"
    assert site.run(655).current_a == 0
    assert site.run(660).current_a == 8  # 300 s after the stop


# --- following the surplus -----------------------------------------------------------------------------


def test_the_current_follows_the_surplus_in_amperes_with_a_deadband_and_a_pace() -> None:
    site = charging_pv_site(5520)  # 8 A, last changed at t = 60
    # up: the surplus must pass the next ampere (9 A = 6210 W) by the 100 W deadband
    site.surplus(6300)
    assert site.run(420).current_a == 8
    site.surplus(6310)
    assert site.run(425).current_a == 9
    # down: only once the car would import more than the deadband
    site.surplus(6115)
    assert site.run(445).current_a == 9
    site.surplus(6105)
    assert site.run(450).current_a == 8  # 25 s after the last change
    # at most one change per 15 s: a jump right after a change waits for the interval
    site.surplus(7700)  # 7600 / 690 = 11.01: 11 A
    assert site.run(460).current_a == 8
    assert site.run(465).current_a == 11
    assert site.log[-1].reason == "PV surplus 7.7 kW: 11 A"
    site.surplus(20000)
    assert site.run(485).current_a == 16  # the maximum


def test_min_pv_keeps_the_minimum_and_follows_the_surplus_above_it() -> None:
    site = Site(mode=ChargeMode.MIN_PV)
    site.surplus(0)
    first = site.step()  # at once, no delay
    assert (first.current_a, first.reason) == (6, "minimum 6 A (surplus 0.0 of 4.1 kW)")
    site.surplus(7000)  # 6900 / 690 = 10
    assert site.run(20).current_a == 10
    assert site.log[-1].reason == "PV surplus 7.0 kW: 10 A"
    site.surplus(-2000)  # the house imports anyway: still the minimum, hours on end
    site.run(3600)
    assert {d.current_a for d in site.log[-100:]} == {6}


# --- priorities and the batteries ----------------------------------------------------------------------


def priority_inputs(priority: SurplusPriority, soc: float) -> CarInputs:
    """PV 5520 W beyond the house: 4020 W exported while the batteries charge 1500 W and could take 1000 W
    more; the car takes nothing yet."""
    return CarInputs(
        t=0.0,
        now=START,
        mode=ChargeMode.PV,
        grid_power=-4020.0,
        car_power=0.0,
        plugged_in=True,
        batteries=HomeBatteries(power_w=-1500.0, charge_room_w=1000.0, soc=soc),
        settings=CarSettings(priority=priority, priority_soc=80.0),
    )


@pytest.mark.parametrize(
    ("priority", "soc", "available", "amps"),
    [
        (SurplusPriority.BATTERIES_FIRST, 60.0, 3020.0, 0),  # 5520 - 1500 - 1000: the rest only
        (SurplusPriority.CAR_FIRST, 60.0, 5520.0, 8),  # the batteries' charge goes to the car
        (SurplusPriority.BATTERIES_FIRST_UNTIL_SOC, 60.0, 3020.0, 0),  # below 80 %: batteries first
        (SurplusPriority.BATTERIES_FIRST_UNTIL_SOC, 80.0, 5520.0, 8),  # at 80 %: the car first
    ],
)
def test_surplus_priority(priority: SurplusPriority, soc: float, available: float, amps: int) -> None:
    controller = CarController()
    first = controller.step(priority_inputs(priority, soc))
    assert first.available_w == pytest.approx(available)
    later = controller.step(replace(priority_inputs(priority, soc), t=60.0))
    assert later.current_a == amps


def test_battery_discharge_into_the_car_is_not_surplus_unless_allowed() -> None:
    # PV 1140 W beyond the house; the batteries (Auto) discharge 3000 W, so the 6 A car imports nothing.
    def site(feed: bool, soc: float) -> Site:
        s = charging_pv_site(4140, settings=CarSettings(batteries_feed_car=feed, feed_car_min_soc=30.0))
        s.soc = soc
        s.surplus(1140)
        s.battery_w = 3000.0
        return s

    off = site(False, 80.0)
    first = off.run(405)
    assert first.available_w == pytest.approx(1140)
    assert (first.batteries_may_feed_car, first.batteries_not_to_car_w) == (False, 4140)
    assert off.run(705).current_a == 0  # stopped after the stop delay: the discharge did not count

    allowed = site(True, 80.0)
    fed = allowed.run(3600)
    assert fed.available_w == pytest.approx(4140)  # 1140 of PV + the 3000 W flowing from the batteries
    assert (fed.current_a, fed.batteries_may_feed_car, fed.batteries_not_to_car_w) == (6, True, 0.0)

    floor = site(True, 30.0)  # at the SOC floor: as if not allowed
    at_floor = floor.run(705)
    assert (at_floor.current_a, at_floor.batteries_may_feed_car) == (0, False)


@settings(max_examples=200, deadline=None)
@given(
    surplus=st.floats(-5000, 15000),
    discharge=st.floats(0, 10000),
    car=st.floats(0, 11040),
    room=st.floats(0, 5000),
    soc=st.floats(0, 100),
    priority=st.sampled_from(SurplusPriority),
)
def test_with_the_rule_off_battery_discharge_never_counts(
    surplus: float, discharge: float, car: float, room: float, soc: float, priority: SurplusPriority
) -> None:
    """The same PV and house with the batteries discharging or not: the same available power."""

    def available(battery_w: float) -> float | None:
        inputs = CarInputs(
            t=0.0,
            now=START,
            mode=ChargeMode.PV,
            grid_power=car - surplus - battery_w,
            car_power=car,
            plugged_in=True,
            batteries=HomeBatteries(power_w=battery_w, charge_room_w=room, soc=soc),
            settings=CarSettings(priority=priority, batteries_feed_car=False),
        )
        decision = CarController().step(inputs)
        assert not decision.batteries_may_feed_car
        return decision.available_w

    with_discharge, without = available(discharge), available(0.0)
    assert with_discharge is not None
    assert without is not None
    assert with_discharge == pytest.approx(without, abs=1e-6)


# --- the capacity cap -----------------------------------------------------------------------------------


def test_now_charges_at_the_maximum() -> None:
    decision = Site(mode=ChargeMode.NOW).step()
    assert (decision.current_a, decision.reason) == (16, "as fast as allowed: 16 A")


def test_now_keeps_the_minimum_under_the_cap_and_the_budget_resets_at_the_quarter() -> None:
    # 8 kW target: 2000 Wh a quarter. 1900 Wh imported, 5 min left: 100 Wh / (1/12 h) = 1200 W on average,
    # the house takes 1000 W of it: 200 W for the car, less than 6 A.
    site = Site(mode=ChargeMode.NOW, house_w=1000.0, quarter=QuarterBudget(1900.0, 300.0, 8.0))
    late = site.step()
    assert (late.current_a, late.charge) == (6, True)
    # heading for (1900 + (1000 + 4140) / 12) / 250 = 9.31 kW
    assert late.reason == (
        "capacity: quarter-hour heading for 9.3 kW over 8.0 kW target even at 6 A: "
        "the minimum kept, charging was asked for"
    )
    # the next quarter: 0.05 kW under the target, 1987.5 Wh / 0.25 h = 7950 W, less the house's 1000 W:
    # 6950 / 690 = 10.07 A; up from the 6 A it had only with the 100 W deadband's margin: 6850 / 690, 9 A
    site.quarter = QuarterBudget(0.0, 900.0, 8.0)
    fresh = site.run(300)
    assert fresh.current_a == 9
    # heading for (1000 + 16 x 690) x 0.25 / 0.25 = 12.04 kW at the 16 A it wants
    assert fresh.reason == "capacity: quarter-hour heading for 12.0 kW over 8.0 kW target: 9 A"
    # the house's oven: 3000 W more; the cap lowers at once (no pacing): 4000 / 690 = 5.8, the minimum
    site.house_w = 4000.0
    assert site.run(305).current_a == 6


def test_plan_pauses_when_even_the_minimum_breaks_the_target_then_charges_in_the_next_quarter() -> None:
    site = Site(
        mode=ChargeMode.PLAN, house_w=1000.0, planned_w=6000.0, quarter=QuarterBudget(1900.0, 300.0, 8.0)
    )
    paused = site.step()
    assert (paused.current_a, paused.state) == (0, CarState.PAUSED)
    assert paused.reason == "capacity: quarter-hour heading for 9.3 kW over 8.0 kW target even at 6 A: paused"
    site.quarter = QuarterBudget(0.0, 900.0, 8.0)
    planned = site.run(300)
    # 6000 / 690 = 8.7 A: 8 A and 9 A in turn (the cap allows 10)
    assert (planned.current_a, planned.reason) in ((8, "plan 6.0 kW: 8 A"), (9, "plan 6.0 kW: 9 A"))


def test_plan_does_not_start_the_car_in_a_quarters_last_minute() -> None:
    """Started at 12:14:10, the minimum on-time would run into the next quarter whatever its plan is."""
    site = Site(mode=ChargeMode.PLAN, planned_w=6000.0, t=845.0)
    late = site.step()
    assert (late.current_a, late.state) == (0, CarState.WAITING)
    assert late.reason == "plan 6.0 kW: the quarter-hour ends, the next one's plan decides"
    assert site.run(900).current_a == 8  # 6000 / 690 = 8.7 A
    site.t = 1790.0  # charging already: it goes on to the quarter's end and past it
    assert site.step().current_a in (8, 9)


def test_plan_without_slack_gives_the_planned_power_past_the_target_and_says_why() -> None:
    # 8 kW target, the house at 7.6 kW: 400 W (0 A) left for the car, which the plan gives 6.9 kW (10 A);
    # not even five minutes at the minimum fit: (7600 + 4140) x 5/60 + 7600 x 10/60 = 2245 Wh > 2000 Wh
    site = Site(
        mode=ChargeMode.PLAN, house_w=7600.0, planned_w=6900.0, quarter=QuarterBudget(0.0, 900.0, 8.0)
    )
    capped = site.step()
    assert (capped.current_a, capped.state) == (0, CarState.PAUSED)
    site.plan_slack = False  # the departure is near: what is not charged now cannot be made up
    due = site.run(5)
    assert (due.current_a, due.state) == (10, CarState.CHARGING)
    # heading for (7600 + 10 x 690) x 0.25 / 0.25 = 14.5 kW
    assert due.reason == (
        "plan 6.9 kW: 10 A, the departure first "
        "(capacity: quarter-hour heading for 14.5 kW over 8.0 kW target)"
    )
    site.plan_slack = True  # slack again (a re-plan moved the departure): the cap holds it back at once,
    # to the minimum while the quarter's budget lasts (no import counted yet: 15 s more of it fit) ...
    held = site.run(10)
    assert (held.current_a, held.reason) == (
        6,
        "plan 6.9 kW: 10 A, capped: 6 A while the quarter's budget lasts (8.0 kW target)",
    )
    site.quarter = QuarterBudget(1500.0, 600.0, 8.0)  # ... and pauses once it is spent
    assert site.run(15).current_a == 0
    # and without a capacity tariff, no slack changes nothing
    free = Site(mode=ChargeMode.PLAN, planned_w=6900.0, plan_slack=False).step()
    assert (free.current_a, free.reason) == (10, "plan 6.9 kW: 10 A")


HEADING = "capacity: quarter-hour heading for"


@pytest.mark.parametrize(
    ("floor_w", "amps", "reason"),
    [
        (None, 10, f"plan 6.9 kW: 10 A, the departure first ({HEADING} 14.5 kW over 8.0 kW target)"),
        (4500.0, 7, f"plan 6.9 kW: 7 A, the departure first ({HEADING} 12.4 kW over 8.0 kW target)"),
        (3000.0, 6, f"plan 6.9 kW: 6 A, the departure first ({HEADING} 11.7 kW over 8.0 kW target)"),
        (0.0, 0, f"{HEADING} 11.7 kW over 8.0 kW target even at 6 A: paused"),
    ],
)
def test_plan_without_slack_is_held_down_to_what_its_departure_needs_now(
    floor_w: float | None, amps: int, reason: str
) -> None:
    # 8 kW target, the house at 7.6 kW: the cap leaves the car nothing; the plan wants 6.9 kW (10 A). Without
    # slack, the car gets what its departure needs now (`plan_floor_w`: 4500 W is 7 A, 3000 W the minimum),
    # not the plan's power: a house above its forecast set a new peak in a session's last quarters.
    site = Site(
        mode=ChargeMode.PLAN, house_w=7600.0, planned_w=6900.0, quarter=QuarterBudget(0.0, 900.0, 8.0)
    )
    site.plan_slack, site.plan_floor_w = False, floor_w
    decision = site.step()
    assert (decision.current_a, decision.reason) == (amps, reason)


@pytest.mark.parametrize("house_w", [250.0, -409.0])
def test_plan_below_the_minimum_charges_the_minimum_while_the_quarters_budget_lasts(house_w: float) -> None:
    # 2.86 kW planned on a NEXT (4.14 kW minimum): the minimum for the first ten minutes of the quarter
    # (`wallbox_minutes`), under a 2.45 kW target. Judged as if the minimum ran to the quarter's end, the
    # cap paused it until the budget allowed that, in the eighth minute: the car got 0.35 of 0.55 kWh.
    session = CarSession(START, START + timedelta(hours=12), 30.0, 11.0, 4.14)
    minutes = wallbox_minutes(2.86, session)
    site = Site(mode=ChargeMode.PLAN, house_w=house_w)
    target_kw, every = 2.45, 5.0
    imported_wh = given_wh = 0.0
    for k in range(int(900 / every)):
        site.t = k * every
        site.planned_w = minutes[int(site.t // 60)] * 1000
        site.quarter = QuarterBudget(imported_wh, 900 - site.t, target_kw)
        site.step()
        imported_wh += max(0.0, house_w + site.car_w) * every / 3600  # the meter counts import only
        given_wh += site.car_w * every / 3600
    budget_wh = (target_kw - CAP_MARGIN_KW) * 250  # the cap aims a little under the target
    assert imported_wh <= budget_wh
    # all the budget allows at the minimum, or the plan's energy: short by at most the look-ahead of a
    # running car's check (a current interval) and a step
    allowed_wh = budget_wh - house_w * 250 if house_w >= 0 else budget_wh * 4140 / (4140 + house_w)
    look_ahead_s = CarSettings().current_interval_s + every
    assert given_wh >= min(allowed_wh, 2860 * 0.25) - 4140 * look_ahead_s / 3600
    assert (
        site.log[0].reason == "plan 4.1 kW: 6 A, capped: 6 A while the quarter's budget lasts (2.5 kW target)"
    )


@pytest.mark.parametrize(("limits", "planned"), [(NEXT, 6000.0), (NEXT, 9500.0), (UNITE, 2000.0)])
def test_plan_gives_the_quarter_its_planned_energy_between_two_ampere_steps(
    limits: WallboxLimits, planned: float
) -> None:
    # 6000 W on three phases is 8.7 A: always 8 A gave 5520 W, 480 W short every quarter of a session
    site = Site(mode=ChargeMode.PLAN, limits=limits, planned_w=planned, house_w=300.0)
    site.step()
    site.run(900 - 5)  # a whole clock quarter-hour, a step every 5 s
    currents = [d.current_a for d in site.log]
    given_w = sum(d.current_a * d.phases * limits.volts for d in site.log) / len(site.log)
    assert given_w == pytest.approx(planned, rel=0.02)
    lower = int(planned // (site.log[0].phases * limits.volts))
    assert set(currents) == {lower, lower + 1}
    changes = sum(a != b for a, b in itertools.pairwise(currents))
    assert changes <= 8  # every few minutes, not every step


def test_min_pv_keeps_the_minimum_under_the_cap() -> None:
    site = Site(mode=ChargeMode.MIN_PV, house_w=1000.0, quarter=QuarterBudget(1900.0, 300.0, 8.0))
    decision = site.step()
    assert decision.current_a == 6
    assert decision.reason.endswith("even at 6 A: the minimum kept, charging was asked for")


# --- plan ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "planned", "amps", "phases", "reason"),
    [
        (NEXT, 7000.0, 10, 3, "plan 7.0 kW: 10 A"),  # 7000 / 690 = 10.1
        (NEXT, 20000.0, 16, 3, "plan 20.0 kW: 16 A"),  # the maximum
        (NEXT, 3000.0, 0, 3, "plan 3.0 kW, below the 4.1 kW minimum: paused"),
        (NEXT, 0.0, 0, 3, "plan 0.0 kW, below the 4.1 kW minimum: paused"),
        (UNITE, 3000.0, 13, 1, "plan 3.0 kW: 13 A"),  # one phase: 3000 / 230 = 13.04
        (UNITE, 7000.0, 10, 3, "plan 7.0 kW: 10 A"),
    ],
)
def test_plan_applies_the_planned_power_within_the_limits(
    limits: WallboxLimits, planned: float, amps: int, phases: int, reason: str
) -> None:
    decision = Site(mode=ChargeMode.PLAN, limits=limits, planned_w=planned).step()
    assert (decision.current_a, decision.phases, decision.reason) == (amps, phases, reason)


# --- phases ---------------------------------------------------------------------------------------------


def test_a_switchable_wallbox_starts_pv_on_one_phase_and_the_next_does_not_start() -> None:
    unite = Site(limits=UNITE)
    unite.surplus(2300)
    unite.step()
    started = unite.run(60)
    assert (started.current_a, started.phases, started.reason) == (10, 1, "PV surplus 2.3 kW: 10 A")
    next_ = Site(limits=NEXT)
    next_.surplus(2300)
    next_.step()
    assert next_.run(3600).current_a == 0
    assert {d.phases for d in next_.log} == {3}


def test_when_switching_comes_back_the_phases_are_the_boxs_not_the_last_asked() -> None:
    """A box that could not switch (a refused switch's retry time, a car's phases being learnt) worked on one
    phase; once it may switch again on three, 8 kW of surplus keeps it on three, not a switch down to the
    one phase the controller last worked with."""
    site = Site(limits=replace(UNITE, phases=1, can_switch_phases=False))
    site.surplus(8000)
    assert site.run(120).phases == 1
    site.limits = replace(UNITE, phases=3)
    assert site.run(125).phases == 3


def surplus_swings(limits: WallboxLimits) -> Site:
    """min_pv: 5000 W, from t = 5 2000 W, from t = 135 5000 W again."""
    site = Site(mode=ChargeMode.MIN_PV, limits=limits)
    site.surplus(5000)
    site.step()
    site.surplus(2000)
    site.run(130)
    site.surplus(5000)
    site.run(800)
    return site


def at(site: Site, t: float) -> CarDecision:
    return site.log[round(t / 5)]


def test_phase_switching_with_hysteresis_and_at_most_one_switch_per_interval() -> None:
    site = surplus_swings(UNITE)
    assert (at(site, 0).phases, at(site, 0).current_a) == (3, 7)  # 5000 / 690 = 7.2
    # one phase wished from t = 5; after the 120 s phase delay, at t = 125
    assert (at(site, 120).phases, at(site, 120).current_a) == (3, 6)
    switched = at(site, 125)
    assert (switched.phases, switched.current_a) == (1, 8)  # 2000 / 230 = 8.7
    assert switched.reason == "switched to 1 phase (charging pauses briefly); PV surplus 2.0 kW: 8 A"
    # three phases wished from t = 135 (5000 >= 4140 + 300), but only 600 s after the last switch
    assert (at(site, 720).phases, at(site, 720).current_a) == (1, 16)
    back = at(site, 725)
    assert (back.phases, back.current_a) == (3, 7)
    assert back.reason.startswith("switched to 3 phases")
    assert sum(a.phases != b.phases for a, b in zip(site.log, site.log[1:], strict=False)) == 2


def test_a_three_phase_only_wallbox_never_switches() -> None:
    site = surplus_swings(NEXT)
    assert {d.phases for d in site.log} == {3}
    assert at(site, 125).current_a == 6
    assert at(site, 725).current_a == 7


def test_one_phase_back_to_three_needs_the_margin() -> None:
    site = Site(mode=ChargeMode.MIN_PV, limits=UNITE)
    site.surplus(2000)
    assert site.step().phases == 1  # nothing to interrupt: it starts on the phases the surplus suits
    site.surplus(4400)  # above the three-phase minimum (4140) but inside the 300 W margin
    site.run(1800)
    assert {d.phases for d in site.log} == {1}
    assert site.log[-1].current_a == 16  # 4300 / 230 = 18.7: the maximum on one phase


# --- phases on a live UNITE: the control's writes ------------------------------------------------------

PHASE_SWITCH = RULES[WallboxModel.UNITE].by_key("phase_switch").address


@dataclass
class StepClock:
    """The charge control's clock: it moves when the test says."""

    t: float = 0.0
    start: datetime = START

    def seconds(self) -> float:
        return self.t

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.t)


@contextlib.asynccontextmanager
async def controlled_unite(
    make_box: BoxFactory, mode: str, quirks: WallboxQuirks | None = None
) -> AsyncIterator[tuple[WallboxSim, WallboxDevice, CarControl, StepClock]]:
    """A simulated UNITE with a three-phase car plugged in, read once, its charge control in `mode`; the
    control steps only when the test calls `step()`."""
    sim, server = await make_box(WallboxModel.UNITE, quirks=quirks)
    sim.plug_in(Car())
    client = client_for(server, WallboxModel.UNITE)
    link = WallboxLink("Carport", client)
    try:
        assert await link.poll_once()
        wallbox = WallboxDevice(link)
        clock = StepClock()
        control = CarControl(wallbox, GridInput("test"), [], {}, lambda: None, clock=clock)
        wallbox.charge = control
        assert control.set_mode(mode) is None
        yield sim, wallbox, control, clock
    finally:
        await client.close()


async def written(control: CarControl) -> None:
    """Until the writes the last control step started are done."""
    if control._writing is not None:
        await control._writing


async def test_a_refused_phase_switch_is_asked_again_only_after_the_retry_time(
    make_box: BoxFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A UNITE that stays on one phase whatever it is told: it takes the write and reads back 1 phase.
    since_refusal = StepClock(t=0.0)  # the control's monotonic clock, from the refusal
    monkeypatch.setattr(car_control, "monotonic", since_refusal.seconds)
    stays = WallboxQuirks(rogue_values={"phase_switch": 0})
    async with controlled_unite(make_box, "now", stays) as (sim, wallbox, control, clock):
        first = control.step()  # now: the maximum, on three phases
        assert first is not None
        assert (first.phases, first.current_a) == (3, 16)
        await written(control)
        assert sim.writes.get(PHASE_SWITCH) == 1
        assert wallbox.link.snapshot.values["phase_switch"] == "1"  # refused
        for seconds in (1.0, PHASE_RETRY_S - 1):
            since_refusal.t = seconds
            clock.t += 5
            meanwhile = control.step()
            assert meanwhile is not None
            assert (meanwhile.phases, meanwhile.current_a) == (1, 16)  # the phases the box reports
            await written(control)
        assert sim.writes.get(PHASE_SWITCH) == 1  # not asked again
        since_refusal.t = PHASE_RETRY_S
        clock.t += 5
        again = control.step()
        assert again is not None
        assert again.phases == 3
        await written(control)
        assert sim.writes.get(PHASE_SWITCH) == 2


async def test_a_persons_phases_are_not_switched_back_by_a_control_step_while_their_command_runs(
    make_box: BoxFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with controlled_unite(make_box, "now") as (sim, wallbox, control, _):
        control.step()  # now: 16 A on three phases
        await written(control)
        assert (sim.phases, sim.writes.get(PHASE_SWITCH, 0)) == (3, 0)
        client = wallbox.link.client
        switch = client.set_phases
        modes: list[str] = []
        at_the_box, answered = asyncio.Event(), asyncio.Event()

        async def slow_set_phases(phases: int) -> WriteOutcome:
            # The person's write reaches the box (which reads back their phases), and its answer is slow.
            modes.append(control.mode)
            outcome = await switch(phases)
            at_the_box.set()
            await answered.wait()
            return outcome

        monkeypatch.setattr(client, "set_phases", slow_set_phases)
        person = asyncio.create_task(wallbox.execute("phases", "1", source="test"))
        await at_the_box.wait()
        assert sim.phases == 1
        assert wallbox.link.snapshot.values["phase_switch"] == "1"
        during = control.step()  # a control step while the person's command is on its way
        answered.set()
        outcome = await person
        await written(control)
        assert outcome.status is WriteStatus.APPLIED
        assert (sim.phases, sim.writes.get(PHASE_SWITCH)) == (1, 1)  # the person's, not switched back
        assert modes == ["manual"]  # manual before the write went out; no phase write of the control's
        assert during is None
        assert control.mode == "manual"


# --- a person's acts, stale input, limits ---------------------------------------------------------------


def test_off_and_unplugging_stop_at_once_whatever_the_minimum_on_time() -> None:
    site = Site()
    site.surplus(5520)
    site.step()
    site.run(65)  # started at 60
    site.mode = ChargeMode.OFF
    off = site.run(70)
    assert (off.current_a, off.charge, off.state, off.reason) == (0, False, CarState.OFF, "off: no charging")
    site.mode = ChargeMode.NOW
    assert site.run(75).current_a == 16  # a person's mode change: no off-time
    site.plugged_in = False
    assert (site.run(80).current_a, site.log[-1].state) == (0, CarState.NO_CAR)


def test_a_car_plugged_in_again_waits_the_whole_start_delay() -> None:
    site = Site()
    site.surplus(5520)
    site.step()
    site.run(30)  # half the start delay
    site.plugged_in = False
    site.run(300)
    site.plugged_in = True
    site.run(355)  # surplus since 305
    assert site.log[-1].reason == "waiting for surplus: 5.5 of 4.1 kW for 50 of 60 s"
    assert site.run(360).current_a == 0
    assert site.run(365).current_a == 8


def test_a_stale_meter_counts_as_no_surplus() -> None:
    controller = CarController()
    inputs = CarInputs(t=0.0, now=START, mode=ChargeMode.PV, grid_power=None, car_power=0.0, plugged_in=True)
    decision = controller.step(inputs)
    assert (decision.current_a, decision.available_w) == (0, None)
    assert decision.reason == "grid reading stale, counted as no surplus; waiting for surplus: 0.0 of 4.1 kW"
    capped = controller.step(
        replace(inputs, t=5.0, mode=ChargeMode.NOW, quarter=QuarterBudget(0.0, 900.0, 2.5))
    )
    assert (capped.current_a, capped.reason) == (
        6,
        "grid reading stale, the capacity cap cannot be checked: 6 A",
    )


@settings(max_examples=150, deadline=None)
@given(
    limits=st.sampled_from([NEXT, UNITE, replace(NEXT, min_current_a=6, max_current_a=32)]),
    steps=st.lists(
        st.tuples(
            st.sampled_from(ChargeMode),
            st.floats(-3000, 20000),  # surplus
            st.floats(-3000, 3000),  # batteries
            st.one_of(st.none(), st.tuples(st.floats(0, 3000), st.floats(0, 900), st.floats(2.5, 10))),
            st.floats(0, 25000),  # planned
            st.booleans(),  # a stale meter
            st.sampled_from([1.0, 5.0, 10.0, 60.0]),  # seconds to the next step
        ),
        min_size=1,
        max_size=60,
    ),
)
def test_every_current_is_zero_or_within_the_limits(
    limits: WallboxLimits,
    steps: list[tuple[ChargeMode, float, float, tuple[float, float, float] | None, float, bool, float]],
) -> None:
    controller = CarController()
    t, car_w = 0.0, 0.0
    for mode, surplus, battery, quarter, planned, stale, gap in steps:
        t += gap
        inputs = CarInputs(
            t=t,
            now=START + timedelta(seconds=t),
            mode=mode,
            grid_power=None if stale else car_w - surplus - battery,
            car_power=car_w,
            plugged_in=True,
            limits=limits,
            batteries=HomeBatteries(battery, 1000.0, 50.0),
            quarter=QuarterBudget(*quarter) if quarter is not None else None,
            planned_power_w=planned,
        )
        decision = controller.step(inputs)
        assert decision.current_a == 0 or limits.min_current_a <= decision.current_a <= limits.max_current_a
        assert decision.charge == (decision.current_a > 0)
        assert decision.phases in ((1, 3) if limits.can_switch_phases else (3,))
        if limits.can_switch_phases:
            limits = replace(limits, phases=decision.phases)
        car_w = decision.current_a * decision.phases * limits.volts
