"""The live car charging control: a plan that is not there yet (a car just plugged in, a planner
that failed once) and the capacity cap's current under a house load that wobbles.

The plan-mode tests steer the project's simulated NEXT over real TCP on 127.0.0.1; the cap's test runs the
pure controller on a house whose meter follows the car at once (`test_car_control.Site`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest

from marstek_webasto_addon.addon.car_control import CarControl
from marstek_webasto_addon.addon.inputs import GridInput
from marstek_webasto_addon.bridge.devices import WallboxDevice
from marstek_webasto_addon.devices.webasto.client import WebastoClient
from marstek_webasto_addon.devices.webasto.link import WallboxLink, WallboxLinkSettings
from marstek_webasto_addon.devices.webasto.registers import WallboxModel
from marstek_webasto_addon.devices.webasto.simulator import Car, WallboxServer, WallboxSim
from marstek_webasto_addon.optimiser.car import CarInputs, ChargeMode, QuarterBudget
from marstek_webasto_addon.optimiser.car_sessions import CarSession, SessionPlan

from .test_car_control import Site, StepClock
from .webasto_fixtures import BoxFactory, client_for, make_box

__all__ = ["make_box"]
pytestmark = pytest.mark.timeout(60)
START = datetime(2026, 6, 3, 18, 0)  # an evening: the plan keeps the car for the night's cheap hours
QUIET = WallboxLinkSettings(poll_interval=0.05, reconnect_min=0.05, keepalive=False)
Planned = tuple[float, SessionPlan] | None


def night_plan(kw: float) -> tuple[float, SessionPlan]:
    """The planner's answer for a car plugged in at 18:00 for 20 kWh by 07:30: `kw` now."""
    session = CarSession(START, START + timedelta(hours=13.5), 20.0, max_kw=11.04, min_kw=4.14)
    return kw, SessionPlan(session, 20.0, 0.0, 0.0)


@dataclass
class PlanMode:
    sim: WallboxSim
    client: WebastoClient
    link: WallboxLink
    control: CarControl
    clock: StepClock
    plan: Planned = None  # what the planner has for this wallbox's car at the moment

    async def step(self, seconds: float = 5.0) -> int:
        """One control step `seconds` after the last, its writes done; the current the box is set to."""
        self.clock.t += seconds
        assert await self.link.poll_once()
        self.control.step()
        if self.control._writing is not None:
            await self.control._writing
        return self.sim.setpoint

    async def steps(self, until: float, seconds: float = 5.0) -> list[int]:
        out = []
        while self.clock.t + seconds <= until + 1e-9:
            out.append(await self.step(seconds))
        return out


async def plan_mode(make_box: BoxFactory) -> PlanMode:
    """A NEXT, paused, with a car just plugged in; its charge control in `plan`, a fresh meter reading."""
    sim, server = await make_box(WallboxModel.NEXT)
    sim.plug_in(Car())
    return await _controlled(sim, server)


async def _controlled(sim: WallboxSim, server: WallboxServer) -> PlanMode:
    client = client_for(server, WallboxModel.NEXT)
    link = WallboxLink("Garage", client, QUIET)
    assert await link.poll_once()
    assert (await client.set_charging_current(0)).ok
    grid = GridInput("test")
    grid.set(400.0)
    clock = StepClock(start=START)
    wallbox = WallboxDevice(link)
    control = CarControl(wallbox, grid, [], {}, lambda: None, clock=clock)
    wallbox.charge = control
    site = PlanMode(sim, client, link, control, clock)
    planned: Callable[[], Planned] = lambda: site.plan  # noqa: E731 (the runtime's callback, in short)
    control.planned = planned
    assert control.set_mode(ChargeMode.PLAN.value) is None
    return site


# --- plan mode without a plan for a moment ----------------------------------------------------------------


async def test_a_car_plugged_in_in_plan_mode_is_not_started_before_its_first_plan(
    make_box: BoxFactory,
) -> None:
    """The runtime's planner gives a car its plan at its next step after the plug-in (up to a control
    interval later). Meanwhile the wallbox has no plan for it: taken at once for "no plan, charge as now",
    the car was switched on at 16 A, and off again seconds later when the plan said "not now" (the evening's
    expensive hours): a contactor cycle at every plug-in, for nothing."""
    site = await plan_mode(make_box)
    try:
        before = await site.steps(10)  # two control steps: the planner has not stepped yet
        waiting = site.control.describe()
        site.plan = night_plan(0.0)  # its plan: nothing now, the night's cheap hours later
        after = await site.steps(60)
    finally:
        await site.client.close()
    assert set(before + after) == {0}, f"set-points {before} before the plan, {after} after it"
    assert waiting.startswith("waiting for the plan"), waiting


async def test_a_plan_missing_for_one_step_does_not_stop_a_planned_charge(make_box: BoxFactory) -> None:
    """A planner that raises leaves no plan until a step of it works again (here half a minute): the car
    charging on the plan keeps its current instead of being switched to 16 A and back."""
    site = await plan_mode(make_box)
    try:
        site.plan = night_plan(6.9)  # 10 A
        assert await site.step() == 10
        site.plan = None
        during = await site.steps(35)
        site.plan = night_plan(6.9)
        after = await site.steps(60)
    finally:
        await site.client.close()
    assert during + after == [10] * 11


