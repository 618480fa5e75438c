"""The yardstick: the best any controller could do over the replayed period (perfect foresight).

One linear program over every quarter-hour of the period, with the true load and PV and the real prices
known in advance: the same household, tariff, battery figures and billing as the replay (energy per quarter
at its import or export price, each month's capacity-tariff peak at the floor or above, a partial month at
its share). It is the planner's own LP (`optimiser.planner.Problem`) with a horizon of the whole period, no
terminal value (the bill does not count what is left in the batteries, so neither does the bound) and the
standby drain free to come from the cells or the grid, whichever is cheaper: a relaxation of the simulator
(as is ignoring its charge taper near full), so the bound is never above what the simulated batteries could
reach. A scenario's share of the achievable saving is (no_battery - scenario) / (no_battery - bound).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..devices.marstek.simulator.physics import BatteryPhysics
from ..devices.marstek.simulator.profiles import PROFILES
from ..optimiser.planner import Group, Problem, solve
from ..optimiser.tariff import Tariff
from .data import HouseholdYear
from .prices import PriceYear, local_times


def battery_group(profile_name: str, count: int, start_soc: float) -> Group:
    """`count` identical simulated batteries as one: their figures are the simulator's own."""
    profile = PROFILES[profile_name]
    physics = BatteryPhysics(
        profile.capacity_wh, profile.max_charge_w, profile.max_discharge_w, soc=start_soc
    )
    capacity = physics.capacity_wh / 1000 * count
    return Group(
        stored=capacity * start_soc / 100,
        min_kwh=capacity * physics.soc_floor / 100,
        max_kwh=capacity,
        max_charge=physics.max_charge_w / 1000 * count,
        max_discharge=physics.max_discharge_w / 1000 * count,
        eta_c=physics.charge_efficiency,
        eta_d=physics.discharge_efficiency,
        standby=physics.standby_w / 1000 * count,
    )


def bound(
    year: HouseholdYear,
    prices: PriceYear,
    tariff: Tariff,
    month_shares: dict[tuple[int, int], float],
    *,
    start_quarter: int,
    quarters: int,
    batteries: int,
    profile: str,
    start_soc: float,
    solver: str = "ipm",
) -> dict[str, Any]:
    """Solve the perfect-foresight LP; figures keyed like the replay's scenarios."""
    began = time.perf_counter()
    span = slice(start_quarter, start_quarter + quarters)
    load = np.asarray(year.load_w[span]) / 1000
    if year.ev_w:  # the car is on the meter too; the best controller may feed it from the batteries
        load = load + np.asarray(year.ev_w[span]) / 1000
    pv = np.asarray(year.pv_w[span]) / 1000
    times = local_times()[span]
    keys = sorted(month_shares)
    month = np.array([keys.index((at.year, at.month)) for at in times], dtype=np.int32)
    weights = np.array([tariff.capacity_price / 12 * month_shares[key] for key in keys])
    groups = (battery_group(profile, batteries, start_soc),) if batteries else ()
    problem = Problem(
        dt=np.full(quarters, 0.25),
        net=load - pv,
        import_price=prices.import_price[span],
        export_price=prices.export_price[span],
        house_net=None,
        groups=groups,
        month=month,
        month_floor=np.full(len(keys), tariff.capacity_floor_kw),
        month_weight=weights,
        quarter_so_far=0.0,
        terminal_value=0.0,
        wear=0.0,
        standby_choice=True,
        tie_breaks=False,
    )
    solution = solve(problem, solver)
    if solution.status != "optimal":
        raise RuntimeError(f"the perfect-foresight LP was not solved: {solution.status}")
    grid = solution.imp - solution.exp
    energy = float(
        np.sum(
            0.25 * (np.maximum(grid, 0) * problem.import_price + np.minimum(grid, 0) * problem.export_price)
        )
    )
    peaks = {keys[m]: float(np.max(np.maximum(grid[month == m], 0.0))) for m in range(len(keys))}
    capacity = sum(
        tariff.capacity_price / 12 * max(tariff.capacity_floor_kw, peaks[key]) * month_shares[key]
        for key in keys
    )
    imported = float(np.maximum(grid, 0).sum() / 4)
    exported = float(-np.minimum(grid, 0).sum() / 4)
    pv_kwh = float(pv.sum() / 4)
    group = groups[0] if groups else None
    discharged = float(solution.dis.sum() / 4)
    return {
        "scenario": "bound",
        "bill_eur": round(energy + capacity, 2),
        "energy_cost_eur": round(energy, 2),
        "capacity_cost_eur": round(capacity, 2),
        "import_kwh": round(imported, 1),
        "export_kwh": round(exported, 1),
        "self_consumption": round((pv_kwh - exported) / pv_kwh, 4) if pv_kwh else 0.0,
        "mean_monthly_peak_kw": round(sum(peaks.values()) / len(peaks), 3) if peaks else 0.0,
        "monthly_peaks_kw": {f"{y}-{m:02d}": round(kw, 3) for (y, m), kw in peaks.items()},
        "battery_cycles": round(discharged / group.max_kwh, 1) if group else 0.0,
        "load_kwh": round(float(load.sum() / 4), 1),
        "pv_kwh": round(pv_kwh, 1),
        "solve_s": round(time.perf_counter() - began, 1),
    }
