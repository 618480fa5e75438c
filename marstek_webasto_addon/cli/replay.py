"""`replay`: the optimiser over a household year against simulated batteries, with baselines and bound."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any

from ..addon.options import OptionsError, parse_options
from ..jsonfile import read_json
from ..optimiser.tariff import DEFAULT_TARIFF, Tariff
from ..replay.bound import bound
from ..replay.data import EV_PROFILES, HOUSEHOLDS, QUARTERS, DataError, HouseholdYear, household_year
from ..replay.harness import (
    CAR_MODES,
    SCENARIOS,
    PlannerSetup,
    ReplaySetup,
    car_visits,
    month_fractions,
    run,
)
from ..replay.prices import (
    PriceFileError,
    PriceYear,
    read_price_csv,
    synthetic_prices,
    tariff_prices,
    write_price_csv,
)
from .marstek import non_negative_float, positive_int

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


CAR_COLUMNS = ("charged kWh", "met", "missing kWh", "battery->car")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "replay", help="replay the optimiser over a household year, with baselines and the best possible"
    )
    parser.add_argument(
        "--days", type=positive_int, default=365, help="how many days (default: the whole year)"
    )
    parser.add_argument(
        "--start",
        type=date.fromisoformat,
        default=date(2021, 1, 1),
        help="first day, YYYY-MM-DD within 2021 (the data's year)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object keyed by scenario")
    parser.add_argument("--plot", type=Path, help="write a PNG of a sample week of the optimiser")
    parser.add_argument("--household", default="family", choices=HOUSEHOLDS)
    parser.add_argument("--ev", choices=EV_PROFILES, help="add an EV's home charging (a wallbox) to the load")
    parser.add_argument(
        "--car-mode",
        choices=CAR_MODES,
        default="fixed",
        help="with --ev: `fixed` charges the car as the profile did; `plan` lets the optimiser (and the "
        "bound) plan each session's charging by its departure (the other scenarios as the profile did)",
    )
    parser.add_argument(
        "--region", type=int, default=5, help="DWD test reference year region 1..15 (5 = Essen)"
    )
    parser.add_argument("--kwp", type=non_negative_float, default=5.0, help="PV peak power (default 5)")
    parser.add_argument(
        "--batteries", type=positive_int, default=3, help="how many Venus E batteries (default 3)"
    )
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument(
        "--bound",
        action="store_true",
        help="also the perfect-foresight bound, and each scenario's share of the achievable saving",
    )
    parser.add_argument(
        "--tariff",
        type=Path,
        metavar="FILE",
        help="tariff periods, injection and capacity prices: a JSON file with the options' `tariff` section "
        "(or a whole options file)",
    )
    parser.add_argument(
        "--prices",
        metavar="CSV",
        help="quarter-hour or hourly prices: a CSV of timestamp,import[,export] in EUR/kWh, or `synthetic` "
        "for the shipped synthetic dynamic price year; the bill and the planner use them",
    )
    parser.add_argument(
        "--write-prices",
        type=Path,
        metavar="CSV",
        help="write the year's prices (the tariff's, or --prices) as a CSV that --prices reads, and stop",
    )
    parser.add_argument(
        "--pv-error", type=float, default=0.3, help="the planner's PV forecast error (log-normal sigma a day)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the PV forecast's error")
    parser.set_defaults(handler=replay)


def first_quarter(year: HouseholdYear, day: date) -> int:
    """The quarter-hour index of local midnight starting `day` (the data's clock is CET, the bills' local)."""
    guess = (day - date(2021, 1, 1)).days * 96
    for quarter in range(max(0, guess - 8), min(QUARTERS, guess + 8)):
        if year.local_time(quarter) == datetime.combine(day, datetime.min.time()):
            return quarter
    raise ValueError(f"{day} is not within the data year 2021")


def load_tariff(path: Path) -> Tariff:
    """The `tariff` section of the add-on's options (validated as the add-on does) from a JSON file."""
    data = read_json(path)
    section = data.get("tariff", data) if isinstance(data, dict) else data
    try:
        return parse_options({"tariff": section}).tariff.build()
    except OptionsError as exc:
        raise ValueError(f"{path}: " + "; ".join(exc.problems)) from None


def load_prices(spec: str | None, tariff: Tariff) -> PriceYear:
    if spec is None:
        return tariff_prices(tariff)
    if spec == "synthetic":
        return synthetic_prices()
    try:
        return read_price_csv(Path(spec), tariff.injection_price)
    except OSError as exc:
        raise ValueError(f"cannot read {spec}: {exc.strerror}") from None


