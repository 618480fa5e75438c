"""`replay`: the optimiser over a household year, against the simulated batteries, with baselines."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

from ..optimiser.tariff import DEFAULT_TARIFF
from ..replay.data import EV_PROFILES, HOUSEHOLDS, QUARTERS, DataError, HouseholdYear, household_year
from ..replay.harness import SCENARIOS, ReplaySetup, run

COLUMNS = (
    ("bill_eur", "bill EUR"),
    ("energy_cost_eur", "energy EUR"),
    ("capacity_cost_eur", "capacity EUR"),
    ("import_kwh", "import kWh"),
    ("export_kwh", "export kWh"),
    ("self_consumption", "self-cons."),
    ("mean_monthly_peak_kw", "peak kW"),
    ("battery_cycles", "cycles"),
    ("max_switches_per_hour", "sw/h"),
)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("replay", help="replay the optimiser over a household year, with baselines")
    parser.add_argument("--days", type=int, default=365, help="how many days (default: the whole year)")
    parser.add_argument(
        "--start",
        type=date.fromisoformat,
        default=date(2021, 1, 1),
        help="first day, YYYY-MM-DD within 2021 (the data's year)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object keyed by scenario")
    parser.add_argument("--plot", type=Path, help="write a PNG of a sample week of the optimiser")
    parser.add_argument("--household", default="family", choices=HOUSEHOLDS)
    parser.add_argument("--ev", choices=EV_PROFILES, help="add an EV's home charging to the load")
    parser.add_argument(
        "--region", type=int, default=5, help="DWD test reference year region 1..15 (5 = Essen)"
    )
    parser.add_argument("--kwp", type=float, default=5.0, help="PV peak power")
    parser.add_argument("--batteries", type=int, default=3)
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.set_defaults(handler=replay)


def first_quarter(year: HouseholdYear, day: date) -> int:
    """The quarter-hour index of local midnight starting `day` (the data's clock is CET, the bills' local)."""
    guess = (day - date(2021, 1, 1)).days * 96
    for quarter in range(max(0, guess - 8), min(QUARTERS, guess + 8)):
        if year.local_time(quarter) == datetime.combine(day, datetime.min.time()):
            return quarter
    raise ValueError(f"{day} is not within the data year 2021")


async def replay(args: argparse.Namespace) -> int:
    try:
        year = household_year(args.household, args.region, args.kwp, args.ev)
        start = first_quarter(year, args.start)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    quarters = min(QUARTERS - start, args.days * 96)
    setup = ReplaySetup(batteries=args.batteries)
    week = _sample_week(year, start, quarters)
    long_run = quarters * len(args.scenarios) > 96 * 30
    progress_bar = None
    if long_run:
        from tqdm import tqdm

        progress_bar = tqdm(
            total=quarters * len(args.scenarios),
            unit="quarter-hours",
            file=sys.stderr,
            desc="replay",
            mininterval=1.0,
        )
    results: dict[str, dict[str, Any]] = {}
    for scenario in args.scenarios:
        if progress_bar is not None:
            progress_bar.set_postfix_str(scenario)
        results[scenario] = run(
            scenario,
            year,
            DEFAULT_TARIFF,
            start_quarter=start,
            quarters=quarters,
            setup=setup,
            trace_quarters=week if scenario == "optimiser" and args.plot else None,
            progress=progress_bar.update if progress_bar is not None else None,
        )
    if progress_bar is not None:
        progress_bar.close()
    trace = results.get("optimiser", {}).get("trace")
    if args.plot and trace is not None:
        from ..replay.plot import plot_week

        first = year.local_time(week.start)
        plot_week(
            trace,
            args.plot,
            f"Optimiser, week of {first:%Y-%m-%d}: {year.name} household, "
            f"{year.kwp:g} kWp (region {year.region}), {args.batteries} batteries",
        )
    for result in results.values():
        result.pop("trace", None)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _table(results, year, args)
    return 0


def _sample_week(year: HouseholdYear, start: int, quarters: int) -> range:
    """A week in June when the replay covers it (PV and load both busy), else its first week."""
    june = next(
        (
            q
            for q in range(start, start + quarters, 96)
            if year.local_time(q).month == 6 and year.local_time(q).weekday() == 0
        ),
        None,
    )
    first = june if june is not None and june + 7 * 96 <= start + quarters else start
    return range(first, min(start + quarters, first + 7 * 96))


def _table(results: dict[str, dict[str, Any]], year: HouseholdYear, args: argparse.Namespace) -> None:
    first = next(iter(results.values()))
    pv = f"{args.kwp:g} kWp PV (region {args.region}, {first['pv_kwh']:.0f} kWh)"
    print(
        f"{year.name} household, {first['load_kwh']:.0f} kWh load, {pv}, {args.batteries} x Venus E, "
        f"from {first['from'][:10]} for {min(args.days, 365)} days"
    )
    print(f"{'scenario':<11}" + "".join(f"{label:>14}" for _, label in COLUMNS))
    for name, result in results.items():
        print(f"{name:<11}" + "".join(f"{result[key]!s:>14}" for key, _ in COLUMNS))