async def test_a_plan_that_comes_back_keeps_the_minimum_on_time_of_the_charge_begun_without_it(
    make_box: BoxFactory,
) -> None:
    """With no plan at all for a while (the planner off, or failing), plan mode charges as `now` so the car
    is ready by its departure. When a plan comes back and says "not now", that is no person's act: the charge
    the control itself began keeps its minimum on-time (300 s) before the contactor opens."""
    site = await plan_mode(make_box)
    try:
        while await site.step() == 0:  # no plan: charging as now, within a few minutes
            assert site.clock.t < 600
        start_t = site.clock.t
        assert site.sim.setpoint == 16
        await site.steps(start_t + 60)
        site.plan = night_plan(0.0)  # a minute after the start
        held = await site.steps(start_t + 295)
        stopped = await site.step()
    finally:
        await site.client.close()
    assert all(amps >= 6 for amps in held), f"{held}: stopped before the minimum on-time"
    assert stopped == 0
    assert "minimum on-time" not in site.control.describe()


# --- the capacity cap ---------------------------------------------------------------------------------------


def test_the_capacity_cap_does_not_move_the_current_up_and_down_with_a_wobbling_house() -> None:
    """`now` under a binding 8 kW cap: the car takes what the quarter allows beside the house. The house
    wobbles by 60 W round the edge of an ampere; the cap lowers the current at once (the bill counts every
    second), and so it must not raise it again for a wobble inside the deadband: it went 10 -> 11 -> 10 A
    every 15 s, twice a change in the car's charging for nothing."""
    site = Site(mode=ChargeMode.NOW, house_w=430.0, quarter=QuarterBudget(0.0, 900.0, 8.0))
    site.step()
    for k in range(300):
        site.t += 1.0
        site.house_w = 430.0 + (60.0 if k % 2 else -60.0)
        # this quarter's import so far: on the target's pace, 5 Wh under it
        site.quarter = QuarterBudget(8000.0 * site.t / 3600 - 5.0, 900.0 - site.t, 8.0)
        site.step()
    currents = [d.current_a for d in site.log]
    changes = sum(a != b for a, b in itertools.pairwise(currents))
    assert changes <= 2, f"{changes} current changes in 5 minutes: {currents}"
    assert {d.current_a for d in site.log[-60:]} <= {10, 11}


# --- a person's manual current in between ------------------------------------------------------------------


async def test_pv_chosen_again_after_a_persons_own_current_starts_afresh(make_box: BoxFactory) -> None:
    """A car charging on PV surplus; a person pauses it with their own current (the charge mode steps back to
    manual) and, in the evening with no surplus left, chooses pv again. The control did not steer meanwhile:
    it must not carry on the session it remembers (the minimum current for the stop delay, 4.1 kW from the
    grid for five minutes), but start afresh: no surplus, no charging."""
    sim, server = await make_box(WallboxModel.NEXT)
    sim.plug_in(Car())
    site = await _controlled(sim, server)
    grid = site.control.grid
    try:
        assert site.control.set_mode(ChargeMode.PV.value) is None
        grid.set(-6000.0)  # exporting 6 kW with the car paused
        charging = await site.steps(90)
        assert charging[-1] >= 6  # started after the start delay
        wallbox = site.control.wallbox
        assert (await wallbox.execute("charging_current", 0, source="test")).status.value == "applied"
        assert site.control.mode == "manual"
        await site.steps(3600, seconds=60.0)  # the evening
        grid.set(500.0)  # importing: no surplus
        assert site.control.set_mode(ChargeMode.PV.value) is None
        evening = await site.steps(3600 + 120)
    finally:
        await site.client.close()
    assert set(evening) == {0}, f"pv without surplus set {evening}"


# --- a session without slack: held down to what its departure needs now ------------------------------------


async def without_slack(
    make_box: BoxFactory, energy_kwh: float, stay: timedelta, took_kwh: float | None = None
) -> CarInputs:
    """The car control's inputs for a plan made at the plug-in (18:00) for `energy_kwh` by 18:00 + `stay`;
    `took_kwh`: what the wallbox's meter says the car took since."""
    site = await plan_mode(make_box)
    try:
        site.control.set_target(energy_kwh=energy_kwh)
        session = CarSession(START, START + stay, energy_kwh, max_kw=11.04, min_kw=4.14)
        site.plan = (11.04, SessionPlan(session, energy_kwh, 0.0, 0.0))
        assert await site.link.poll_once()
        if took_kwh is not None:
            site.control._stay_kwh = took_kwh
        inputs = site.control.inputs()
    finally:
        await site.client.close()
    assert inputs is not None
    assert not inputs.plan_slack
    return inputs


async def test_the_departure_floor_counts_to_a_departure_inside_the_quarter(make_box: BoxFactory) -> None:
    # 1.5 kWh by 18:10: 9 kW over the 10 minutes left, not 6 kW over the quarter's 15.
    inputs = await without_slack(make_box, 1.5, timedelta(minutes=10))
    assert inputs.plan_floor_w == pytest.approx(9000.0, rel=0.01)


async def test_the_departure_floor_counts_what_the_car_took_since_the_plan(make_box: BoxFactory) -> None:
    # 4.64 kWh by 19:00 (no slack): 0.5 kWh is due this quarter (2 kW over it). The plan's figure stays 4.64
    # all quarter; counted from it, the floor climbed to the full power whatever the car took meanwhile.
    first = await without_slack(make_box, 4.64, timedelta(hours=1))
    assert first.plan_floor_w == pytest.approx(2000.0, rel=0.01)
    after = await without_slack(make_box, 4.64, timedelta(hours=1), took_kwh=0.5)  # what was due is in
    assert after.plan_floor_w == 0.0
