"""The planner's Auto/Passive choice for a self-consumption step: never flapping on a hovering meter."""

from __future__ import annotations

import pytest

from marstek_webasto_addon.optimiser.planner import PEAK_MARGIN_KW, SCARCE_HYSTERESIS_KW, Action, setpoint

from .optimiser_world import World
from .test_control_faults import mode_changes
from .test_plan_execution import PLANNER, step, three

SCARCE = step(Action.SELF_CONSUMPTION, peak_kw=2.5, scarce=True)
CEILING = 2.5 - PEAK_MARGIN_KW


def test_a_scarce_step_holds_back_above_the_ceiling_and_lets_go_only_well_under_it() -> None:
    above = setpoint(SCARCE, grid_kw=CEILING + 0.3, battery_kw=0.0)
    assert not above.auto
    assert above.capped
    assert above.battery_kw == pytest.approx(0.3)  # only what is above the ceiling
    just_under = setpoint(SCARCE, grid_kw=CEILING - 0.1, battery_kw=0.0, capped=True)
    assert not just_under.auto  # still holding back, at 0 kW: the grid takes the house up to the ceiling
    assert just_under.capped
    assert just_under.battery_kw == 0.0
    fresh = setpoint(SCARCE, grid_kw=CEILING - 0.1, battery_kw=0.0)  # not holding back before: Auto
    assert fresh.auto
    assert not fresh.capped
    well_under = setpoint(SCARCE, grid_kw=CEILING - SCARCE_HYSTERESIS_KW - 0.05, battery_kw=0.0, capped=True)
    assert well_under.auto
    assert not well_under.capped


def test_a_house_load_hovering_at_the_month_peak_does_not_ping_pong_auto_and_passive() -> None:
    # A load hovering around the ceiling (2.40 / 2.50 kW around 2.45 kW) must not switch the covering
    # battery Auto -> Passive -> Auto at every switch interval for as long as it hovers.
    world = World(three(), settings=PLANNER, plan_step=SCARCE)
    for i in range(360):  # one hour of 10 s steps
        house = 2500.0 if i % 2 == 0 else 2400.0
        world.grid = house - sum(b.ac_power or 0.0 for b in world.batteries)
        world.step(10)
    changes = mode_changes(world)
    assert max(changes.values()) <= 2, f"Auto/Passive changes in one hour of a hovering load: {changes}"
