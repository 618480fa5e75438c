"""Prices per quarter-hour of the replay year: from tariff periods, from a CSV, or the synthetic dynamic year.

Dynamic (day-ahead) prices cannot be downloaded here and no package ships Belgian price history, so the
replay carries a generator of a synthetic price year instead (reference optimiser.md sections 4.3 and 5):
a Belgian-like day-ahead spot price per quarter-hour, seeded and deterministic, built from

- a monthly level (higher in winter), a weekday/weekend difference;
- a daily shape: night trough, morning and evening peaks;
- a midday solar dip whose depth follows a day-to-day "sunniness" series and the season, deep enough on
  sunny spring and summer days (weekends most) to go negative;
- day-to-day wind (AR(1)) and quarter-hour noise (AR(1));

calibrated to the public 2025 figures: about 520 hours below zero and a mean daily spread (highest minus
lowest hour) of about EUR 110/MWh (the generated year: 514 hours, EUR 111.5/MWh). All-in prices
follow a typical Flemish dynamic contract (EnergyVision 2026 as quoted in the reference, with network
charges and taxes): import = 1.113 x spot + EUR 0.145/kWh, export = spot - EUR 0.015/kWh.

`replay --prices synthetic --write-prices FILE.csv` writes the year as CSV in the format `--prices` reads:
`timestamp,import,export` with ISO timestamps (UTC offset included), EUR per kWh; `describe()` gives its
figures.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from ..optimiser.tariff import Tariff
from .data import FIRST_QUARTER_UTC, QUARTERS

FloatArray = npt.NDArray[np.float64]
LOCAL = ZoneInfo("Europe/Brussels")

IMPORT_FACTOR = 1.113
IMPORT_ADDER = 0.145  # EUR/kWh: supplier margin, network charges and taxes, VAT
EXPORT_MARGIN = 0.015  # EUR/kWh

# 2021's Belgian public holidays: priced as Sundays.
HOLIDAYS = {(1, 1), (4, 5), (5, 1), (5, 13), (5, 24), (7, 21), (8, 15), (11, 1), (11, 11), (12, 25)}


@dataclass(frozen=True, eq=False)
class PriceYear:
    import_price: FloatArray  # EUR/kWh per data quarter
    export_price: FloatArray
    name: str
    dynamic: bool  # True: quarter-hour prices the rule engine cannot see


@cache
def local_times() -> tuple[datetime, ...]:
    """Local wall-clock start of every data quarter (the same for every household year)."""
    return tuple(
        (FIRST_QUARTER_UTC + timedelta(minutes=15 * q)).astimezone(LOCAL).replace(tzinfo=None)
        for q in range(QUARTERS)
    )


def tariff_prices(tariff: Tariff) -> PriceYear:
    """The tariff's period prices and its injection price, quarter by quarter."""
    prices = np.array([tariff.price_at(at) for at in local_times()])
    return PriceYear(prices, np.full(QUARTERS, tariff.injection_price), "tariff periods", False)


def all_in(spot_eur_mwh: FloatArray) -> tuple[FloatArray, FloatArray]:
    spot = spot_eur_mwh / 1000
    return IMPORT_FACTOR * spot + IMPORT_ADDER, spot - EXPORT_MARGIN


def synthetic_spot(seed: int = 2021) -> FloatArray:
    """A year of day-ahead prices in EUR/MWh per data quarter (see the module's description)."""
    rng = np.random.default_rng(seed)
    times = local_times()
    days = sorted({at.date() for at in times})
    day_index = {day: i for i, day in enumerate(days)}
    wind = _ar1(rng, len(days), 0.7)
    sun = 1 / (1 + np.exp(-1.6 * _ar1(rng, len(days), 0.6) - 0.3))  # 0..1, more sunny than not
    noise = _ar1(rng, QUARTERS, 0.9)
    level = (118, 108, 92, 80, 72, 70, 74, 80, 92, 104, 114, 120)
    dip_depth = (28, 50, 105, 168, 196, 207, 202, 179, 129, 73, 33, 22)
    spot = np.empty(QUARTERS)
    for q, at in enumerate(times):
        d = day_index[at.date()]
        hour = at.hour + at.minute / 60 + 0.125
        off = at.weekday() >= 5 or (at.month, at.day) in HOLIDAYS
        shape = (
            -22 * math.exp(-(((hour - 3.5) / 2.5) ** 2))
            + 28 * math.exp(-(((hour - 8.0) / 1.3) ** 2))
            + 42 * math.exp(-(((hour - 19.0) / 1.8) ** 2))
        )
        dip = (
            dip_depth[at.month - 1]
            * sun[d]
            * math.exp(-(((hour - 13.5) / 2.6) ** 2))
            * (1.25 if off else 1.0)
        )
        spot[q] = level[at.month - 1] - (14 if off else 0) + shape - dip - 24 * wind[d] + 9 * noise[q]
    return np.round(spot, 2)


