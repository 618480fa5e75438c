"""Inputs from Home Assistant entities: power sensors (grid, PV) and tomorrow's PV forecast.

One WebSocket connection (HomeAssistantClient) carries both. Every way a value can be unusable (no token,
Home Assistant down, the entity unavailable or gone, a unit of the wrong kind, an old forecast) becomes a
`problem` text the panel and the log show; the optimiser then sees no value and holds or plans without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time as clock
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any, Protocol

from ..tasks import cancel_all
from .forecast_inputs import numeric_state, sunny_hours
from .ha_series import EnergyPvForecast
from .homeassistant import (
    SUPERVISOR_WEBSOCKET_URL,
    EntityState,
    HomeAssistantAuthError,
    HomeAssistantClient,
    HomeAssistantError,
)
from .inputs import GridInput, PvForecast, coming_day, implausible_power

_LOG = logging.getLogger(__name__)
FORECAST_REFRESH_S = 1800.0
# Older than this, the weather has moved on: better no forecast than a wrong one.
FORECAST_MAX_AGE_S = 3 * 3600.0
# A power state found in place at a (re)connection older than this is said in the log (the panel calls a
# reading older than a minute no reading).
OLD_STATE_NOTE_S = 60.0


class EntityPowerInput(GridInput):
    """A Home Assistant power sensor (grid: + = import): its state in W, converted from the entity's unit."""

    def __init__(
        self, entity_id: str, *, unit: str = "W", invert: bool = False, option: str = "grid_source"
    ) -> None:
        super().__init__(f"Home Assistant {entity_id}")
        self.entity_id = entity_id
        self.option = option  # where the user set it, for the error message
        self.default_unit = unit  # for template sensors without a unit_of_measurement
        self.sign = -1.0 if invert else 1.0
        self.reading.problem = f"{self.reading.source}: not received yet"

    def on_state(self, state: EntityState | None) -> None:
        if state is None:
            self._unusable(f"{self.entity_id} does not exist in Home Assistant (renamed or removed?)")
            return
        try:
            value = numeric_state(state.state, state.unit or self.default_unit, want_unit="W")
        except ValueError as exc:
            self._unusable(f"{self.entity_id}: {exc} ({self.option}.entity_id must be a power sensor)")
            return
        if value is None:
            self._unusable(f"{self.entity_id} is {state.state!r}")
            return
        implausible = implausible_power(value)
        if implausible:
            self._unusable(f"{self.entity_id}: {implausible}")
            return
        if state.age_at_receipt > OLD_STATE_NOTE_S and state.seen_at != self.reading.at:
            # Kept, with its true age: the optimiser holds on a stale meter, and the panel says for how long.
            # (info: a PV sensor at 0 W all night is as old as the evening, and that is no fault)
            _LOG.info(
                "%s: Home Assistant's %s was last updated %.0f s ago; it counts as that old",
                self.option,
                self.entity_id,
                state.age_at_receipt,
            )
        # As old as Home Assistant says: a meter that stopped an hour before a (re)connection is not fresh.
        self.reading.value, self.reading.at, self.reading.problem = value * self.sign, state.seen_at, ""

    def _unusable(self, problem: str) -> None:
        self.reading.value = None  # an unavailable meter must not leave its last number in force
        self._report(problem)

    def _report(self, problem: str) -> None:
        if problem != self.reading.problem:
            _LOG.warning("%s: %s", self.option, problem)
        self.reading.problem = problem

    def lost(self, why: str) -> None:
        """The connection is gone: the last number is no reading any more. Left to age out, it would steer
        the batteries for up to input_stale_after (as long as an hour) while Home Assistant restarts."""
        self._unusable(f"{self.reading.source}: {why}")


class EntityPvForecast(PvForecast):
    """An energy sensor with tomorrow's PV (Forecast.Solar, Solcast, ...), in kWh."""

    def __init__(self, entity_id: str) -> None:
        super().__init__(f"Home Assistant {entity_id}")
        self.entity_id = entity_id
        self.value: float | None = None
        self.problem = "not received yet"

    def kwh(self) -> float | None:
        return self.value

    def on_state(self, state: EntityState | None) -> None:
        self.value, problem = None, ""
        if state is None:
            problem = f"{self.entity_id} does not exist in Home Assistant"
        else:
            try:
                self.value = numeric_state(state.state, state.unit, want_unit="kWh")
            except ValueError as exc:
                problem = f"{self.entity_id}: {exc} (pv_forecast.entity_id must be an energy sensor)"
            else:
                if self.value is None:
                    problem = f"{self.entity_id} is {state.state!r}"
                elif self.value < 0:
                    self.value, problem = None, f"{self.entity_id} forecasts {state.state} kWh"
        if problem and problem != self.problem:
            _LOG.warning("PV forecast: %s", problem)
        self.problem = problem


