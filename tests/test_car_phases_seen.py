"""A car with a single-phase on-board charger on a three-phase wallbox draws a third of the box's power. The
charge control counts the phases the car is seen drawing on (the box's per-phase currents) and plans its stay,
its slack and its departure floor with them; until the car has charged, and for the next car, it takes the
box's phases. Over real TCP on 127.0.0.1 against the project's simulated wallboxes (`test_car_plan_and_cap`).
"""

from __future__ import annotations

import pytest

from marstek_webasto_addon.addon.car_control import CarControl
from marstek_webasto_addon.bridge.devices import WallboxDevice
from marstek_webasto_addon.devices.webasto.registers import WallboxModel
from marstek_webasto_addon.devices.webasto.simulator import Car
from marstek_webasto_addon.optimiser.car import CarDecision, ChargeMode, QuarterBudget
from marstek_webasto_addon.optimiser.car_sessions import CarSession, SessionPlan

from .test_car_control import PHASE_SWITCH, StepClock, controlled_unite, written
from .test_car_plan_and_cap import PlanMode, _controlled, night_plan
from .webasto_fixtures import BoxFactory, make_box

__all__ = ["make_box"]
pytestmark = pytest.mark.timeout(60)
THREE_PHASES = (11.04, 4.14)  # kW at 16 A and at 6 A
ONE_PHASE = (3.68, 1.38)


async def charging(make_box: BoxFactory, car_phases: int) -> PlanMode:
    """A NEXT in plan mode whose car (drawing on `car_phases`) charges at 16 A on the plan, 20 kWh wanted by
    23:00: five hours from 18:00."""
    sim, server = await make_box(WallboxModel.NEXT)
    sim.plug_in(Car(phases=car_phases))
    site = await _controlled(sim, server)
    site.control.set_target(energy_kwh=20.0, departure="23:00")
    assert limits(site.control.session(site.clock.now())) == pytest.approx(THREE_PHASES, abs=0.01)
    site.plan = night_plan(11.04)
    assert await site.step() == 16
    await site.steps(site.clock.t + 30)  # the box read while the car charges, fewer phases held 20 s
    return site


def limits(session: CarSession | None) -> tuple[float, float]:
    assert session is not None
    return session.max_kw, session.min_kw


def planned(site: PlanMode) -> None:
    """The plan the planner makes for the car as the control gives it (all of it planned)."""
    session = site.control.session(site.clock.now())
    assert session is not None
    site.plan = (session.max_kw, SessionPlan(session, session.energy_kwh, 0.0, 0.0))


@pytest.mark.parametrize(("car_phases", "power", "slack"), [(1, ONE_PHASE, False), (3, THREE_PHASES, True)])
async def test_the_stay_is_planned_at_the_power_of_the_phases_the_car_draws_on(
    make_box: BoxFactory, car_phases: int, power: tuple[float, float], slack: bool
) -> None:
    """20 kWh in five hours: half of 11 kW has room to wait for the capacity cap; half of 3.7 kW has none,
    and the departure floor holds the car up from now on. Taken for 11 kW, the one-phase car waited and missed
    its departure unseen."""
    site = await charging(make_box, car_phases)
    try:
        control = site.control
        assert limits(control.session(site.clock.now())) == pytest.approx(power, abs=0.01)
        planned(site)
        inputs = control.inputs()
        assert inputs is not None
        assert inputs.limits.phases == car_phases  # the NEXT cannot switch: its amperes are the car's
        assert inputs.plan_slack is slack
        if slack:
            assert inputs.plan_floor_w is None
        else:
            assert inputs.plan_floor_w is not None
            assert inputs.plan_floor_w > 0
        assert await site.step() == 16  # the plan's full power: 16 A per phase whatever the phases
        shown = "(the car charges on 1 phase: 3.7 kW at most)"
        assert (shown in control.describe()) is (car_phases == 1), control.describe()
        # after a restart of the add-on, from /data: the car is not taken for a three-phase one again
        again = CarControl(control.wallbox, control.grid, [], control.store, lambda: None, clock=site.clock)
        assert limits(again.session(site.clock.now())) == pytest.approx(power, abs=0.01)
    finally:
        await site.client.close()


