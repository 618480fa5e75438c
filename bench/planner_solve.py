"""Benchmark: one plan solve (48 h in 15-minute steps, three batteries), and a year's replay with the planner.

- cold: `plan()` from scratch, a fresh solver each time (what a single call costs; target p99 < 50 ms);
- rolling: `Planner.plan()` re-planning every quarter-hour towards the same horizon end, as the add-on and
  the replay do (the solver starts from the last optimum);
- year: the replay's `optimiser` scenario over 2021 (the family household, region 5), single-threaded.

    .venv/bin/python -m bench.planner_solve [--solves 300] [--no-year]
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timedelta

import numpy as np

from marstek_webasto_addon.optimiser.planner import (
    BatterySpec,
    CapacityTariff,
    PlanInputs,
    Planner,
    horizon_steps,
    plan,
)
from marstek_webasto_addon.optimiser.tariff import DEFAULT_TARIFF

START = datetime(2021, 3, 15)  # 00:00 on a Monday: the horizon runs to the end of Tuesday, 48 h


def inputs_at(start: datetime, end_steps: int, soc: float) -> PlanInputs:
    """Two days of a spring household (load with morning and evening peaks, 5 kWp of PV) from `start`."""
    steps = end_steps - round((start - START) / timedelta(minutes=15))
    times = [start + timedelta(minutes=15 * k) for k in range(steps)]
    hours = np.array([t.hour + t.minute / 60 for t in times])
    day = np.array([t.day for t in times])
    load = 0.25 + 0.7 * np.exp(-(((hours - 7.5) / 1.0) ** 2)) + 1.2 * np.exp(-(((hours - 19) / 2.0) ** 2))
    cloud = np.where(day % 2 == 0, 0.55, 0.9)
    pv = np.clip(4.2 * np.sin((hours - 6.5) / 13 * np.pi), 0, None) * cloud
    return PlanInputs(
        start=start,
        import_price=np.array([DEFAULT_TARIFF.price_at(t) for t in times]),
        export_price=np.full(steps, DEFAULT_TARIFF.injection_price),
        load_kw=load,
        pv_kw=pv,
        batteries=tuple(BatterySpec(f"b{i}", 5.12, soc) for i in range(3)),
        capacity=CapacityTariff(month_peak_kw=2.7),
    )


def percentiles(seconds: list[float]) -> str:
    ms = np.asarray(seconds) * 1000
    return (
        f"p50 {np.percentile(ms, 50):6.2f} ms   p99 {np.percentile(ms, 99):6.2f} ms   max {ms.max():6.2f} ms"
    )


def solves(count: int) -> None:
    steps = horizon_steps(START)
    cold: list[float] = []
    for k in range(count):
        case = inputs_at(START, steps, 20 + k % 60)
        began = time.perf_counter()
        result = plan(case)
        cold.append(time.perf_counter() - began)
        assert result.status == "optimal", result.status
    rolling: list[float] = []
    planner = Planner()
    soc = 30.0
    for k in range(min(count, steps - 96)):
        case = inputs_at(START + timedelta(minutes=15 * k), steps, soc)
        began = time.perf_counter()
        result = planner.plan(case)
        rolling.append(time.perf_counter() - began)
        assert result.first is not None
        soc = result.first.batteries[0].soc  # the batteries did what the plan said
    print(f"one solve, {steps} quarter-hours (48 h), 3 batteries, capacity tariff:")
    print(f"  cold    ({len(cold):4d} solves)  {percentiles(cold)}")
    print(f"  rolling ({len(rolling):4d} solves)  {percentiles(rolling)}")


def year() -> None:
    from marstek_webasto_addon.replay.data import household_year
    from marstek_webasto_addon.replay.harness import run

    household = household_year("family", 5, 5.0)
    began, cpu = time.perf_counter(), time.process_time()
    figures = run("optimiser", household, DEFAULT_TARIFF)
    wall, used = time.perf_counter() - began, time.process_time() - cpu
    print("year replay with the planner (family, region 5, 35 040 quarter-hours, one plan each):")
    print(
        f"  {wall:6.1f} s wall, {used:6.1f} s CPU; plans p50 {figures['plan_ms_p50']} ms, "
        f"p99 {figures['plan_ms_p99']} ms; bill EUR {figures['bill_eur']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--solves", type=int, default=300)
    parser.add_argument("--no-year", action="store_true", help="only the solve times")
    args = parser.parse_args()
    solves(args.solves)
    if not args.no_year:
        year()


if __name__ == "__main__":
    main()