class WeatherPvForecast(PvForecast):
    """Sunny hours (07:00-20:00) of the coming day in a weather entity's hourly forecast, times a yield per
    sunny hour (the optimiser parameter pv_per_sunny_hour, in Wh): the seed's own estimate."""

    def __init__(self, entity_id: str, per_sunny_hour_wh: Callable[[], float] = lambda: 600.0) -> None:
        super().__init__(f"Home Assistant {entity_id} (sunny hours)")
        self.entity_id = entity_id
        self.per_sunny_hour_wh = per_sunny_hour_wh
        self.hours: int | None = None
        self.day: date | None = None
        self.fetched_at: float | None = None  # time.monotonic()
        self.problem = "not fetched yet"

    def update(self, forecast: Sequence[dict[str, Any]], now: datetime) -> None:
        self.day = coming_day(now)
        self.hours = sunny_hours(forecast, self.day)
        self.fetched_at = clock.monotonic()
        covered = any(str(entry.get("datetime", "")).startswith(self.day.isoformat()) for entry in forecast)
        self.problem = "" if covered else f"the forecast does not reach {self.day.isoformat()}"

    def failed(self, why: str) -> None:
        if why != self.problem:
            _LOG.warning("PV forecast from %s: %s", self.entity_id, why)
        self.problem = why

    def for_night(self, now: datetime) -> tuple[float | None, date | None]:
        return self.kwh(), self.day  # the sunny hours of the coming daylight as it was when fetched

    def kwh(self, now: float | None = None) -> float | None:
        if self.hours is None or self.fetched_at is None:
            return None
        if (now if now is not None else clock.monotonic()) - self.fetched_at > FORECAST_MAX_AGE_S:
            return None
        return self.hours * self.per_sunny_hour_wh() / 1000

    def detail(self) -> dict[str, object]:
        return {
            **super().detail(),
            "sunny_hours": self.hours,
            "day": self.day.isoformat() if self.day else None,
            "per_sunny_hour_wh": self.per_sunny_hour_wh(),
        }


class SeriesInput(Protocol):
    """An input read from entities' attributes (day-ahead prices, detailed PV forecasts)."""

    entity_ids: tuple[str, ...]
    problem: str

    def on_state(self, entity_id: str, state: EntityState | None) -> None: ...

    def lost(self, why: str) -> None: ...