async def replay(args: argparse.Namespace) -> int:
    try:
        year = household_year(args.household, args.region, args.kwp, args.ev)
        start = first_quarter(year, args.start)
        tariff = load_tariff(args.tariff) if args.tariff else DEFAULT_TARIFF
        prices = load_prices(args.prices, tariff)
    except (DataError, ValueError, PriceFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.write_prices:
        write_price_csv(prices, args.write_prices)
        print(f"wrote {args.write_prices}: {prices.name}, {QUARTERS} quarter-hours")
        return 0
    quarters = min(QUARTERS - start, args.days * 96)
    if prices.import_price[start : start + quarters].size and not all(
        price == price for price in prices.import_price[start : start + quarters]
    ):
        print(f"error: {prices.name} does not cover the replayed days", file=sys.stderr)
        return 2
    setup = ReplaySetup(
        batteries=args.batteries,
        planner=PlannerSetup(pv_error_sigma=args.pv_error, pv_error_seed=args.seed),
        car_mode=args.car_mode,
    )
    scenarios = list(dict.fromkeys(args.scenarios + (["no_battery"] if args.bound else [])))
    week = _sample_week(year, start, quarters)
    long_run = quarters * len(scenarios) > 96 * 30
    progress_bar = None
    if long_run:
        from tqdm import tqdm

        progress_bar = tqdm(
            total=quarters * len(scenarios),
            unit="quarter-hours",
            file=sys.stderr,
            desc="replay",
            mininterval=1.0,
        )
    results: dict[str, dict[str, Any]] = {}
    for scenario in scenarios:
        if progress_bar is not None:
            progress_bar.set_postfix_str(scenario)
        began = time.perf_counter()
        results[scenario] = run(
            scenario,
            year,
            tariff,
            prices=prices,
            start_quarter=start,
            quarters=quarters,
            setup=setup,
            trace_quarters=week if scenario == "optimiser" and args.plot else None,
            progress=progress_bar.update if progress_bar is not None else None,
        )
        results[scenario]["run_s"] = round(time.perf_counter() - began, 1)
    if progress_bar is not None:
        progress_bar.close()
    if args.bound:
        results["bound"] = bound(
            year,
            prices,
            tariff,
            month_fractions(start, quarters),
            start_quarter=start,
            quarters=quarters,
            batteries=args.batteries,
            profile=setup.profile,
            start_soc=setup.start_soc,
            car=car_visits(year, start, quarters) if args.ev and args.car_mode == "plan" else None,
            feed_car=setup.planner.feed_car,
        )
        _shares(results)
    trace = results.get("optimiser", {}).get("trace")
    if args.plot and trace is not None:
        from ..replay.plot import plot_week

        first = year.local_time(week.start)
        plot_week(
            trace,
            args.plot,
            f"Optimiser (planner), week of {first:%Y-%m-%d}: {year.name} household, "
            f"{year.kwp:g} kWp (region {year.region}), {args.batteries} batteries",
        )
    for result in results.values():
        result.pop("trace", None)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _table(results, year, args, prices, quarters)
    return 0


def _shares(results: dict[str, dict[str, Any]]) -> None:
    """(no_battery - scenario) / (no_battery - bound): the share of the achievable saving each reaches."""
    baseline = results["no_battery"]["bill_eur"]
    achievable = baseline - results["bound"]["bill_eur"]
    for result in results.values():
        result["share_of_achievable"] = (
            round((baseline - result["bill_eur"]) / achievable, 4) if achievable > 0 else None
        )


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


def _days(quarters: int) -> str:
    """What was replayed: --days stops at the data year's end (a December start gets fewer days)."""
    days = quarters / 96
    return f"{days:g} day" if days == 1 else f"{days:g} days"


def _table(
    results: dict[str, dict[str, Any]],
    year: HouseholdYear,
    args: argparse.Namespace,
    prices: PriceYear,
    quarters: int,
) -> None:
    first = next(iter(results.values()))
    pv = f"{args.kwp:g} kWp PV (region {args.region}, {first['pv_kwh']:.0f} kWh)"
    print(
        f"{year.name} household, {first['load_kwh']:.0f} kWh load, {pv}, {args.batteries} x Venus E, "
        f"from {first['from'][:10]} for {_days(quarters)}; prices: {prices.name}"
    )
    columns = COLUMNS + ((("share_of_achievable", "share"),) if "bound" in results else ())
    print(f"{'scenario':<11}" + "".join(f"{label:>14}" for _, label in columns))
    for name, result in results.items():
        print(f"{name:<11}" + "".join(f"{_cell(result.get(key)):>14}" for key, _ in columns))
    if any("car" in result for result in results.values()):
        print(f"car ({args.car_mode})" + "".join(f"{label:>14}" for label in CAR_COLUMNS))
        for name, result in results.items():
            car = result.get("car", {})
            met = f"{car.get('sessions_met', '-')}/{car.get('sessions') or '-'}"
            cells = (car.get("charged_kwh"), met, car.get("missing_kwh"), car.get("battery_to_car_kwh"))
            print(f"{name:<11}" + "".join(f"{_cell(cell):>14}" for cell in cells))
    if "bound" in results:
        months = list(results["bound"]["monthly_peaks_kw"])
        print("peaks kW   " + "".join(f"{month:>10}" for month in months))
        for name, result in results.items():
            peaks = result.get("monthly_peaks_kw", {})
            print(f"{name:<11}" + "".join(f"{_cell(peaks.get(month)):>10}" for month in months))
        # The lowest peak the car's sessions allowed from the batteries' state at each plug-in (what a
        # controller that learns of a session at its arrival could at best do; the bound knew in advance).
        arrival = results.get("optimiser", {}).get("car", {}).get("peak_from_arrival_kw")
        if arrival:
            print(f"{'at plug-in':<11}" + "".join(f"{_cell(arrival.get(month)):>10}" for month in months))


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and abs(value) < 2:
        return f"{value:.3f}"
    return str(value)
