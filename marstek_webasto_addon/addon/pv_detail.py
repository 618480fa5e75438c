"""Detailed PV forecasts from Home Assistant, as energy per quarter-hour and as the planner's kW series.

The formats (`parse_pv_forecast` takes an entity's state or its attributes, and picks the first it finds):

- Solcast (HACS `solcast_solar`, BJReplay/ha-solcast-solar), one sensor per day: `detailedForecast`, a list of
  {period_start, pv_estimate, pv_estimate10, pv_estimate90}, the average kW over the half hour from
  period_start; `detailedHourly` the same per hour; `detailedForecast_<site>` per site when enabled.
- Open-Meteo Solar Forecast (HACS, rany2/ha-open-meteo-solar-forecast), the energy_production_today/
  tomorrow/dN sensors: `wh_period_15m` {quarter start: Wh}, `wh_period` {hour start: Wh} and `watts`
  {moment: W}, power at that moment.
- Forecast.Solar: the core integration has no such attributes; its hourly forecast reaches Home Assistant
  through the energy platform (below). Its API keys each `watt_hours_period` by the period's END, sunrise
  and sunset included: 06:20:17 -> 0 Wh, 07:00 -> the Wh of 06:20:17-07:00. A sensor that copies that
  shape into a `wh_period` attribute is read with `period_keys="end"`.

`parse_energy_solar_forecast` reads the answer to the WebSocket command `energy/solar_forecast`:
{config_entry_id: {"wh_hours": {iso: Wh}}} for the forecast entries the Energy dashboard's solar sources
name. Each integration passes its own keys: Forecast.Solar period ends (hourly, 15 minutes on paid
accounts), Open-Meteo hour starts, Solcast half-hour starts without the night; see PERIOD_KEYS_BY_DOMAIN.

A `PvForecast` holds kWh per quarter-hour for the known quarters of the local days its readable data
touches: providers leave the night out (Forecast.Solar runs from sunrise to sunset, Solcast's energy data
drops the zeros), so a quarter of a covered day that no entry reaches produces nothing. A quarter an entry
with an unreadable number spans is unknown and left out, not a sunless 0 kWh. Energy in a period is spread
evenly over it; power samples at most an hour apart are joined by straight lines, and a longer gap is
unknown (between two 0 W samples, a night: nothing). Entities are combined on purpose, never guessed:
`join_days` puts forecasts of different days one after the other (Solcast's today and tomorrow sensors),
`add_roofs` sums forecasts of different arrays over the quarters all of them cover, and `by_days` sorts
several arrays' sensors of several days into the groups to sum.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from .day_ahead import HOUR, QUARTER, Moment, Number, aware, quarter_grid

PeriodKeys = Literal["start", "end"]
Estimate = Literal["pv_estimate", "pv_estimate10", "pv_estimate90"]

# How each integration keys the periods of its `energy/solar_forecast` answer.
PERIOD_KEYS_BY_DOMAIN: Mapping[str, PeriodKeys] = {
    "forecast_solar": "end",
    "open_meteo_solar_forecast": "start",
    "solcast_solar": "start",
}

# In order of preference: averages over a period before power samples, the finest resolution first.
ATTRIBUTES = ("detailedForecast", "detailedHourly", "wh_period_15m", "wh_period", "watts")


@dataclass(frozen=True)
class PvForecast:
    """kWh per quarter-hour, keyed by the quarter's start (UTC), for the known quarters of the days covered.

    A quarter of those days that is missing is unknown (an unreadable entry spans it)."""

    kwh: Mapping[datetime, float]
    entries: int  # forecast entries seen, readable or not
    unreadable: int  # of those, skipped
    source: str  # the attribute read, or the config entry; "+"-joined when combined


class _SolcastStart(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    period_start: Moment


class _SolcastEntry(_SolcastStart):
    pv_estimate: Number | None = None
    pv_estimate10: Number | None = None
    pv_estimate90: Number | None = None


_MOMENT: TypeAdapter[datetime] = TypeAdapter(Moment)
_NUMBER: TypeAdapter[float] = TypeAdapter(Number)

Period = tuple[datetime, datetime, float | None]  # start, end (aware), kWh; None: the entry was unreadable
Point = tuple[datetime, float | None]  # a moment (UTC) and its number; None: unreadable

# Samples further apart are not joined: a straight line across a night or a month would invent PV.
MAX_SAMPLE_GAP = HOUR
# How far from its ends a longer gap is marked unknown: past the ends of the samples' days (25 hours at most),
# so those days' zero-fill leaves it unknown, and the work stays bounded however long the gap.
_GAP_MARKED = timedelta(days=2)


# ------------------------------------------------------------------------------------------- states


def parse_pv_forecast(
    data: Mapping[str, Any],
    *,
    tz: tzinfo | None = None,
    estimate: Estimate = "pv_estimate",
    period_keys: PeriodKeys = "start",
    attribute: str | None = None,
) -> PvForecast:
    """The forecast in an entity's state or attributes (see the module's description for the formats).

    `tz` is the local zone that sets the days (None: this process's, which the Supervisor sets to Home
    Assistant's); a naive time in the data is wall-clock time there. `estimate` picks Solcast's median or
    its 10 %/90 % estimates; `period_keys` says whether a `wh_period` attribute is keyed by each period's
    start (Open-Meteo) or its end (Forecast.Solar). `attribute` reads that attribute instead of the
    preferred one, e.g. a Solcast site's `detailedForecast_1234_5678_9012_3456`.
    """
    attributes = data.get("attributes")
    if isinstance(attributes, Mapping):
        data = attributes
    name = attribute or next((key for key in ATTRIBUTES if data.get(key) is not None), None)
    if name is None or data.get(name) is None:
        keys = ", ".join(sorted(map(str, data))) or "none"
        wanted = f"the attribute {attribute!r}" if attribute else "a PV forecast"
        raise ValueError(
            f"no {wanted} found; expected detailedForecast or detailedHourly (Solcast), wh_period_15m, "
            f"wh_period or watts (Open-Meteo Solar Forecast, Forecast.Solar style); keys: {keys}"
        )
    value = data[name]
    if name.startswith(("detailedForecast", "detailedHourly")):
        if not isinstance(value, list):
            raise ValueError(f"the attribute {name} should be a list, not {type(value).__name__}")
        length = timedelta(minutes=30) if name.startswith("detailedForecast") else HOUR
        periods, entries, bad = _solcast(value, length, estimate, tz)
    elif not isinstance(value, Mapping):
        raise ValueError(f"the attribute {name} should map times to numbers, not be a {type(value).__name__}")
    elif name == "watts":
        points, entries, bad = _points(value, tz)
        periods = _between_samples(points)
    else:
        points, entries, bad = _points(value, tz)
        periods = _energy_periods(points, "start" if name == "wh_period_15m" else period_keys)
    return _forecast(periods, entries, bad, name, tz)


def parse_energy_solar_forecast(
    response: Mapping[str, Any],
    *,
    period_keys: PeriodKeys | Mapping[str, PeriodKeys],
    tz: tzinfo | None = None,
) -> dict[str, PvForecast]:
    """One forecast per config entry of an `energy/solar_forecast` answer (the result, or the whole message).

    `period_keys` is one convention for all entries or one per config entry id (PERIOD_KEYS_BY_DOMAIN
    maps the integration's domain to it); an entry it does not name raises ValueError, as guessing would
    shift that forecast by an hour. Several entries are several arrays: `add_roofs` sums them.
    """
    result = response.get("result")
    if response.get("type") == "result" and isinstance(result, Mapping):
        response = result
    forecasts: dict[str, PvForecast] = {}
    for entry_id, forecast in response.items():
        hours = forecast.get("wh_hours") if isinstance(forecast, Mapping) else None
        if not isinstance(hours, Mapping):
            raise ValueError(
                f"config entry {entry_id}: expected {{'wh_hours': {{time: Wh}}}}, not {forecast!r}"
            )
        keys = period_keys if isinstance(period_keys, str) else period_keys.get(entry_id)
        if keys is None:
            raise ValueError(
                f"config entry {entry_id}: say whether its wh_hours are keyed by period start or end "
                "(Forecast.Solar: end; Open-Meteo Solar Forecast and Solcast: start)"
            )
        points, entries, bad = _points(hours, tz)
        forecasts[str(entry_id)] = _forecast(_energy_periods(points, keys), entries, bad, str(entry_id), tz)
    return forecasts


# ----------------------------------------------------------------------------------------- entries


def _solcast(
    rows: list[Any], length: timedelta, estimate: Estimate, tz: tzinfo | None
) -> tuple[list[Period], int, int]:
    periods: list[Period] = []
    bad = 0
    for row in rows:
        try:
            start = aware(_SolcastStart.model_validate(row).period_start, tz)
        except ValidationError:
            bad += 1
            continue
        try:
            kw = getattr(_SolcastEntry.model_validate(row), estimate)
        except ValidationError:
            kw = None
        if kw is None or kw < 0:
            bad += 1
            periods.append((start, start + length, None))  # its period is unknown, not 0 kWh
            continue
        periods.append((start, start + length, kw * length / HOUR))
    return periods, len(rows), bad


def _points(values: Mapping[Any, Any], tz: tzinfo | None) -> tuple[list[Point], int, int]:
    """{time: number} pairs whose time can be read, sorted; None for a number that cannot (negative numbers
    are no forecast), so its period is known to be unknown."""
    points: dict[datetime, float | None] = {}
    bad = 0
    for key, value in values.items():
        try:
            moment = aware(_MOMENT.validate_python(key), tz)
        except (ValidationError, ValueError):
            bad += 1
            continue
        number: float | None
        try:
            number = _NUMBER.validate_python(value)
        except ValidationError:
            number = None
        if number is None or number < 0:
            bad += 1
            number = None
        points[moment.astimezone(UTC)] = number
    return sorted(points.items()), len(values), bad


def _usual_step(moments: list[datetime]) -> timedelta:
    """The most common spacing of the keys up to an hour (nights and missing hours are longer)."""
    gaps = Counter(b - a for a, b in itertools.pairwise(moments) if b - a <= HOUR)
    return gaps.most_common(1)[0][0] if gaps else HOUR


def _energy_periods(points: list[Point], keys: PeriodKeys) -> list[Period]:
    """Wh per period keyed by start or end; a period lasts the usual step, cut short by its neighbour."""
    moments = [moment for moment, _ in points]
    step = _usual_step(moments)
    periods: list[Period] = []
    for i, (moment, wh) in enumerate(points):
        kwh = None if wh is None else wh / 1000
        if keys == "start":
            end = moment + step if i + 1 == len(points) else min(moments[i + 1], moment + step)
            periods.append((moment, end, kwh))
        else:
            start = moment - step if i == 0 else max(moments[i - 1], moment - step)
            periods.append((start, moment, kwh))
    return periods


def _between_samples(points: list[Point]) -> list[Period]:
    """W samples at most MAX_SAMPLE_GAP apart joined by straight lines: the energy between two samples is
    their mean times the gap. A longer gap is unknown, unless both its ends are 0 W: a night, which
    Forecast.Solar-style samples leave out."""
    periods: list[Period] = []
    for (a, wa), (b, wb) in itertools.pairwise(points):
        if b - a <= MAX_SAMPLE_GAP:
            periods.append(
                (a, b, None if wa is None or wb is None else (wa + wb) / 2 / 1000 * ((b - a) / HOUR))
            )
        elif wa != 0 or wb != 0:
            periods += [(a, min(b, a + _GAP_MARKED), None), (max(a, b - _GAP_MARKED), b, None)]
    return periods


# ---------------------------------------------------------------------------------------- quarters


def _floor(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return moment.replace(minute=moment.minute // 15 * 15, second=0, microsecond=0)


def _day_quarters(day: date, tz: tzinfo | None) -> Iterable[datetime]:
    first = aware(datetime.combine(day, time()), tz).astimezone(UTC)
    last = aware(datetime.combine(day + timedelta(days=1), time()), tz).astimezone(UTC)
    moment = first
    while moment < last:
        yield moment
        moment += QUARTER


def _forecast(periods: list[Period], entries: int, bad: int, source: str, tz: tzinfo | None) -> PvForecast:
    kwh: dict[datetime, float] = {}
    unknown: set[datetime] = set()
    for start, end, energy in periods:
        if end <= start:
            continue
        span = (end - start).total_seconds()
        quarter = _floor(start)
        while quarter < end:
            overlap = (min(end, quarter + QUARTER) - max(start, quarter)).total_seconds()
            if overlap > 0 and energy is None:
                unknown.add(quarter)  # even in part: the quarter's energy would be short
            elif overlap > 0 and energy is not None:
                kwh[quarter] = kwh.get(quarter, 0.0) + energy * overlap / span
            quarter += QUARTER
    # Providers leave out the night (and Solcast its zeros): a quarter of a day with readable entries that
    # no entry reaches produces nothing. One an unreadable entry spans is unknown instead.
    for day in {quarter.astimezone(tz).date() for quarter in kwh}:
        for quarter in _day_quarters(day, tz):
            kwh.setdefault(quarter, 0.0)
    for quarter in unknown:
        kwh.pop(quarter, None)
    return PvForecast(dict(sorted(kwh.items())), entries, bad, source)


def join_days(*forecasts: PvForecast) -> PvForecast:
    """Forecasts of different days, one after the other; ValueError when two cover the same quarter."""
    kwh: dict[datetime, float] = {}
    owner: dict[datetime, str] = {}
    for forecast in forecasts:
        for quarter, energy in forecast.kwh.items():
            if quarter in owner:
                raise ValueError(
                    f"{owner[quarter]} and {forecast.source} both cover {quarter.isoformat()}: "
                    "join_days takes each day once; add_roofs adds arrays"
                )
            owner[quarter] = forecast.source
            kwh[quarter] = energy
    return _combined(kwh, forecasts)


def add_roofs(*forecasts: PvForecast) -> PvForecast:
    """Forecasts of different arrays summed, over the quarters every one of them covers."""
    if not forecasts:
        return PvForecast({}, 0, 0, "")
    common = set(forecasts[0].kwh).intersection(*(forecast.kwh for forecast in forecasts[1:]))
    kwh = {quarter: sum(forecast.kwh[quarter] for forecast in forecasts) for quarter in common}
    return _combined(kwh, forecasts)


def by_days(*forecasts: PvForecast) -> list[list[PvForecast]]:
    """Forecasts grouped by the days they cover: those sharing a quarter are arrays over the same days, and
    two groups share none. Two arrays with a sensor for today and one for tomorrow each make two groups of
    two: `add_roofs` sums each, and `join_days` puts the sums one after the other."""
    groups: list[list[PvForecast]] = []
    for forecast in forecasts:
        touching = [
            group for group in groups if any(not forecast.kwh.keys().isdisjoint(f.kwh) for f in group)
        ]
        groups = [group for group in groups if all(group is not other for other in touching)]
        groups.append([*(f for group in touching for f in group), forecast])
    return groups


def _combined(kwh: dict[datetime, float], forecasts: tuple[PvForecast, ...]) -> PvForecast:
    return PvForecast(
        dict(sorted(kwh.items())),
        sum(forecast.entries for forecast in forecasts),
        sum(forecast.unreadable for forecast in forecasts),
        "+".join(forecast.source for forecast in forecasts),
    )


def quarter_kw(
    forecast: PvForecast, start: datetime, steps: int, *, tz: tzinfo | None = None
) -> tuple[list[float | None], int]:
    """The average kW per quarter-hour from the one running at `start`, and how many leading are known.

    `start` is aware, or naive wall-clock time in `tz`; None where the forecast does not reach.
    """
    values: list[float | None] = []
    for quarter in quarter_grid(start, steps, tz=tz):
        energy = forecast.kwh.get(quarter)
        values.append(None if energy is None else energy / (QUARTER / HOUR))
    known = next((i for i, value in enumerate(values) if value is None), len(values))
    return values, known
