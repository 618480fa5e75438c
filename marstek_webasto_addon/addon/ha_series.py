"""Series from Home Assistant entities for the planner: day-ahead prices and detailed PV forecasts.

Both follow their entities' attributes (the WebSocket subscription of `HomeAssistantInputs`) and give the
planner a value per clock quarter-hour of local wall-clock time. What cannot be used becomes a `problem`
the log and the panel show; the planner then falls back (to the tariff's periods, to the PV of the last
days), never to a guess.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta, tzinfo

from ..optimiser.planner import QUARTER
from ..optimiser.tariff import quarter_start
from .day_ahead import HOUR, PriceFormula, PriceInterval, implausible_prices, parse_day_ahead, quarter_series
from .homeassistant import EntityState
from .inputs import PvForecast, coming_day, implausible_power
from .pv_detail import (
    PERIOD_KEYS_BY_DOMAIN,
    add_roofs,
    by_days,
    join_days,
    parse_energy_solar_forecast,
    parse_pv_forecast,
    quarter_kw,
)
from .pv_detail import PvForecast as QuarterEnergy

_LOG = logging.getLogger(__name__)
DAY = timedelta(days=1)


class DayAheadPrices:
    """A day-ahead price entity (Nord Pool, ENTSO-E, EPEX Spot, ...) turned into import and export prices.

    Tomorrow's prices are published around 13:00; until then the planner assumes tomorrow repeats today,
    as the replay does, and re-plans when they arrive (`version` changes with every usable update).
    """

    def __init__(self, entity_id: str, formula: PriceFormula) -> None:
        self.entity_id = entity_id
        self.entity_ids: tuple[str, ...] = (entity_id,)
        self.formula = formula
        self.intervals: list[PriceInterval] = []
        self.version = 0
        self.problem = "not received yet"
        self.source = ""

    def on_state(self, entity_id: str, state: EntityState | None) -> None:
        if state is None:
            self._problem(f"{self.entity_id} does not exist in Home Assistant; prices received before stay")
            return
        try:
            found = parse_day_ahead({"state": state.state, "attributes": dict(state.attributes)})
        except ValueError as exc:
            self._problem(f"{self.entity_id}: {exc}; prices received before stay")
            return
        if not found.intervals:
            self._problem(f"{self.entity_id} holds no prices; prices received before stay")
            return
        implausible = implausible_prices(found.intervals)
        if implausible:
            self._problem(f"{self.entity_id}: {implausible}; prices received before stay")
            return
        if found.unreadable:
            _LOG.warning(
                "prices: %s: %d of %d entries unreadable, skipped", entity_id, found.unreadable, found.entries
            )
        if list(found.intervals) != self.intervals:
            self.intervals, self.version = list(found.intervals), self.version + 1
        self.source = found.source
        hole = _first_hole(self.intervals)
        if hole is not None:
            # (the plan bridges it with the price before: ending there would hide every later price)
            self._problem(
                f"{self.entity_id} has no price from {hole[0]:%Y-%m-%d %H:%M} to {hole[1]:%H:%M}; "
                "the price before stands in"
            )
            return
        if self.problem:
            _LOG.info("prices: %s (%s) in use", self.entity_id, found.source)
        self.problem = ""

    def lost(self, why: str) -> None:
        """The connection is gone: the prices already received stay valid for the hours they cover."""

    def _problem(self, problem: str) -> None:
        if problem != self.problem:
            _LOG.warning("prices: %s", problem)
        self.problem = problem

    def series(self, start: datetime, steps: int) -> tuple[list[float], list[float]] | None:
        """Import and export prices per quarter from `start`'s (naive local time); None without a price for
        the running quarter. A quarter without a price takes the one a day earlier (tomorrow before its
        prices are out); a hole between known prices (an entry the entity could not give) the quarter
        before's; the series ends where nothing later is known."""
        if not self.intervals:
            return None
        first = quarter_start(start)
        known_until = max(interval.end for interval in self.intervals)
        stale = f"{self.entity_id} has no price for {first:%Y-%m-%d %H:%M}; the day before's stand in"
        if _spot(self.intervals, first) is None and first.astimezone() >= known_until:
            self._problem(stale)  # the entity stopped updating: say so, plan on the last day known
        elif self.problem == stale:
            self.problem = ""
        spot: list[float] = []
        for moment in _wall_clock_quarters(first, steps):
            price = _spot(self.intervals, moment)
            if price is None and moment.astimezone() < known_until:
                # A hole: ending here would hide every later price from the plan (the evening's, behind one
                # unreadable hour in the afternoon): the last price before the hole stands in.
                price = spot[-1] if spot else _last_before(self.intervals, moment)
            if price is None:
                price = _spot(self.intervals, moment - DAY)
            if price is None:
                break
            spot.append(price)
        if not spot:
            self._problem(f"{self.entity_id} has no prices for today; the tariff's periods stand in")
            return None
        return [self.formula.import_price(p) for p in spot], [self.formula.export_price(p) for p in spot]