async def test_a_new_plug_in_is_taken_for_the_boxs_phases_until_it_charges(make_box: BoxFactory) -> None:
    site = await charging(make_box, 1)
    try:
        assert limits(site.control.session(site.clock.now())) == pytest.approx(ONE_PHASE, abs=0.01)
        site.sim.unplug()
        await site.step()
        site.sim.plug_in(Car(phases=3))
        site.plan = None  # no plan for the new car yet: it waits
        assert await site.step() == 0
        assert limits(site.control.session(site.clock.now())) == pytest.approx(THREE_PHASES, abs=0.01)
        site.plan = night_plan(11.04)
        await site.steps(site.clock.t + 10)
        assert limits(site.control.session(site.clock.now())) == pytest.approx(THREE_PHASES, abs=0.01)
    finally:
        await site.client.close()


async def test_a_three_phase_car_seen_on_one_phase_for_a_moment_stays_a_three_phase_car(
    make_box: BoxFactory,
) -> None:
    """A car ramping its current up, or a reading from around a phase switch, shows fewer phases than it
    uses. Taken for a one-phase car, a three-phase one would get three times what the capacity cap allows."""
    site = await charging(make_box, 3)
    try:
        assert site.sim.car is not None
        site.sim.car.phases = 1
        await site.steps(site.clock.t + 10)
        assert limits(site.control.session(site.clock.now())) == pytest.approx(THREE_PHASES, abs=0.01)
        inputs = site.control.inputs()
        assert inputs is not None
        assert inputs.limits.phases == 3
        site.sim.car.phases = 3
        await site.steps(site.clock.t + 30)
        assert limits(site.control.session(site.clock.now())) == pytest.approx(THREE_PHASES, abs=0.01)
    finally:
        await site.client.close()


async def test_the_capacity_cap_counts_a_one_phase_cars_amperes_at_230_w(make_box: BoxFactory) -> None:
    """A 4.5 kW target with the house at 500 W leaves the car 4 kW: 17 A on one phase, so the full 16 A; at
    690 W an ampere the cap held it down to the 6 A minimum (1.4 kW)."""
    site = await charging(make_box, 1)
    try:
        control = site.control
        control.grid.set(500.0 + 3680.0)
        control.budget = lambda: QuarterBudget(0.0, 900.0, 4.5)
        assert control.set_mode(ChargeMode.NOW.value) is None
        assert await site.step() == 16
        assert control.status.decision is not None
        assert "capacity" not in control.status.decision.reason
    finally:
        await site.client.close()


async def test_a_unite_does_not_switch_phases_for_a_one_phase_car(make_box: BoxFactory) -> None:
    """A car on one phase gains nothing from a switch: the box stays on its three, and the current is worked
    out at one phase's 230 W an ampere. Its stay is planned at one phase's power."""
    async with controlled_unite(make_box, "now") as (sim, wallbox, control, clock):
        assert sim.car is not None
        sim.car.phases = 1
        assert await wallbox.link.poll_once()  # (read first with the three-phase car the helper plugs in)
        for _ in range(6):  # fewer phases count once they held 20 s
            clock.t += 5
            decision = control.step()
            await written(control)
            assert await wallbox.link.poll_once()
            assert decision is not None
            assert decision.current_a == 16
        assert decision is not None
        assert decision.phases == 1
        assert sim.writes.get(PHASE_SWITCH, 0) == 0
        assert wallbox.link.snapshot.values["phase_switch"] == "3"
        assert control.set_mode(ChargeMode.PLAN.value) is None
        assert limits(control.session(clock.now())) == pytest.approx(ONE_PHASE, abs=0.01)


async def test_a_one_phase_car_on_a_unite_takes_the_pv_surplus_at_one_phases_amperes(
    make_box: BoxFactory,
) -> None:
    """5 kW of surplus: a one-phase car takes 16 A (3.7 kW). Worked out at 690 W an ampere for the box's three
    phases, it got 7 A, 1.6 kW, and the rest went to the grid."""
    async with controlled_unite(make_box, "min_pv") as (sim, wallbox, control, clock):
        assert sim.car is not None
        sim.car.phases = 1
        assert await wallbox.link.poll_once()
        amps = []
        for _ in range(8):
            clock.t += 60
            car_w = wallbox.link.snapshot.number("power") or 0.0
            control.grid.set(car_w - 5000.0)
            decision = control.step()
            await written(control)
            assert await wallbox.link.poll_once()
            assert decision is not None
            amps.append(decision.current_a)
        assert amps[-1] == 16, amps
        assert sim.writes.get(PHASE_SWITCH, 0) == 0