def _ar1(rng: np.random.Generator, n: int, phi: float) -> FloatArray:
    """A stationary AR(1) series with unit variance."""
    draws = rng.standard_normal(n)
    out = np.empty(n)
    out[0] = draws[0]
    scale = math.sqrt(1 - phi * phi)
    for i in range(1, n):
        out[i] = phi * out[i - 1] + scale * draws[i]
    return out


def synthetic_prices(seed: int = 2021) -> PriceYear:
    import_price, export_price = all_in(synthetic_spot(seed))
    return PriceYear(import_price, export_price, f"synthetic dynamic prices (seed {seed})", True)


def describe(spot_eur_mwh: FloatArray) -> dict[str, float]:
    """Figures to compare a price year with the public 2025 ones."""
    hourly = spot_eur_mwh[: QUARTERS // 4 * 4].reshape(-1, 4).mean(axis=1)
    daily = hourly[: len(hourly) // 24 * 24].reshape(-1, 24)
    return {
        "mean_eur_mwh": round(float(spot_eur_mwh.mean()), 1),
        "negative_hours": int((hourly < 0).sum()),
        "mean_daily_spread_eur_mwh": round(float((daily.max(axis=1) - daily.min(axis=1)).mean()), 1),
    }


class PriceFileError(ValueError):
    """A price CSV that cannot be used, with what is wrong in it."""


def read_price_csv(path: Path, injection_price: float) -> PriceYear:
    """`timestamp,import[,export]` rows (EUR/kWh), hourly or quarter-hourly; each price holds until the next
    row. Timestamps with a UTC offset are exact; naive ones are Belgian local time. A year other than 2021 is
    laid onto the data year by its position in the year (1 January 00:00 onto the first quarter). Without an
    export column, export earns `injection_price`."""
    rows: list[tuple[datetime, float, float | None]] = []
    with path.open(newline="", encoding="utf-8") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or row[0].strip().startswith("#"):
                continue
            try:
                stamp = datetime.fromisoformat(row[0].strip())
                imported = float(row[1])
                exported = float(row[2]) if len(row) > 2 and row[2].strip() else None
            except (ValueError, IndexError):
                if not rows and number == 1:
                    continue  # a header
                raise PriceFileError(f"{path}:{number}: expected timestamp,import[,export]: {row}") from None
            # in UTC: aware times in one zone compare by wall clock, which repeats an hour in October
            exact = stamp if stamp.tzinfo else stamp.replace(tzinfo=LOCAL)
            rows.append((exact.astimezone(UTC), imported, exported))
    if not rows:
        raise PriceFileError(f"{path}: no prices in it")
    rows.sort(key=lambda r: r[0])
    first = rows[0][0].astimezone(LOCAL)
    origin = datetime(first.year, 1, 1, tzinfo=LOCAL).astimezone(UTC)
    offsets = np.array([(r[0] - origin).total_seconds() / 900 for r in rows])
    if offsets[0] > 0:
        raise PriceFileError(f"{path}: the prices start {first:%Y-%m-%d %H:%M}, after 1 January 00:00")
    quarters = (
        np.arange(QUARTERS) + (FIRST_QUARTER_UTC - datetime(2021, 1, 1, tzinfo=LOCAL)).total_seconds() / 900
    )
    which = np.searchsorted(offsets, quarters, side="right") - 1
    last = offsets[-1] + (offsets[-1] - offsets[-2] if len(offsets) > 1 else 1)
    covered = int((quarters < last).sum())
    import_price = np.array([r[1] for r in rows])[which]
    export_price = np.array([injection_price if r[2] is None else r[2] for r in rows])[which]
    name = f"{path.name} ({len(rows)} prices)"
    if covered < QUARTERS:
        import_price[covered:] = math.nan
        export_price[covered:] = math.nan
        name += f", up to quarter {covered}"
    return PriceYear(import_price, export_price, name, True)


def write_price_csv(prices: PriceYear, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["timestamp", "import", "export"])
        for q in range(QUARTERS):
            at = (FIRST_QUARTER_UTC + timedelta(minutes=15 * q)).astimezone(LOCAL)
            out.writerow([at.isoformat(), f"{prices.import_price[q]:.5f}", f"{prices.export_price[q]:.5f}"])