def _wall_clock_quarters(start: datetime, steps: int) -> Iterator[datetime]:
    """The plan's steps: `steps` wall-clock quarters from `start`'s (naive local time). Naive arithmetic
    resets `fold`, which would take a step in the autumn's repeated hour back to its first pass, an hour
    before `start`: such a step is in the second pass."""
    first = quarter_start(start)
    since = first.timestamp()
    for i in range(steps):
        moment = first + i * QUARTER
        yield moment if moment.timestamp() >= since else moment.replace(fold=1)


def _first_hole(intervals: Sequence[PriceInterval]) -> tuple[datetime, datetime] | None:
    """The first gap between known prices (local times), or None."""
    for before, after in itertools.pairwise(intervals):
        if after.start > before.end:
            return before.end.astimezone(), after.start.astimezone()
    return None


def _last_before(intervals: Sequence[PriceInterval], moment: datetime) -> float | None:
    """The price of the last interval that ended by `moment` (naive local time), or None."""
    at = moment.astimezone()
    ended = [interval for interval in intervals if interval.end <= at]
    return max(ended, key=lambda interval: interval.end).price if ended else None


def _spot(intervals: Sequence[PriceInterval], moment: datetime) -> float | None:
    values, _ = quarter_series(intervals, moment, 1)
    return values[0]


def _unusable(name: str, forecast: QuarterEnergy) -> str:
    """Why a forecast cannot be used at all: "" when it can. A wrong unit (W read as kW) makes every quarter
    wrong, not only those beyond a home's power, so the whole forecast is refused."""
    if not forecast.kwh:
        return f"{name} holds no forecast"
    peak_w = max(forecast.kwh.values()) / (QUARTER / HOUR) * 1000
    implausible = implausible_power(peak_w)
    return f"{name}: its peak of {implausible}" if implausible else ""


def _unreadable(name: str, forecast: QuarterEnergy) -> str:
    if not forecast.unreadable:
        return ""
    return (
        f"{name}: {forecast.unreadable} of {forecast.entries} entries unreadable, skipped (their periods are "
        "unknown)"
    )


class DetailedPvForecast(PvForecast):
    """PV per quarter-hour from entities with a detailed forecast (Solcast's `detailedForecast`, Open-Meteo's
    `wh_period` / `watts`): entities of the same days (several roofs) are summed, and these sums of different
    days joined; days fewer entities cover than others (a roof's sensor missing) are left out and named.
    `kwh()` is tomorrow's total, for the rules and the forecast sensor."""

    def __init__(self, entity_ids: Sequence[str]) -> None:
        super().__init__(f"Home Assistant {', '.join(entity_ids)} (detailed)")
        self.entity_ids = tuple(entity_ids)
        self.forecasts: dict[str, QuarterEnergy] = {}
        self.combined: QuarterEnergy | None = None
        self.version = 0
        self.problem = "not received yet"
        self._problems: dict[str, str] = {}

    def on_state(self, entity_id: str, state: EntityState | None) -> None:
        forecast: QuarterEnergy | None = None
        if state is None:
            problem = f"{entity_id} does not exist in Home Assistant"
        else:
            try:
                forecast = parse_pv_forecast({"state": state.state, "attributes": dict(state.attributes)})
            except ValueError as exc:
                problem = f"{entity_id}: {exc}"
            else:
                problem = _unusable(entity_id, forecast)
        if forecast is not None and not problem:
            self.forecasts[entity_id] = forecast
            problem = _unreadable(entity_id, forecast)  # said, though the readable rest is used
        else:
            self.forecasts.pop(entity_id, None)
        if problem and problem != self._problems.get(entity_id):
            _LOG.warning("PV forecast: %s", problem)
        self._problems[entity_id] = problem
        self._combine()

    def lost(self, why: str) -> None:
        """A forecast already received stays good for the quarters it covers."""

    def _combine(self) -> None:
        names = {id(self.forecasts[e]): e for e in self.entity_ids if e in self.forecasts}
        problems = [p for p in self._problems.values() if p]
        groups = by_days(*(self.forecasts[e] for e in self.entity_ids if e in self.forecasts))
        arrays = max(map(len, groups), default=0)
        sums: list[QuarterEnergy] = []
        for group in groups:
            if len(group) == arrays:
                sums.append(add_roofs(*group))
            else:  # a day without every array's forecast would have too little PV
                days = ", ".join(names[id(forecast)] for forecast in group)
                problems.append(
                    f"the days of {days} are left out: {len(group)} of the {arrays} arrays forecast them"
                )
        combined = join_days(*sums) if sums else None  # the groups share no quarter
        if combined is not None and not combined.kwh:
            problems.append(f"{', '.join(names.values())} have no quarter in common to add up")
            combined = None
        self.combined = combined
        self.version += 1
        self.problem = "; ".join(problems) if problems or combined else "not received yet"

    def quarters(self, start: datetime, steps: int) -> list[float] | None:
        """kW per quarter from `start`'s (naive local time) while the forecast covers them; None when it
        does not cover the running quarter."""
        if self.combined is None:
            return None
        values: list[float] = []
        for moment in _wall_clock_quarters(start, steps):
            kw, known = quarter_kw(self.combined, moment, 1)
            if not known or kw[0] is None:
                break
            values.append(kw[0])
        return values or None

    def kwh(self) -> float | None:
        return self._day_kwh(date.today() + DAY)

    def for_night(self, now: datetime) -> tuple[float | None, date | None]:
        # The quarters hold today's as well: after midnight the coming daylight is today's.
        day = coming_day(now)
        return self._day_kwh(day), day

    def _day_kwh(self, day: date) -> float | None:
        values = self.quarters(datetime.combine(day, datetime.min.time()), 96)
        return None if values is None or len(values) < 96 else round(sum(values) / 4, 2)

    def detail(self) -> dict[str, object]:
        covered = sorted(self.combined.kwh) if self.combined else []
        return {
            **super().detail(),
            "entities": list(self.entity_ids),
            "from": covered[0].isoformat() if covered else None,
            "until": (covered[-1] + QUARTER).isoformat() if covered else None,
        }


