"""The planner strategy carried out by the engine: the plan's running step in, battery commands out, with
every safety rule of the rules strategy (switch interval, holds, stale meter, limits)."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime

import pytest

from marstek_webasto_addon.optimiser.model import BatteryView, Role
from marstek_webasto_addon.optimiser.planner import Action, PlanStep
from marstek_webasto_addon.optimiser.settings import Settings

from .optimiser_world import World, battery

PLANNER = Settings(enabled=True, method="planner", hysteresis=0)


def step(
    action: Action,
    *,
    grid_kw: float = 0.0,
    peak_kw: float = math.inf,
    scarce: bool = False,
    at: datetime = datetime(2026, 6, 3, 12, 0),
) -> PlanStep:
    return PlanStep(
        start=at,
        hours=0.25,
        import_price=0.25,
        export_price=0.02,
        load_kw=0.5,
        pv_kw=0.0,
        wallbox_kw=0.0,
        battery_kw=0.5 - grid_kw,  # as a plan has it: the load the grid does not take
        grid_kw=grid_kw,
        cost_eur=0.0,
        action=action,
        reason=f"test: {action.value}",
        batteries=(),
        peak_kw=peak_kw,
        scarce=scarce,
    )


def three(a: float = 50, b: float = 20, c: float = 80) -> list[BatteryView]:
    return [battery("A", a), battery("B", b), battery("C", c)]


def powers(world: World) -> dict[str, float]:
    return {b.name: b.ac_power or 0.0 for b in world.batteries}


def test_a_charging_step_charges_every_battery_to_hold_the_planned_import() -> None:
    world = World(three(), settings=PLANNER, plan_step=step(Action.CHARGE, grid_kw=3.0))
    world.grid = 500.0  # the house takes 0.5 kW; the plan wants 3 kW from the grid
    world.step()
    assert world.in_auto() == []
    charged = powers(world)
    assert abs(sum(charged.values()) + 2500) <= 30
    # shared by the room each has left: the emptiest takes the most, the fullest the least
    assert charged["B"] < charged["A"] < charged["C"] < 0
    status = world.step().status
    assert status.strategy.startswith("plan: charge")


def test_self_consumption_has_one_battery_in_auto_and_the_others_following_their_share() -> None:
    world = World(three(), settings=PLANNER, plan_step=step(Action.SELF_CONSUMPTION))
    for _ in range(8):  # a house of 2 kW; the battery in Auto covers what the others do not
        followers = sum(p for name, p in powers(world).items() if name != "C")
        world.set("C", ac_power=2000.0 - followers)
        world.grid = 0.0
        world.step()
    assert world.in_auto() == ["C"]  # the fullest covers the home
    # shared by the energy each has above its floor: A 1.95, B 0.41, C 3.48 kWh of 5.84
    assert powers(world)["A"] == pytest.approx(2000 * 1.946 / 5.837, abs=20)
    assert powers(world)["B"] == pytest.approx(2000 * 0.410 / 5.837, abs=20)
    assert all(b.mode == "Passive" for b in world.batteries if b.name != "C")


def test_a_discharge_step_right_after_auto_waits_for_the_switch_interval() -> None:
    world = World(three(), settings=PLANNER, plan_step=step(Action.SELF_CONSUMPTION))
    world.grid = 400.0
    world.run(60)
    world.plan_step = step(Action.DISCHARGE, grid_kw=-2.0)  # export 2 kW at a good price
    world.set("C", ac_power=400.0)  # C covers the house in Auto
    world.run(60)
    assert world.in_auto() == ["C"]  # one Auto <-> Passive change per 5 min, by anyone
    assert powers(world)["A"] > 0
    assert powers(world)["B"] > 0
    assert "switch interval" in world.step().status.next_action
    world.run(300)
    assert world.in_auto() == []
    assert all(p > 0 for p in powers(world).values())


def test_a_spike_above_the_month_peak_in_a_holding_step_is_covered_only_above_the_peak() -> None:
    world = World(three(), settings=PLANNER, plan_step=step(Action.HOLD, grid_kw=0.5, peak_kw=2.5))
    world.grid = 4000.0  # the oven and the kettle at once
    world.step()
    assert abs(sum(powers(world).values()) - 1550) <= 30  # 4 kW - (2.5 kW - 50 W margin)
    world.grid = 300.0
    world.set("A", ac_power=0.0)
    world.set("B", ac_power=0.0)
    world.set("C", ac_power=0.0)
    world.run(40)
    assert sum(powers(world).values()) == 0  # below the peak the grid takes the load: energy kept


def test_without_a_plan_the_rules_rotation_runs_and_never_charges_from_the_grid() -> None:
    night = datetime(2026, 6, 4, 2, 0)  # a night with a big deficit: the rules would charge now
    settings = Settings(enabled=True, method="planner", desired_total_capacity=15.0)
    world = World(three(30, 20, 25), now=night, settings=settings)
    world.grid = 300.0
    results = world.run(120)
    assert "no plan (no plan in this test)" in results[-1].status.strategy
    assert len(world.in_auto()) == 1
    assert not any(c.role is Role.CHARGE for c in world.log)


def test_a_held_battery_is_left_out_of_the_plan() -> None:
    world = World(three(), settings=PLANNER, plan_step=step(Action.CHARGE, grid_kw=3.0))
    world.set("B", hold="manual hold until 14:00")
    world.grid = 500.0
    world.step()
    assert not any(c.battery_id == "b" for c in world.log)
    assert powers(world)["A"] < 0
    assert powers(world)["C"] < 0


def test_a_stale_meter_puts_every_battery_in_auto_whatever_the_plan() -> None:
    world = World(three(), settings=PLANNER, plan_step=step(Action.DISCHARGE, grid_kw=-2.0))
    world.grid = 0.0
    world.step()
    assert world.in_auto() == []
    world.grid_age = 600.0
    result = world.step()
    assert result.status.hold == "grid input stale"
    assert world.in_auto() == ["A", "B", "C"]


def test_set_points_stay_within_each_battery_and_its_soc_window() -> None:
    batteries = [battery("A", 100), battery("B", 12), battery("C", 60)]
    world = World(batteries, settings=PLANNER, plan_step=step(Action.CHARGE, grid_kw=20.0))
    world.grid = 0.0
    world.step()
    charged = powers(world)
    assert charged["A"] == 0  # full
    assert -2500 <= charged["B"] < 0
    assert -2500 <= charged["C"] < 0
    world.plan_step = step(Action.DISCHARGE, grid_kw=-20.0)
    world.run(40)
    discharged = powers(world)
    assert discharged["B"] == 0  # at its floor
    assert 0 < discharged["A"] <= 2500
    assert 0 < discharged["C"] <= 2500


def test_a_car_the_batteries_may_not_feed_gets_not_a_watt_of_their_discharge() -> None:
    car = replace(step(Action.SELF_CONSUMPTION), wallbox_kw=4.2, car_kw=4.2)
    world = World(three(60, 60, 60), settings=PLANNER, plan_step=car, wallbox=4200.0)

    def run(house: float, seconds: int) -> None:
        for _ in range(seconds // 10):
            world.grid = house + 4200.0 - sum(powers(world).values())
            world.step(10)

    run(510.0, 60)
    assert world.in_auto() == []  # Auto would feed the car
    assert sum(powers(world).values()) == pytest.approx(510.0, abs=30)
    # The house drops by 70 W, less than the deadband: the 70 W would go into the car, so the shares move
    # at once, and they are rounded down (a few watts of import, never a watt into the car).
    run(440.0, 60)
    assert 440.0 - 30 <= sum(powers(world).values()) <= 440.0
    assert all(power % 10 == 0 for power in powers(world).values())


def test_a_small_total_is_shared_not_lost_under_each_batterys_deadband() -> None:
    world = World(three(), settings=PLANNER, plan_step=step(Action.HOLD, grid_kw=0.5, peak_kw=2.5))
    world.grid = 2740.0  # 290 W above the peak (less the 50 W margin)
    world.step()
    assert abs(sum(powers(world).values()) - 290) <= 30
    # shared by stored energy: B's 20 W share is sent too, not dropped under a per-battery deadband
    assert 0 < powers(world)["B"] < 100


def test_a_small_house_load_beside_the_car_is_carried_out_and_never_feeds_the_car() -> None:
    # 250 W over three batteries is about 83 W each: each is sent (no per-battery deadband), so the
    # house's load does not go to the grid and take the car's room under the month's peak.
    car = replace(step(Action.SELF_CONSUMPTION), wallbox_kw=4.2, car_kw=4.2)
    world = World(three(60, 30, 50), settings=PLANNER, plan_step=car, wallbox=4200.0)
    for _ in range(6):
        world.grid = 250.0 + 4200.0 - sum(powers(world).values())
        world.step(10)
    shares = powers(world)
    assert 250.0 - 30 <= sum(shares.values()) <= 250.0  # never a watt into the car
    assert all(p > 0 for p in shares.values())