async def unite_steps(
    control: CarControl,
    wallbox: WallboxDevice,
    clock: StepClock,
    seconds: float,
    surplus_w: float | None = None,
) -> list[CarDecision]:
    """Control steps every 5 s for `seconds`, the box read after each; `surplus_w`: PV beyond the house."""
    decisions = []
    end = clock.t + seconds
    while clock.t < end:
        clock.t += 5
        if surplus_w is not None:
            control.grid.set((wallbox.link.snapshot.number("power") or 0.0) - surplus_w)
        decision = control.step()
        await written(control)
        assert await wallbox.link.poll_once()
        assert decision is not None
        decisions.append(decision)
    return decisions


async def test_three_phases_seen_are_final_for_the_stay(make_box: BoxFactory) -> None:
    """A three-phase car that later shows one phase for half a minute (an unbalanced taper, a reading from
    around a switch) is still a three-phase car: its amperes stay at 690 W and the box may switch."""
    async with controlled_unite(make_box, "now") as (sim, wallbox, control, clock):
        assert sim.car is not None
        await unite_steps(control, wallbox, clock, 60)
        sim.car.phases = 1
        await unite_steps(control, wallbox, clock, 60)
        inputs = control.inputs()
        assert control.set_mode(ChargeMode.PLAN.value) is None
        assert limits(control.session(clock.now())) == pytest.approx(THREE_PHASES, abs=0.01)
        assert inputs is not None
        assert (inputs.limits.phases, inputs.limits.can_switch_phases) == (3, True)


async def test_power_on_no_phase_is_no_count(make_box: BoxFactory) -> None:
    """Per-phase currents out of step with the total power (all about 0 A at 4 kW) count no phases: taken
    for a car on none, the stay would be planned at 0 kW."""
    async with controlled_unite(make_box, "plan") as (_, wallbox, control, clock):
        values = wallbox.link.snapshot.values
        for _ in range(12):
            clock.t += 5
            values.update(power=4000, current_l1=0.0, current_l2=0.0, current_l3=0.0)
            control.observe_stay(clock.now())
        assert limits(control.session(clock.now())) == pytest.approx(THREE_PHASES, abs=0.01)


async def test_a_unite_slow_to_switch_up_does_not_make_a_three_phase_car_a_one_phase_one(
    make_box: BoxFactory,
) -> None:
    """2 kW of surplus: one phase; then 6 kW: three. The box reads back three phases at once but keeps the
    car on L1 for 30 s more. Taken for a one-phase car, it was given 16 A worked out at 230 W an ampere
    (11 kW on three phases with 6 kW of surplus) and the box was switched down and up again."""
    async with controlled_unite(make_box, "pv") as (sim, wallbox, control, clock):
        assert sim.car is not None
        await unite_steps(control, wallbox, clock, 300, surplus_w=2000.0)
        assert wallbox.link.snapshot.values["phase_switch"] == "1"
        highest_w, lag_until, was = 0.0, None, sim.phase_switch
        end = clock.t + 900
        while clock.t < end:
            await unite_steps(control, wallbox, clock, 5, surplus_w=6000.0)
            if sim.phase_switch != was and lag_until is None:
                lag_until, sim.car.phases = clock.t + 30, 1
            if lag_until is not None and clock.t >= lag_until:
                sim.car.phases = 3
            was = sim.phase_switch
            highest_w = max(highest_w, wallbox.link.snapshot.number("power") or 0.0)
        assert wallbox.link.snapshot.values["phase_switch"] == "3"
        assert sim.writes.get(PHASE_SWITCH, 0) == 2  # down at the start, up once
        assert highest_w <= 6000.0


async def test_a_two_phase_car_keeps_the_unites_switch_to_one_phase(make_box: BoxFactory) -> None:
    """On one phase a two-phase car's minimum is 1.4 kW instead of 2.8 kW: the box may still switch."""
    async with controlled_unite(make_box, "now") as (sim, wallbox, control, clock):
        assert sim.car is not None
        sim.car.phases = 2
        assert await wallbox.link.poll_once()
        await unite_steps(control, wallbox, clock, 60)
        inputs = control.inputs()
        assert control.set_mode(ChargeMode.PLAN.value) is None
        assert limits(control.session(clock.now())) == pytest.approx((7.36, 2.76), abs=0.01)
        assert inputs is not None
        assert (inputs.limits.phases, inputs.limits.can_switch_phases) == (3, True)