ENERGY_SETUP = "Settings > Dashboards > Energy > Solar panels > Forecast production"


class EnergyPvForecast(DetailedPvForecast):
    """The Energy dashboard's solar forecast (`energy/solar_forecast`, fetched every half hour): that of
    Forecast.Solar, Open-Meteo Solar Forecast or Solcast, whichever the dashboard's solar panels name, with
    several forecasts (arrays) summed. Forecast.Solar has no entity with its hourly forecast; this is where
    Home Assistant hands it out. Each integration keys its periods its own way (`PERIOD_KEYS_BY_DOMAIN`): a
    forecast of an integration not in that table is left out and named, not guessed (an hour's shift would
    move the whole day's PV). A failed fetch keeps the last forecast for the quarters it covers."""

    def __init__(self) -> None:
        super().__init__(())
        self.description = "Home Assistant Energy dashboard (solar forecast)"
        self.entries: dict[str, str] = {}  # config entry id -> domain, of the forecasts in use

    def update(
        self, response: Mapping[str, object], domains: Mapping[str, str], tz: tzinfo | None = None
    ) -> None:
        """Take a fresh `energy/solar_forecast` answer; `domains` maps config entry ids to integrations."""
        problems: list[str] = []
        forecasts: dict[str, QuarterEnergy] = {}
        for entry_id, data in response.items():
            domain = domains.get(entry_id, "")
            keys = PERIOD_KEYS_BY_DOMAIN.get(domain)
            if keys is None:
                known = ", ".join(sorted(PERIOD_KEYS_BY_DOMAIN))
                problems.append(
                    f"the forecast of {domain or 'an unknown integration'} (config entry {entry_id}) is left "
                    f"out: this add-on reads those of {known}"
                )
                continue
            try:
                forecast = parse_energy_solar_forecast({entry_id: data}, period_keys=keys, tz=tz)[entry_id]
            except ValueError as exc:
                problems.append(f"{domain}: {exc}")
                continue
            name = f"{domain} (config entry {entry_id})"
            problem = _unusable(name, forecast)
            if not problem:
                forecasts[entry_id] = forecast
                problem = _unreadable(name, forecast)
            if problem:
                problems.append(problem)
        if not response:
            problems.append(f"the Energy dashboard names no solar forecast ({ENERGY_SETUP})")
        self.entries = {entry_id: domains[entry_id] for entry_id in forecasts}
        combined = add_roofs(*forecasts.values()) if forecasts else None
        if combined is not None and not combined.kwh:
            problems.append(f"the forecasts of {', '.join(forecasts)} cover no quarter together")
            combined = None
        if combined is not None and (self.combined is None or combined.kwh != self.combined.kwh):
            self.version += 1
        self.combined = combined if combined is not None else self.combined
        self._report("; ".join(problems))

    def failed(self, why: str) -> None:
        """The fetch failed: the forecast received before stays good for the quarters it covers."""
        self._report(why)

    def lost(self, why: str) -> None:
        """Not refreshed while Home Assistant is away; what was received stays good for its quarters."""
        self._report(f"not refreshed: {why}")

    def _report(self, problem: str) -> None:
        if problem and problem != self.problem:
            _LOG.warning("PV forecast: %s", problem)
        elif not problem and self.problem:
            integrations = ", ".join(sorted(set(self.entries.values())))
            _LOG.info("PV forecast: the Energy dashboard's forecast (%s) in use", integrations)
        self.problem = problem

    def detail(self) -> dict[str, object]:
        return {**super().detail(), "entities": [], "integrations": sorted(set(self.entries.values()))}
