"""Day-ahead prices from Home Assistant: spot intervals, the contract's formula, and quarter-hour series.

`parse_day_ahead` takes an entity's state (`{"state": ..., "attributes": {...}}`, as the REST and WebSocket
APIs give it) or its attributes alone, and recognises the format by its attribute names:

- HACS `nordpool` (custom-components/nordpool): `raw_today` / `raw_tomorrow`, lists of {start, end, value}.
  The price is per `unit` (kWh, MWh or Wh) of `currency`, in cents when `price_in_cents`; the
  `unit_of_measurement` ("EUR/kWh", "c/kWh", "EUR/MWh") says the same. `raw_tomorrow` is read only while
  `tomorrow_valid` is not false. The values carry the sensor's VAT and `additional_costs` template: for
  the spot price, set the sensor up with VAT off and no additional costs.
- HACS `entsoe` (JaccoR/hass-entso-e), the average price sensor: `prices_today`, `prices_tomorrow` and
  `prices`, lists of {time, price} in the sensor's `unit_of_measurement` (EUR/kWh by default, or EUR/MWh).
  Only start times: each price holds until the next one. Its price modifier template and VAT apply too.
- HACS `epex_spot` (mampfes/ha_epex_spot), the Market Price sensor: `data`, a list of {start_time, end_time,
  price_per_kwh} in EUR/kWh; releases before 3.0 (September 2024) gave `price_eur_per_mwh` and
  `price_ct_per_kwh` instead. The Total Price sensor has the same shape with its surcharges and tax added.
- Tibber-like `today` / `tomorrow` lists of {startsAt, total} in the `unit_of_measurement` (EUR/kWh without
  one), Tibber's API shape; `total` is Tibber's price with its taxes, so a formula for it is usually
  multiplier 1 and no additions.
- Home Assistant's core `nordpool` integration (2024.12 on) puts no price list in any attribute; its action
  `nordpool.get_prices_for_date` answers {area: [{start, end, price}]} with prices in the config entry's
  currency per MWh. That response (bare, or as call_service's {"response": ...}) is read here as well.

Prices must be in euro: another currency is a configuration mistake and raises ValueError, as does a state
in none of these formats. Entries that cannot be read (no time, a naive time, a time outside 2000-2099, no
finite number) are skipped and counted, so the caller can say "3 of 96 entries unreadable" instead of losing
the whole day. `implausible_prices` tells prices no day-ahead market can have (a wrong unit) from real ones.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, FiniteFloat, ValidationError

QUARTER = timedelta(minutes=15)
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class PriceInterval:
    start: datetime  # aware
    end: datetime  # aware, after start
    price: float  # spot price, EUR/kWh


@dataclass(frozen=True)
class DayAheadPrices:
    """The readable intervals of one state, sorted by start, and what could not be read."""

    intervals: tuple[PriceInterval, ...]
    entries: int  # price entries seen, readable or not
    unreadable: int  # of those, skipped
    source: str  # the format recognised: nordpool, entsoe, epex_spot, tibber, nordpool_action


# ------------------------------------------------------------------------------------------ entries


# A time outside these years is a "no date" sentinel (0001-01-01, 9999-12-31), not a price's or a forecast's:
# the arithmetic on it (an interval's end, a period's start, a day's quarters) would raise OverflowError.
YEARS = range(2000, 2100)


def _moment(value: Any) -> Any:
    # Only ISO strings and datetimes: pydantic would also read a number as a Unix time, which no
    # integration sends, so a stray number is more likely a broken entry than a time.
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        moment = datetime.fromisoformat(value.strip())
    else:
        raise ValueError("not an ISO date-time")
    if moment.year not in YEARS:
        raise ValueError(f"{moment.isoformat()} is out of range ({YEARS.start}-{YEARS.stop - 1})")
    return moment


def _number(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("not a number")
    return value


Moment = Annotated[datetime, BeforeValidator(_moment)]
Number = Annotated[FiniteFloat, BeforeValidator(_number)]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _NordpoolEntry(_Entry):
    start: Moment
    end: Moment
    value: Number


class _EntsoeEntry(_Entry):
    time: Moment
    price: Number


class _EpexEntry(_Entry):
    start_time: Moment
    end_time: Moment
    price_per_kwh: Number | None = None
    price_eur_per_mwh: Number | None = None
    price_ct_per_kwh: Number | None = None

    def eur_per_kwh(self, scale: float) -> float | None:
        """`scale` converts `price_per_kwh` (in the sensor's currency per kWh) to EUR/kWh."""
        if self.price_per_kwh is not None:
            return self.price_per_kwh * scale
        if self.price_eur_per_mwh is not None:
            return self.price_eur_per_mwh / 1000
        if self.price_ct_per_kwh is not None:
            return self.price_ct_per_kwh / 100
        return None


class _TibberEntry(_Entry):
    startsAt: Moment  # Tibber's name
    total: Number


class _ActionEntry(_Entry):
    start: Moment
    end: Moment
    price: Number


_EPEX_PRICE_KEYS = ("price_per_kwh", "price_eur_per_mwh", "price_ct_per_kwh")


# -------------------------------------------------------------------------------------------- units

# To EUR: the currency part of a price unit. "c"/"ct" are euro cents as nordpool and epex_spot write them.
_CURRENCY = {"eur": 1.0, "€": 1.0, "c": 0.01, "ct": 0.01, "cent": 0.01, "cents": 0.01, "c€": 0.01}
# Per kWh: the energy part. Compared under casefold, so "mWh" would read as MWh; nobody prices per mWh.
_PER_ENERGY = {"wh": 1000.0, "kwh": 1.0, "mwh": 0.001}


def price_scale(unit: str) -> float:
    """The factor from a price in `unit` ("EUR/kWh", "€/MWh", "c/kWh", "ct/kWh") to EUR/kWh.

    ValueError for another currency or a unit that is not money per energy: the planner works in euro,
    and guessing a factor of 1000 wrong would make every decision wrong.
    """
    money, slash, energy = unit.strip().partition("/")
    currency = _CURRENCY.get(money.strip().casefold())
    per = _PER_ENERGY.get(energy.strip().casefold())
    if not slash or per is None:
        raise ValueError(f"price unit {unit!r} is not money per energy; expected e.g. EUR/kWh or EUR/MWh")
    if currency is None:
        raise ValueError(f"prices in {unit!r} cannot be used: the planner works in euro (EUR/kWh, c/kWh)")
    return currency * per


def _unit_scale(data: Mapping[str, Any]) -> float:
    """The factor from the state's `unit_of_measurement` to EUR/kWh; without one, EUR/kWh is assumed."""
    unit = data.get("unit_of_measurement")
    return price_scale(unit) if isinstance(unit, str) and unit.strip() else 1.0


def _check_euro(currency: Any) -> None:
    if currency is not None and str(currency).strip().casefold() not in ("eur", "€"):
        raise ValueError(f"prices in {currency} cannot be used: the planner works in euro")


# ------------------------------------------------------------------------------------------ formats


def parse_day_ahead(data: Mapping[str, Any], *, area: str | None = None) -> DayAheadPrices:
    """The spot prices in an entity's state or attributes, or in a `nordpool.get_prices_for_date` response.

    The format is recognised by its keys (see the module's description). `area` picks one area of an
    action response that holds several. An empty list (tomorrow before about 13:00) is no error: the
    result then has fewer intervals.
    """
    attributes = data.get("attributes")
    if isinstance(attributes, Mapping):
        data = attributes
    response = data.get("response")
    if isinstance(response, Mapping):
        data = response

    if "raw_today" in data or "raw_tomorrow" in data:
        return _nordpool(data)
    if any(key in data for key in ("prices_today", "prices_tomorrow", "prices")):
        return _entsoe(data)
    if isinstance(data.get("data"), list):
        return _epex_spot(data)
    if _lists_of(data, ("today", "tomorrow"), "startsAt"):
        return _tibber(data)
    areas = {key: rows for key, rows in data.items() if isinstance(rows, list) and _rows_have(rows, "price")}
    if areas:
        return _nordpool_action(areas, area)
    keys = ", ".join(sorted(map(str, data))) or "none"
    raise ValueError(
        "no day-ahead prices found; expected raw_today/raw_tomorrow (HACS nordpool), prices_today/"
        "prices_tomorrow/prices (entsoe), data with start_time (epex_spot), today/tomorrow with startsAt "
        "(Tibber) or a nordpool.get_prices_for_date response ({area: [{start, end, price}]}); "
        f"keys: {keys}"
    )


def _lists_of(data: Mapping[str, Any], keys: Iterable[str], field: str) -> bool:
    return any(isinstance(data.get(key), list) and _rows_have(data[key], field) for key in keys)


def _rows_have(rows: list[Any], field: str) -> bool:
    return any(isinstance(row, Mapping) and field in row for row in rows)


def _rows(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def _nordpool(data: Mapping[str, Any]) -> DayAheadPrices:
    _check_euro(data.get("currency"))
    unit = data.get("unit_of_measurement")
    if isinstance(unit, str) and unit.strip():
        scale = price_scale(unit)
    else:
        # Without the combined unit: the energy unit and the cents switch, as the sensor's options set them.
        cents = 0.01 if data.get("price_in_cents") else 1.0
        scale = price_scale(f"EUR/{data.get('unit') or 'kWh'}") * cents
    rows = _rows(data.get("raw_today"))
    if data.get("tomorrow_valid") is not False:
        rows += _rows(data.get("raw_tomorrow"))
    found: list[PriceInterval] = []
    bad = 0
    for row in rows:
        try:
            entry = _NordpoolEntry.model_validate(row)
        except ValidationError:
            bad += 1
            continue
        if not _add(found, entry.start, entry.end, entry.value * scale):
            bad += 1
    return _result(found, len(rows), bad, "nordpool")


def _entsoe(data: Mapping[str, Any]) -> DayAheadPrices:
    # The integration's default scale is EUR/kWh, which is what a state without a unit most likely holds.
    scale = _unit_scale(data)
    # `prices` repeats today's (and yesterday's or tomorrow's) entries: each start is read once.
    rows: dict[str, Any] = {}
    for key in ("prices_today", "prices_tomorrow", "prices"):
        for row in _rows(data.get(key)):
            key = str(row["time"]) if isinstance(row, Mapping) and "time" in row else repr(row)
            rows.setdefault(key, row)
    starts: list[tuple[datetime, float]] = []
    bad = 0
    for row in rows.values():
        try:
            entry = _EntsoeEntry.model_validate(row)
        except ValidationError:
            bad += 1
            continue
        if entry.time.tzinfo is None:
            bad += 1
            continue
        starts.append((entry.time, entry.price * scale))
    return _result(_close(starts), len(rows), bad, "entsoe")


def _epex_spot(data: Mapping[str, Any]) -> DayAheadPrices:
    rows = _rows(data.get("data"))
    if rows and not any(isinstance(row, Mapping) and set(row) & set(_EPEX_PRICE_KEYS) for row in rows):
        raise ValueError(
            "this epex_spot entity has no prices in its data (rank, quantile or volume sensor?); "
            "use the Market Price sensor"
        )
    scale = _unit_scale(data)
    found: list[PriceInterval] = []
    bad = 0
    for row in rows:
        try:
            entry = _EpexEntry.model_validate(row)
        except ValidationError:
            bad += 1
            continue
        price = entry.eur_per_kwh(scale)
        if price is None or not _add(found, entry.start_time, entry.end_time, price):
            bad += 1
    return _result(found, len(rows), bad, "epex_spot")


def _tibber(data: Mapping[str, Any]) -> DayAheadPrices:
    _check_euro(data.get("currency"))
    scale = _unit_scale(data)
    rows = _rows(data.get("today")) + _rows(data.get("tomorrow"))
    starts: list[tuple[datetime, float]] = []
    bad = 0
    for row in rows:
        try:
            entry = _TibberEntry.model_validate(row)
        except ValidationError:
            bad += 1
            continue
        if entry.startsAt.tzinfo is None:
            bad += 1
            continue
        starts.append((entry.startsAt, entry.total * scale))
    return _result(_close(starts), len(rows), bad, "tibber")


def _nordpool_action(areas: Mapping[str, list[Any]], area: str | None) -> DayAheadPrices:
    if area is None:
        if len(areas) > 1:
            raise ValueError(f"the response holds the areas {', '.join(sorted(areas))}: say which one")
        area = next(iter(areas))
    rows = next((value for key, value in areas.items() if key.casefold() == area.casefold()), None)
    if rows is None:
        raise ValueError(f"no area {area!r} in the response; it holds {', '.join(sorted(areas))}")
    found: list[PriceInterval] = []
    bad = 0
    for row in rows:
        try:
            entry = _ActionEntry.model_validate(row)
        except ValidationError:
            bad += 1
            continue
        # The action answers in the config entry's currency per MWh.
        if not _add(found, entry.start, entry.end, entry.price / 1000):
            bad += 1
    return _result(found, len(rows), bad, "nordpool_action")


def _add(found: list[PriceInterval], start: datetime, end: datetime, price: float) -> bool:
    if start.tzinfo is None or end.tzinfo is None or end <= start:
        return False
    found.append(PriceInterval(start, end, price))
    return True


def _close(starts: list[tuple[datetime, float]]) -> list[PriceInterval]:
    """Intervals from start times alone: each lasts until the next start, at most an hour.

    The last one (and one before a gap) lasts the list's usual step, so a list of quarter-hour prices does
    not end on an hour-long price.
    """
    starts = sorted(dict(starts).items())
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(starts) if timedelta(0) < b - a <= HOUR]
    step = min(gaps, default=HOUR)
    found: list[PriceInterval] = []
    for i, (start, price) in enumerate(starts):
        following = starts[i + 1][0] if i + 1 < len(starts) else None
        end = following if following is not None and following - start <= HOUR else start + step
        found.append(PriceInterval(start, end, price))
    return found


def _result(found: list[PriceInterval], entries: int, bad: int, source: str) -> DayAheadPrices:
    return DayAheadPrices(tuple(sorted(found, key=lambda item: item.start)), entries, bad, source)


# The day-ahead market's harmonised limits (SDAC) are -500 and +4000 EUR/MWh. Some entities hold the price
# with VAT (up to 30 %, as PriceFormula allows) and surcharges (nordpool's additional costs, Tibber's total,
# epex_spot's Total Price), hence the margin. A price beyond it is a unit mistake (EUR/MWh in an entity that
# says EUR/kWh reads 1000 times too dear), and planning on it would make every decision wrong.
PLAUSIBLE_PRICE_EUR_PER_KWH = (-1.0, 5.5)


def implausible_prices(intervals: Sequence[PriceInterval]) -> str:
    """Why these spot prices (EUR/kWh, before any formula) cannot be a market's: "" when they can."""
    low, high = PLAUSIBLE_PRICE_EUR_PER_KWH
    outside = [item.price for item in intervals if not low <= item.price <= high]
    if not outside:
        return ""
    worst = max(outside, key=abs)
    return (
        f"{len(outside)} of {len(intervals)} prices outside {low:g} to {high:g} EUR/kWh (e.g. {worst:g}), "
        "beyond the day-ahead market's limits: check the entity's unit"
    )


# ------------------------------------------------------------------------------------------ formula


class PriceFormula(BaseModel):
    """What the contract makes of the spot price (EUR/kWh): the all-in import and export prices.

    import = (spot x import_multiplier + import_markup + grid_fees) x (1 + vat_percent / 100)
    export = spot x export_multiplier + export_adder

    The defaults are a typical Flemish dynamic contract, the one the replay's synthetic prices use
    (replay/prices.py): import = 1.113 x spot + 0.145 EUR/kWh, export = spot - 0.015 EUR/kWh.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    import_multiplier: float = Field(
        default=1.05,
        ge=0.0,
        le=3.0,
        description="Factor on the spot price for imported energy, before VAT (1.05: spot plus 5 %).",
    )
    import_markup: float = Field(
        default=0.0068,
        ge=-0.2,
        le=0.5,
        description="EUR/kWh the supplier adds to the spot price for imported energy, before VAT.",
    )
    grid_fees: float = Field(
        default=0.13,
        ge=0.0,
        le=0.6,
        description=(
            "EUR/kWh of network charges (distribution, transmission), levies and excise on imported energy, "
            "before VAT."
        ),
    )
    vat_percent: float = Field(
        default=6.0,
        ge=0.0,
        le=30.0,
        description="VAT on the import price, in percent (Belgian households: 6).",
    )
    export_multiplier: float = Field(
        default=1.0,
        ge=0.0,
        le=3.0,
        description="Factor on the spot price for exported energy.",
    )
    export_adder: float = Field(
        default=-0.015,
        ge=-0.5,
        le=0.5,
        description="EUR/kWh added to the export price; negative for the supplier's injection fee.",
    )

    def import_price(self, spot: float) -> float:
        before_vat = spot * self.import_multiplier + self.import_markup + self.grid_fees
        return before_vat * (1 + self.vat_percent / 100)

    def export_price(self, spot: float) -> float:
        return spot * self.export_multiplier + self.export_adder


# ----------------------------------------------------------------------------------- quarter series


def aware(moment: datetime, tz: tzinfo | None = None) -> datetime:
    """`moment` with a zone: as it is when aware; a naive one is wall-clock time in `tz` (None: this
    process's local zone, which the Supervisor sets to Home Assistant's)."""
    if moment.tzinfo is not None:
        return moment
    if tz is not None:
        return moment.replace(tzinfo=tz)
    return moment.astimezone()


def quarter_grid(start: datetime, steps: int, *, tz: tzinfo | None = None) -> list[datetime]:
    """The starts (UTC) of `steps` quarter-hours from the one running at `start`, 15 real minutes apart.

    Real minutes, not wall-clock ones: a 23-hour day has 92 quarters and a 25-hour day 100.
    """
    first = aware(start, tz).astimezone(UTC)
    first = first.replace(minute=first.minute // 15 * 15, second=0, microsecond=0)
    return [first + i * QUARTER for i in range(max(steps, 0))]


def quarter_series(
    intervals: Sequence[PriceInterval], start: datetime, steps: int, *, tz: tzinfo | None = None
) -> tuple[list[float | None], int]:
    """Per quarter-hour from the one running at `start`, the price holding at the quarter's start.

    An hourly price covers its four quarters. `start` is aware, or naive wall-clock time in `tz` (see
    `aware`). Returns the values (None where no interval holds) and how many leading quarters are known.
    """
    ordered = sorted(intervals, key=lambda item: item.start)
    starts = [item.start for item in ordered]
    values: list[float | None] = []
    for moment in quarter_grid(start, steps, tz=tz):
        i = bisect.bisect_right(starts, moment) - 1
        values.append(ordered[i].price if i >= 0 and moment < ordered[i].end else None)
    known = next((i for i, value in enumerate(values) if value is None), len(values))
    return values, known


def plan_prices(
    intervals: Sequence[PriceInterval],
    formula: PriceFormula,
    start: datetime,
    steps: int,
    *,
    tz: tzinfo | None = None,
) -> tuple[list[float], list[float]]:
    """The planner's import and export prices (EUR/kWh) for the known leading quarters, at most `steps`."""
    spot, known = quarter_series(intervals, start, steps, tz=tz)
    leading = [price for price in spot[:known] if price is not None]
    return [formula.import_price(p) for p in leading], [formula.export_price(p) for p in leading]
