"""A person's command wins, also when it is given in the Marstek app: a battery the optimiser commands that
is read in a mode the optimiser never sends (Manual, AI) was changed by a person outside the add-on, and is
left alone for the manual hold time instead of being put back every minute. Engine rules on the pure
optimiser (tests/optimiser_world.py), the battery's mode set as the app would set it."""

from __future__ import annotations

from datetime import datetime

import pytest

from marstek_webasto_addon.optimiser.model import BatteryView, Role, StepResult
from marstek_webasto_addon.optimiser.planner import Action
from marstek_webasto_addon.optimiser.settings import Settings

from .optimiser_world import World, battery
from .test_plan_execution import step

APP = "outside the add-on (the Marstek app?)"


def three() -> list[BatteryView]:
    return [battery("A", 50), battery("B", 20), battery("C", 80)]


def settled() -> World:
    """Three batteries under the rules: one in Auto covering the home, the others standing by in Passive."""
    world = World(three())
    world.grid = 300.0
    world.run(320)
    assert len(world.in_auto()) == 1
    return world


def texts(results: list[StepResult]) -> list[str]:
    return [d.text for r in results for d in r.decisions]


def sent_to(world: World, battery_id: str, since: int) -> list[str]:
    return [c.describe() for c in world.log[since:] if c.battery_id == battery_id]


@pytest.mark.parametrize("mode", ["AI", "Manual"])
def test_a_standby_battery_switched_in_the_app_is_left_alone_for_the_manual_hold(mode: str) -> None:
    world = settled()
    standby = next(b for b in world.batteries if b.mode == "Passive")
    world.set(standby.name, mode=mode)  # the person's tap in the Marstek app
    mark = len(world.log)
    results = world.run(29 * 60)
    assert sent_to(world, standby.id, mark) == []  # no fight: the person's mode stays
    said = [t for t in texts(results) if standby.name in t and "outside the add-on" in t]
    assert said == [f"{standby.name} was put in {mode} {APP}: left alone for 30 min"]
    assert results[-1].status.roles[standby.name] == "manual hold"
    # the others carry on: one of them still covers the home
    assert len(world.in_auto()) == 1
    assert results[-1].status.active_battery not in (None, standby.name)


def test_the_active_battery_switched_in_the_app_is_replaced_like_a_held_one() -> None:
    world = settled()
    active = next(b for b in world.batteries if b.mode == "Auto")
    world.set(active.name, mode="AI")
    mark = len(world.log)
    results = world.run(10 * 60)
    assert sent_to(world, active.id, mark) == []
    # another battery took over the home (make-before-break, as for a person's hold)
    assert results[-1].status.active_battery not in (None, active.name)
    assert [b.name for b in world.batteries if b.mode == "Auto"] != []
    assert any(f"{active.name} was put in AI outside the add-on" in t for t in texts(results))


def test_after_the_hold_a_battery_still_in_the_apps_mode_is_left_alone_again_and_said_once() -> None:
    world = settled()
    standby = next(b for b in world.batteries if b.mode == "Passive")
    world.set(standby.name, mode="AI")
    mark = len(world.log)
    first = world.run(29 * 60)
    later = world.run(20 * 60)  # past the 30 minutes: still in AI
    assert sent_to(world, standby.id, mark) == []
    again = [t for t in texts(later) if standby.name in t]
    assert len(again) == 1, again
    assert "still in AI" in again[0]
    assert "another 30 min" in again[0]
    assert len([t for t in texts(first) if standby.name in t]) == 1


def test_once_the_person_hands_the_battery_back_the_optimiser_takes_it_back_after_the_hold() -> None:
    settings = Settings(enabled=True, method="rules", manual_hold=10)
    world = World(three(), settings=settings)
    world.grid = 300.0
    world.run(320)
    standby = next(b for b in world.batteries if b.mode == "Passive")
    world.set(standby.name, mode="Manual")
    mark = len(world.log)
    results = world.run(5 * 60)
    assert any("left alone for 10 min" in t for t in texts(results))
    world.set(standby.name, mode="Auto")  # back in Auto from the app, a few minutes later
    world.run(4 * 60)
    assert sent_to(world, standby.id, mark) == []  # still inside the hold
    world.run(5 * 60)
    assert sent_to(world, standby.id, mark) != []  # after it: commanded again
    assert len(world.in_auto()) == 1


