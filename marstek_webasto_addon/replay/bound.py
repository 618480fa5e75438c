"""The yardstick: the best any controller could do over the replayed period (perfect foresight).

One linear program over every quarter-hour of the period, with the true load and PV and the real prices
known in advance: the same household, tariff, battery figures and billing as the replay (energy per quarter
at its import or export price, each month's capacity-tariff peak at the floor or above, a partial month at
its share). It is the planner's own LP (`optimiser.planner.Problem`) with a horizon of the whole period, no
terminal value (the bill does not count what is left in the batteries, so neither does the bound) and the
standby drain free to come from the cells or the grid, whichever is cheaper: a relaxation of the simulator
(as is ignoring its charge taper near full), so the bound is never above what the simulated batteries could
reach. A scenario's share of the achievable saving is (no_battery - scenario) / (no_battery - bound).

The car: with `car` sessions (the replay's `car_mode="plan"`), the bound plans the car as the optimiser
does, with the same sessions, the same energy due by each departure and the same 0..max power (the LP's
relaxation of the wallbox's minimum); without them, the car is charged as the profile did. The batteries
feed the car only with `feed_car` (the optimiser's rule, so the share compares like with like; a scenario
that lets its batteries feed the car, `auto_all`, may then come below the bound).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..devices.marstek.simulator.physics import BatteryPhysics
from ..devices.marstek.simulator.profiles import PROFILES
from ..optimiser.planner import CarNeed, Group, Problem, solve
from ..optimiser.tariff import Tariff
from .data import HouseholdYear
from .prices import PriceYear, local_times
from .sessions import Visit


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
    car: tuple[Visit, ...] | None = None,
    feed_car: bool = True,
    monthly: dict[str, dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Solve the perfect-foresight LP; figures keyed like the replay's scenarios. `car`: the car's sessions
    to plan (within the span); None: the profile's charging as a fixed load. `monthly`, when given, is
    filled with each month's bill as `harness.run` fills it."""
    began = time.perf_counter()
    span = slice(start_quarter, start_quarter + quarters)
    house = np.asarray(year.load_w[span]) / 1000
    fixed_car = np.asarray(year.ev_w[span]) / 1000 if year.ev_w and car is None else np.zeros(quarters)
    load = house + fixed_car
    pv = np.asarray(year.pv_w[span]) / 1000
    car_max = None
    needs: tuple[CarNeed, ...] = ()
    if car is not None:
        car_max = np.zeros(quarters)
        for visit in car:
            car_max[visit.arrival - start_quarter : visit.departure - start_quarter] = visit.max_kw
        needs = tuple(
            CarNeed(v.arrival - start_quarter, v.departure - start_quarter, v.energy_kwh) for v in car
        )
    with_car = bool(np.any(fixed_car > 0)) or bool(car)
    charging = (fixed_car > 0) | (car_max > 0 if car_max is not None else False)
    times = (year.clock if year.clock is not None else local_times())[span]
    keys = sorted(month_shares)
    month = np.array([keys.index((at.year, at.month)) for at in times], dtype=np.int32)
    weights = np.array([tariff.capacity_price / 12 * month_shares[key] for key in keys])
    groups = (battery_group(profile, batteries, start_soc),) if batteries else ()
    problem = Problem(
        dt=np.full(quarters, 0.25),
        net=load - pv,
        import_price=prices.import_price[span],
        export_price=prices.export_price[span],
        # (as the planner: kept from the car only where it may charge, free to sell elsewhere)
        house_net=None if feed_car or not with_car else np.where(charging, house - pv, np.inf),
        groups=groups,
        month=month,
        month_floor=np.full(len(keys), tariff.capacity_floor_kw),
        month_weight=weights,
        quarter_so_far=0.0,
        terminal_value=0.0,
        wear=0.0,
        standby_choice=True,
        tie_breaks=False,
        car_max=car_max,
        car_needs=needs,
    )
    solution = solve(problem, solver)
    if solution.status != "optimal":
        raise RuntimeError(f"the perfect-foresight LP was not solved: {solution.status}")
    grid = solution.imp - solution.exp
    car_kw = fixed_car + solution.car
    battery_out = (solution.dis - solution.chg).sum(axis=0) if groups else np.zeros(quarters)
    to_car = np.minimum(car_kw, np.maximum(0.0, battery_out - np.maximum(0.0, house - pv)))
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
    if monthly is not None:
        quarter_cost = 0.25 * (
            np.maximum(grid, 0) * problem.import_price + np.minimum(grid, 0) * problem.export_price
        )
        for m, (y, mo) in enumerate(keys):
            share = month_shares[(y, mo)]
            monthly[f"{y}-{mo:02d}"] = {
                "energy_cost_eur": float(quarter_cost[month == m].sum()),
                "capacity_cost_eur": tariff.capacity_price
                / 12
                * max(tariff.capacity_floor_kw, peaks[keys[m]])
                * share,
                "peak_kw": peaks[keys[m]],
                "share": share,
            }
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
        "load_kwh": round(float((load + solution.car).sum() / 4), 1),
        "pv_kwh": round(pv_kwh, 1),
        "solve_s": round(time.perf_counter() - began, 1),
        **(
            {
                "car": {
                    "mode": "fixed" if car is None else "plan",
                    "charged_kwh": round(float(car_kw.sum() / 4), 1),
                    "sessions": len(car) if car is not None else None,
                    "missing_kwh": round(float(solution.missing.sum()), 2),
                    "battery_to_car_kwh": round(float(to_car.sum() / 4), 2),
                }
            }
            if with_car
            else {}
        ),
    }
