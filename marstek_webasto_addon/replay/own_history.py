"""The savings report: the replay run on the site's own recorded history instead of the 2021 data year.

The add-on records six weeks of clock quarter-hours (`addon.quarter_history`: the house load without the car,
the PV and the wallbox, kW, unknown where nobody saw them). Replayed here with the site's battery count and
profile, billed with the tariff it is configured with, are

- `no_battery`: the meter without batteries;
- `auto_all`: every battery in its own Auto (what the batteries do without the add-on);
- `rules`: the add-on's rule engine;
- `optimiser`: the planner (its load learned only from the quarters before, as live; its PV forecast the
  recorded PV with the replay's seeded error);
- `bound`: the perfect-foresight LP, the best any controller could have done;

each with its bill per calendar month (energy and capacity tariff, a partial month at its share of the
tariff) and its share of the achievable saving: (no_battery - scenario) / (no_battery - bound).

Gaps: the quarters before the first and after the last recorded house load are left out. A quarter inside
that nobody saw takes the same quarter of the nearest day that was seen (before or after), a series never
recorded at all (no PV meter, no wallbox) counts as zero; the report says how many quarters were filled.
The recorded times are the local wall clock: the hour that does not exist when the clocks go forward is a
gap (filled), the repeated hour in autumn was recorded once.

Prices: the tariff's periods and its injection price (the recorded history carries no day-ahead prices).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from ..devices.marstek.simulator.profiles import PROFILES
from ..jsonfile import read_json
from ..optimiser.tariff import Tariff
from .bound import bound
from .data import HouseholdYear
from .harness import ReplaySetup, month_fractions, run
from .prices import FloatArray, PriceYear

SCENARIOS = ("no_battery", "auto_all", "rules", "optimiser")
REPORTED = (*SCENARIOS, "bound")
MIN_QUARTERS = 96  # a day at least
BOUND_WEIGHT = 0.25  # the bound's share of the work, in scenario runs (for the progress)
SERIES = ("house", "pv", "wallbox")


class HistoryError(ValueError):
    """A recorded history the report cannot use, with what is wrong with it."""


@dataclass(frozen=True)
class RecordedHistory:
    """Consecutive clock quarter-hours (local wall clock), the mean kW of each series (NaN: unknown)."""

    clock: tuple[datetime, ...]
    kw: Mapping[str, FloatArray]


@dataclass(frozen=True)
class Prepared:
    year: HouseholdYear
    filled: dict[str, int] = field(default_factory=dict)  # series -> quarters filled
    notes: tuple[str, ...] = ()


def quarter_time(index: int) -> datetime:
    """The local wall-clock start of a clock quarter (`quarter_history.quarter_index`'s inverse)."""
    return datetime.fromordinal(index // 96) + timedelta(minutes=15 * (index % 96))


def from_snapshot(saved: Mapping[str, Any]) -> RecordedHistory:
    """The history as `QuarterHistory.snapshot()` keeps it: the last quarter's index and W per quarter."""
    last, watts = saved.get("last"), saved.get("watts")
    if not isinstance(last, int) or not isinstance(watts, Mapping):
        raise HistoryError("no recorded quarter-hours in it (expected the add-on's `history`)")
    length = max((len(v) for v in watts.values() if isinstance(v, list)), default=0)
    kw: dict[str, FloatArray] = {}
    for key in SERIES:
        values = watts.get(key) or []
        if not isinstance(values, list):
            raise HistoryError(f"`watts.{key}` is not a list")
        padded = [math.nan] * (length - len(values)) + [
            math.nan if v is None else float(v) / 1000 for v in values
        ]
        kw[key] = np.asarray(padded, dtype=np.float64)
    clock = tuple(quarter_time(last - length + 1 + k) for k in range(length))
    return RecordedHistory(clock, kw)


def read_history(path: Path) -> RecordedHistory:
    """A recorded history from a file: the add-on's state.json (under /data), its `optimiser` section, or
    the `history` snapshot alone."""
    try:
        data = read_json(path)
    except ValueError as exc:
        raise HistoryError(str(exc)) from None
    for keys in (("optimiser", "history"), ("history",), ()):
        found: Any = data
        for key in keys:
            found = found.get(key) if isinstance(found, dict) else None
        if isinstance(found, dict) and "watts" in found:
            try:
                return from_snapshot(found)
            except HistoryError as exc:
                raise HistoryError(f"{path}: {exc}") from None
    raise HistoryError(f"{path}: no recorded history in it (expected the add-on's state.json)")


def _fill(values: FloatArray) -> tuple[FloatArray, int]:
    """Unknown quarters from the same quarter of the nearest day seen; zero when the series was never seen."""
    missing = np.isnan(values)
    if missing.all():
        return np.zeros(len(values)), 0
    out = values.copy()
    days = len(values) // 96 + 1
    for i in np.flatnonzero(missing):
        for k in range(1, days + 1):
            near = [j for j in (i - 96 * k, i + 96 * k) if 0 <= j < len(values) and not missing[j]]
            if near:
                out[i] = values[near[0]]
                break
        else:
            out[i] = float(np.nanmean(values))  # less than a day seen: its mean
    return out, int(missing.sum())


def prepare(history: RecordedHistory) -> Prepared:
    """The replay's input: trimmed to the recorded house load, gaps filled (see the module's description)."""
    house = history.kw["house"]
    seen = np.flatnonzero(~np.isnan(house))
    if len(seen) < MIN_QUARTERS:
        raise HistoryError(
            f"{len(seen)} quarter-hours of house load recorded; the report needs at least a day "
            f"({MIN_QUARTERS}): let the add-on run a day with the optimiser on"
        )
    span = slice(int(seen[0]), int(seen[-1]) + 1)
    clock = history.clock[span]
    filled: dict[str, int] = {}
    notes: list[str] = []
    series: dict[str, FloatArray] = {}
    for key in SERIES:
        values = history.kw[key][span]
        never = bool(np.isnan(values).all())
        series[key], filled[key] = _fill(values)
        if never and key != "wallbox":
            notes.append(f"no {key} recorded: counted as zero")
    unknown = max(filled.values())
    if unknown:
        notes.append(
            f"{unknown} of {len(clock)} quarter-hours were not recorded; each took the same quarter-hour "
            "of the nearest day recorded"
        )
    watts = {key: [float(v) for v in np.maximum(series[key], 0.0) * 1000] for key in SERIES}
    car = any(w > 0 for w in watts["wallbox"])
    year = HouseholdYear(
        load_w=watts["house"],
        pv_w=watts["pv"],
        name="recorded history",
        region=0,
        kwp=round(max(watts["pv"], default=0.0) / 1000, 1),
        ev_w=watts["wallbox"] if car else None,
        clock=clock,
    )
    return Prepared(year, filled, tuple(notes))


def tariff_prices_on(clock: tuple[datetime, ...], tariff: Tariff) -> PriceYear:
    """The tariff's period prices and its injection price on the recorded quarters."""
    prices = np.array([tariff.price_at(at) for at in clock], dtype=np.float64)
    return PriceYear(prices, np.full(len(clock), tariff.injection_price), "tariff periods", False)


def savings_report(
    history: RecordedHistory,
    tariff: Tariff,
    *,
    batteries: int,
    profile: str = "venus_e3_v150",
    start_soc: float = 50.0,
    progress: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Replay the scenarios and the bound on the history; `progress` gets the share done (0..1) now and
    then. Bills in EUR per scenario and per month; see the module's description."""
    if batteries < 1:
        raise HistoryError("the report needs at least one battery")
    if profile not in PROFILES:
        raise HistoryError(f"unknown battery profile {profile!r}; one of {', '.join(PROFILES)}")
    prepared = prepare(history)
    year = prepared.year
    quarters = len(year.load_w)
    prices = tariff_prices_on(year.clock or (), tariff)
    setup = ReplaySetup(batteries=batteries, profile=profile, start_soc=start_soc)
    work = quarters * (len(SCENARIOS) + BOUND_WEIGHT)
    done = 0

    def step(count: int) -> None:
        nonlocal done
        done += count
        if progress is not None and (done % 96 == 0 or done == quarters * len(SCENARIOS)):
            progress(done / work)

    if progress is not None:
        progress(0.0)
    figures: dict[str, dict[str, Any]] = {}
    months: dict[str, dict[str, dict[str, float]]] = {}
    for scenario in SCENARIOS:
        months[scenario] = {}
        figures[scenario] = run(
            scenario,
            year,
            tariff,
            prices=prices,
            quarters=quarters,
            setup=setup,
            progress=step,
            monthly=months[scenario],
        )
    months["bound"] = {}
    figures["bound"] = bound(
        year,
        prices,
        tariff,
        month_fractions(0, quarters, year.clock),
        start_quarter=0,
        quarters=quarters,
        batteries=batteries,
        profile=profile,
        start_soc=start_soc,
        monthly=months["bound"],
    )
    if progress is not None:
        progress(1.0)
    return _report(prepared, figures, months, prices, setup)


def _report(
    prepared: Prepared,
    figures: dict[str, dict[str, Any]],
    months: dict[str, dict[str, dict[str, float]]],
    prices: PriceYear,
    setup: ReplaySetup,
) -> dict[str, Any]:
    clock = prepared.year.clock or ()
    scenarios: dict[str, dict[str, Any]] = {}
    for name in REPORTED:
        by_month = {
            month: {
                "energy_eur": round(bill["energy_cost_eur"], 2),
                "capacity_eur": round(bill["capacity_cost_eur"], 2),
                "bill_eur": round(bill["energy_cost_eur"], 2) + round(bill["capacity_cost_eur"], 2),
                "peak_kw": round(bill["peak_kw"], 3),
            }
            for month, bill in months[name].items()
        }
        for bill in by_month.values():
            bill["bill_eur"] = round(bill["bill_eur"], 2)
        scenarios[name] = {
            # the months' sum (each rounded to the cent), so the table adds up
            "bill_eur": round(sum(b["bill_eur"] for b in by_month.values()), 2),
            "energy_eur": round(sum(b["energy_eur"] for b in by_month.values()), 2),
            "capacity_eur": round(sum(b["capacity_eur"] for b in by_month.values()), 2),
            "import_kwh": figures[name]["import_kwh"],
            "export_kwh": figures[name]["export_kwh"],
            "months": by_month,
        }
    baseline = scenarios["no_battery"]["bill_eur"]
    achievable = round(baseline - scenarios["bound"]["bill_eur"], 2)
    for result in scenarios.values():
        result["saving_eur"] = round(baseline - result["bill_eur"], 2)
        result["share"] = round((baseline - result["bill_eur"]) / achievable, 4) if achievable > 0 else None
    first, last = clock[0], clock[-1] + timedelta(minutes=15)
    return {
        "from": first.isoformat(timespec="minutes"),
        "to": last.isoformat(timespec="minutes"),
        "days": round(len(clock) / 96, 2),
        "quarters": len(clock),
        "filled_quarters": prepared.filled,
        "notes": list(prepared.notes),
        "batteries": setup.batteries,
        "profile": setup.profile,
        "prices": prices.name,
        "load_kwh": figures["no_battery"]["load_kwh"],
        "pv_kwh": figures["no_battery"]["pv_kwh"],
        "achievable_eur": achievable,
        "months": sorted({month for result in scenarios.values() for month in result["months"]}),
        "scenarios": scenarios,
    }