def test_a_battery_back_in_auto_by_its_own_countdown_is_repaired_one_put_in_ai_is_not() -> None:
    world = World([battery("A", 50), battery("B", 20), battery("C", 80), battery("D", 60)])
    world.grid = 300.0
    world.run(320)
    standby = [b for b in world.batteries if b.mode == "Passive"]
    lapsed, chosen = standby[0], standby[1]
    world.set(lapsed.name, mode="Auto")  # its Passive countdown ran out: not a person's change
    world.set(chosen.name, mode="AI")  # a person's choice in the app
    mark = len(world.log)
    results = world.run(120)
    repairs = [c for c in world.log[mark:] if c.battery_id == lapsed.id]
    assert [c.reason for c in repairs] == [f"{lapsed.name} left Passive on its own (Auto): sent again"]
    assert repairs[0].role is not Role.AUTO
    assert sent_to(world, chosen.id, mark) == []
    said = [t for t in texts(results) if "outside the add-on" in t]
    assert said == [f"{chosen.name} was put in AI {APP}: left alone for 30 min"]


def test_the_manual_mode_of_the_optimisers_own_clearing_is_not_a_persons_change() -> None:
    world = World(
        three(),
        now=datetime(2026, 6, 3, 22, 55),
        settings=Settings(enabled=True, method="rules", desired_total_capacity=12.0),
    )
    world.grid = 300.0
    cleared: dict[str, float] = {}
    results = []
    for _ in range(int(3 * 3600 / 10)):  # until 01:55, inside the charging window
        result = world.step()
        results.append(result)
        for command in result.commands:
            if command.clear_schedules:
                cleared[command.battery_id] = world.t
        for battery_id, at in cleared.items():
            # a clearing takes a minute or two, in Manual, before its role goes out again
            if world.t - at < 90:
                world.set(battery_id.upper(), mode="Manual")
            elif world.t - at < 100:
                world.set(battery_id.upper(), mode="Passive")
    assert sorted(cleared) == ["a", "b", "c"]
    assert not any("outside the add-on" in t for t in texts(results))
    assert not any(status == "manual hold" for r in results for status in r.status.roles.values())
    # later that night a person does put one in AI: that one is left alone (Manual, where its countdown
    # would take it back after the clearing, is a lapse to repair: it cannot be told from a person's tap)
    world.set("B", mode="AI")
    mark = len(world.log)
    later = world.run(10 * 60)
    assert sent_to(world, "b", mark) == []
    assert any("B was put in AI outside the add-on" in t for t in texts(later))


def metered(world: World, seconds: float, house_w: float = 500.0) -> None:
    """Steps with a meter that adds up: the house, plus what the batteries charge (- what they give)."""
    for _ in range(int(seconds / 10)):
        world.grid = house_w - sum(b.ac_power or 0.0 for b in world.batteries)
        world.step()


def test_a_battery_switched_in_the_app_is_left_out_of_the_plan_and_the_others_share_its_part() -> None:
    settings = Settings(enabled=True, method="planner", hysteresis=0)
    world = World(three(), settings=settings, plan_step=step(Action.CHARGE, grid_kw=3.0))
    metered(world, 120)  # the house takes 0.5 kW; the plan wants 3 kW from the grid
    assert world.in_auto() == []
    assert all((b.ac_power or 0.0) < 0 for b in world.batteries)
    world.set("B", mode="AI", ac_power=0.0)  # AI decides to stand still
    mark = len(world.log)
    metered(world, 10 * 60)
    assert sent_to(world, "b", mark) == []
    # the other two now charge the plan's 2.5 kW between them
    charging = -sum(b.ac_power or 0.0 for b in world.batteries if b.name != "B")
    assert abs(charging - 2500) <= 30


def test_a_passive_that_ran_out_back_to_the_mode_before_it_is_repaired_not_taken_for_a_person() -> None:
    # A battery the optimiser took from AI into Passive goes back to AI by itself when the countdown runs out
    # (a link outage, a refresh that did not arrive): no person did that, and the battery must not be left
    # idle in a hold renewed for ever. A change to another mode is still a person's.
    world = World([battery("A", 50), battery("B", 20, mode="AI"), battery("C", 80)])
    world.grid = 300.0
    world.run(320)
    b = next(x for x in world.batteries if x.name == "B")
    assert b.mode == "Passive"  # taken over
    world.set("B", mode="AI")  # its countdown ran out
    mark = len(world.log)
    results = world.run(3 * 60)
    assert not any(APP in t for t in texts(results))
    assert sent_to(world, "b", mark) != []  # put back, as a battery that left Passive on its own
    world.set("B", mode="Manual")  # a mode it never had: a person's
    results = world.run(3 * 60)
    assert any(f"B was put in Manual {APP}" in t for t in texts(results))
