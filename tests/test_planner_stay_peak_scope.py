"""Which car stays the LP gives a stay-peak column (and a row per quarter of the stay): only those where it
has a price, the short stays with the capacity tariff and the tie-breaks. The plan a short stay gets from it
(its import spread over the stay) is tested in test_car_sessions."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np
import pytest

from marstek_webasto_addon.optimiser.car_sessions import CarSession
from marstek_webasto_addon.optimiser.planner import (
    SHORT_STAY_STEPS,
    BatterySpec,
    CapacityTariff,
    PlanInputs,
    Planner,
    Problem,
    _Index,
    _problem,
    _Solver,
    solve,
)

from .test_car_sessions import DAY, STEPS, at

# 45 minutes at noon (3 quarters), and a night from 18:00 to 07:00 (52 quarters)
SHORT = CarSession(at(12), at(12.75), energy_kwh=2.0, max_kw=3.7, min_kw=1.38)
NIGHT = CarSession(at(18), at(31), energy_kwh=10.0)


def inputs(*car: CarSession, capacity: CapacityTariff | None = None, start: datetime = DAY) -> PlanInputs:
    steps = STEPS - round((start - DAY) / timedelta(minutes=15))  # the horizon ends where DAY's does
    return PlanInputs(
        start=start,
        import_price=np.full(steps, 0.279),
        export_price=np.full(steps, 0.02),
        load_kw=np.full(steps, 0.4),
        pv_kw=np.zeros(steps),
        batteries=tuple(BatterySpec(f"b{i}", capacity_kwh=5.12, soc=50.0) for i in range(3)),
        capacity=capacity,
        car=car,
    )


def lp(given: PlanInputs) -> Problem:
    return _problem(given, DAY, STEPS)[0]


def test_only_a_short_stay_with_the_capacity_tariff_gets_a_stay_peak() -> None:
    problem = lp(inputs(NIGHT, SHORT, capacity=CapacityTariff()))
    spans = [need.end - need.begin for need in problem.car_needs]
    assert spans == [52, 3]
    assert spans[1] <= SHORT_STAY_STEPS < spans[0]
    ix = _Index(problem)
    assert len(ix.stay_peak) == 1
    assert [len(rows) for rows in ix.stay_rows] == [3]
    assert ix.stays == (1,)
    # the column and its rows are the LP's last: nothing else moved
    assert ix.stay_peak[0] == ix.cols - 1
    assert ix.stay_rows[0].tolist() == list(range(ix.rows - 3, ix.rows))


def test_a_night_stay_gets_no_stay_peak() -> None:
    ix = _Index(lp(inputs(NIGHT, capacity=CapacityTariff())))
    assert len(ix.stay_peak) == 0
    assert ix.stay_rows == []
    assert ix.stays == ()
    assert ix.rows == ix.need[-1] + 1  # no row after the sessions' energy rows


def test_without_the_capacity_tariff_no_stay_gets_a_stay_peak() -> None:
    ix = _Index(lp(inputs(NIGHT, SHORT)))
    assert len(ix.stay_peak) == 0
    assert ix.stay_rows == []


def test_without_tie_breaks_no_stay_gets_a_stay_peak_and_the_need_is_still_met() -> None:
    # the perfect-foresight bound: its objective is the bill alone
    problem = replace(lp(inputs(SHORT, capacity=CapacityTariff())), tie_breaks=False)
    ix = _Index(problem)
    assert len(ix.stay_peak) == 0
    assert ix.stay_rows == []
    solution = solve(problem)
    assert solution.status == "optimal"
    assert solution.missing.sum() == pytest.approx(0.0, abs=1e-9)
    assert float(np.dot(problem.dt, solution.car)) == pytest.approx(2.0, abs=1e-6)


def test_a_solver_built_with_tie_breaks_is_not_reused_without_them() -> None:
    # The same spans and tariff, a different set of stay-peak columns: another layout, so another model.
    with_ties = lp(inputs(SHORT, capacity=CapacityTariff()))
    without = replace(with_ties, tie_breaks=False)
    solver = _Solver(with_ties)
    assert with_ties.layout() == solver.layout
    assert without.layout() != solver.layout


def test_a_rolling_plan_keeps_its_solver_over_a_short_stay() -> None:
    # A re-plan a quarter later, the same horizon's end: the same stays, the same layout, a warm start.
    planner = Planner()
    first = planner.plan(inputs(SHORT, capacity=CapacityTariff()))
    solver = planner._solver
    second = planner.plan(inputs(SHORT, capacity=CapacityTariff(), start=at(0.25)))
    assert planner._solver is solver
    assert first.car[0].met
    assert second.car[0].met