class HomeAssistantInputs:
    """Runs the connection for the entity-based inputs and keeps the weather forecast fresh."""

    def __init__(
        self,
        powers: Sequence[EntityPowerInput],
        pv: EntityPvForecast | WeatherPvForecast | None,
        *,
        url: str = SUPERVISOR_WEBSOCKET_URL,
        token: str | None = None,
        refresh: float = FORECAST_REFRESH_S,
        now: Callable[[], datetime] = datetime.now,
        series: Sequence[SeriesInput] = (),
    ) -> None:
        self.powers, self.pv, self.series = list(powers), pv, list(series)
        self.url, self.token, self.refresh, self.now = url, token, refresh, now
        self.client: HomeAssistantClient | None = None
        self.problem = ""
        self.reconnected = asyncio.Event()  # set when the connection is back after an outage

    def _entities(self) -> list[str]:
        ids = [power.entity_id for power in self.powers]
        if isinstance(self.pv, EntityPvForecast):
            ids.append(self.pv.entity_id)
        ids += [entity_id for source in self.series for entity_id in source.entity_ids]
        return list(dict.fromkeys(ids))

    def _on_change(self, entity_id: str, state: EntityState | None) -> None:
        for power in self.powers:
            if entity_id == power.entity_id:
                power.on_state(state)
        if isinstance(self.pv, EntityPvForecast) and entity_id == self.pv.entity_id:
            self.pv.on_state(state)
        for source in self.series:
            if entity_id in source.entity_ids:
                try:
                    source.on_state(entity_id, state)
                except Exception as exc:  # a state no one foresaw: said on the panel, the other inputs go on
                    _LOG.exception("%s could not be read", entity_id)
                    source.problem = f"{entity_id} could not be read: {exc!r}"

    def _fail_all(self, why: str) -> None:
        self.problem = why
        for power in self.powers:
            power.lost(why)
        if isinstance(self.pv, WeatherPvForecast):
            self.pv.failed(why)
        elif self.pv is not None:
            self.pv.problem = why
        for source in self.series:
            source.lost(why)
            source.problem = why

    async def run(self) -> None:
        try:
            self.client = HomeAssistantClient(
                self._entities(), self._on_change, url=self.url, token=self.token
            )
        except HomeAssistantAuthError as exc:
            _LOG.error("Home Assistant inputs unavailable: %s", exc)
            self._fail_all(f"no connection to Home Assistant: {exc}")
            await asyncio.Event().wait()  # nothing to do, but stay a task like the others
            return
        tasks = [asyncio.create_task(self.client.run(), name="homeassistant")]
        tasks.append(asyncio.create_task(self._watch(), name="homeassistant-watch"))
        if isinstance(self.pv, WeatherPvForecast):
            tasks.append(asyncio.create_task(self._weather(self.pv), name="weather-forecast"))
        for source in self.series:
            if isinstance(source, EnergyPvForecast):
                tasks.append(asyncio.create_task(self._energy(source), name="energy-solar-forecast"))
        try:
            await asyncio.gather(*tasks)
        finally:
            await cancel_all(tasks)

    async def _watch(self) -> None:
        """Turn a lost connection into a problem the user sees, not just an input that quietly ages."""
        assert self.client is not None
        was_connected = False
        while True:
            await asyncio.sleep(1.0)
            if not self.client.connected:
                why = f"Home Assistant not connected ({self.client.last_error or 'connecting'})"
                for power in self.powers:
                    power.lost(why)
                for source in self.series:
                    source.lost(why)
                self.problem = why
                was_connected = False
            else:
                if not was_connected:
                    self._absent()
                was_connected = True
                if self.problem:
                    self.reconnected.set()
                self.problem = ""

    def _absent(self) -> None:
        """Every entity's state as the new connection has it. Home Assistant sends nothing for an entity it
        does not have: without this, a mistyped entity_id would say "not received yet" for ever, and one
        after an outage "not connected" though it is. An entity it has is given again too: its first state
        may have come just before this loop saw the link lost and cleared it (an input left empty until
        the entity changes, hours for a PV sensor at night)."""
        assert self.client is not None
        for entity_id in self._entities():
            self._on_change(entity_id, self.client.state(entity_id))

    async def _weather(self, pv: WeatherPvForecast) -> None:
        assert self.client is not None
        while True:
            try:
                await self.client.wait_connected()
                forecast = await self.client.forecast(pv.entity_id)
                try:
                    pv.update(forecast, self.now())
                except Exception as exc:  # an answer no one foresaw must not end the grid meter's connection
                    _LOG.exception("the weather forecast of %s could not be read", pv.entity_id)
                    pv.failed(f"the weather forecast of {pv.entity_id} could not be read: {exc!r}")
                else:
                    _LOG.info(
                        "PV forecast: %s sunny hours on %s -> %.1f kWh", pv.hours, pv.day, pv.kwh() or 0.0
                    )
                await asyncio.sleep(self.refresh)
            except HomeAssistantError as exc:
                pv.failed(f"weather.get_forecasts for {pv.entity_id} failed: {exc}")
                await asyncio.sleep(min(self.refresh, 60.0))

    async def _energy(self, pv: EnergyPvForecast) -> None:
        assert self.client is not None
        while True:
            try:
                await self.client.wait_connected()
                response = await self.client.solar_forecast()
                domains = await self.client.config_entry_domains() if response else {}
                try:
                    pv.update(response, domains)
                except Exception as exc:  # an answer no one foresaw must not end the grid meter's connection
                    _LOG.exception("the Energy dashboard's solar forecast could not be read")
                    pv.failed(f"the Energy dashboard's solar forecast could not be read: {exc!r}")
                # until the next refresh, or at once after a reconnection (Home Assistant restarted)
                self.reconnected.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.refresh):
                        await self.reconnected.wait()
            except HomeAssistantError as exc:
                pv.failed(f"the Energy dashboard's solar forecast could not be fetched: {exc}")
                await asyncio.sleep(min(self.refresh, 60.0))
