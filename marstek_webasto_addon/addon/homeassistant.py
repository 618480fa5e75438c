"""Home Assistant's WebSocket API as an add-on reaches it through the Supervisor: live states, service calls.

With `homeassistant_api: true` in config.yaml the add-on talks to Core at ws://supervisor/core/websocket with
its SUPERVISOR_TOKEN. The Supervisor drops that proxied connection whenever Core restarts, so `run()`
reconnects with backoff, authenticates and subscribes again. Between outages the latest state of each entity
stays readable, with the moment it arrived and how old Home Assistant said it was then, so a reader can judge
how old it is: a meter that stopped an hour before a (re)connection is an hour old, not fresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Annotated, Any, Literal, NoReturn

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from . import supervisor
from .forecast_inputs import numeric_state

_LOG = logging.getLogger(__name__)

SUPERVISOR_WEBSOCKET_URL = "ws://supervisor/core/websocket"
# get_states of a large installation runs to megabytes; aiohttp's default limit is 4 MiB.
_MAX_MESSAGE = 64 * 1024 * 1024
# A clock difference with Home Assistant beyond this is said in the log: the ages of states are corrected
# for it, but a user whose host clocks disagree this much has other things going wrong too.
CLOCK_SKEW_NOTE_S = 5.0


class HomeAssistantError(Exception):
    """Base class for everything that goes wrong talking to Home Assistant."""


class HomeAssistantAuthError(HomeAssistantError):
    """There is no token, or Home Assistant refused it (auth_invalid)."""


class HomeAssistantConnectionError(HomeAssistantError):
    """Not connected: connecting failed, the connection dropped, or the other end broke the protocol."""


class HomeAssistantTimeoutError(HomeAssistantError):
    """Home Assistant did not answer a request in time."""


class HomeAssistantCommandError(HomeAssistantError):
    """Home Assistant answered a request with success: false."""

    def __init__(self, what: str, code: str, message: str) -> None:
        super().__init__(f"{what} failed: {message or 'no message'} ({code})")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class EntityState:
    """One version of an entity's state; a change makes a new object, so a reference never shifts."""

    entity_id: str
    state: str
    attributes: Mapping[str, Any]
    last_updated: datetime | None  # Home Assistant's last_updated, UTC
    received_at: float  # time.monotonic() when the add-on received this version
    # How old Home Assistant's last word on this value (last_reported, else last_updated) already was when
    # it arrived: 0 for a change that arrived as it happened, the time since for the states a (re)connection
    # finds in place.
    age_at_receipt: float = 0.0

    @property
    def seen_at(self) -> float:
        """time.monotonic() when Home Assistant last had this value from its source, as far as we know."""
        return self.received_at - self.age_at_receipt

    @property
    def unit(self) -> str | None:
        unit = self.attributes.get("unit_of_measurement")
        return unit if isinstance(unit, str) else None

    def number(self, want_unit: str) -> float | None:
        """The state in `want_unit` (W, kW, Wh, kWh), None when unknown/unavailable (see numeric_state)."""
        return numeric_state(self.state, self.unit, want_unit=want_unit)


OnChange = Callable[[str, EntityState | None], None]  # None: the entity is gone


# Messages, validated at the edge ----------------------------------------------------------------------------


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _AuthRequired(_Message):
    type: Literal["auth_required"]


class _AuthOk(_Message):
    type: Literal["auth_ok"]
    ha_version: str | None = None


class _AuthInvalid(_Message):
    type: Literal["auth_invalid"]
    message: str = ""


class _ErrorInfo(_Message):
    code: str = "unknown_error"
    message: str = ""


class _Result(_Message):
    type: Literal["result"]
    id: int
    success: bool
    result: Any = None
    error: _ErrorInfo | None = None


class _Pong(_Message):
    type: Literal["pong"]
    id: int


class _Event(_Message):
    type: Literal["event"]
    id: int
    event: dict[str, Any]


_INCOMING: TypeAdapter[_AuthRequired | _AuthOk | _AuthInvalid | _Result | _Pong | _Event] = TypeAdapter(
    Annotated[_AuthRequired | _AuthOk | _AuthInvalid | _Result | _Pong | _Event, Field(discriminator="type")]
)
_KNOWN_TYPES = frozenset({"auth_required", "auth_ok", "auth_invalid", "result", "pong", "event"})


class _Compressed(_Message):
    """An entity in subscribe_entities' `a`: lu is only sent when it differs from lc. No Core up to 2025.4
    sends lr (last_reported); it is taken should one start to."""

    s: str
    a: dict[str, Any] = {}
    lc: float | None = None
    lu: float | None = None
    lr: float | None = None


class _Additions(_Message):
    """`+` of a change: what changed; lc when last_changed moved (last_updated moved with it), else lu."""

    s: str | None = None
    a: dict[str, Any] = {}
    lc: float | None = None
    lu: float | None = None
    lr: float | None = None


class _Removals(_Message):
    a: list[str] = []


class _Diff(_Message):
    added: _Additions = Field(default_factory=_Additions, alias="+")
    removed: _Removals = Field(default_factory=_Removals, alias="-")


class _EntitiesEvent(_Message):
    a: dict[str, _Compressed] = {}
    c: dict[str, _Diff] = {}
    r: list[str] = []


class _FullState(_Message):
    """A state as get_states and state_changed events carry it."""

    entity_id: str
    state: str
    attributes: dict[str, Any] = {}
    last_updated: datetime | None = None
    last_reported: datetime | None = None  # Home Assistant 2024.3 and later


class _StateChangedData(_Message):
    entity_id: str
    new_state: _FullState | None = None


class _StateChangedEvent(_Message):
    event_type: Literal["state_changed"]
    data: _StateChangedData


_STATES = TypeAdapter(list[_FullState])


class _Forecast(_Message):
    forecast: list[dict[str, Any]]


_FORECASTS = TypeAdapter(dict[str, _Forecast])


class _ConfigEntry(_Message):
    entry_id: str
    domain: str


_CONFIG_ENTRIES = TypeAdapter(list[_ConfigEntry])


def _timestamp(value: float | None) -> datetime | None:
    """Epoch seconds as a UTC time; None for one no clock can show (milliseconds, NaN), which would
    otherwise end the reader and, with it, the add-on."""
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _describe(exc: BaseException) -> str:
    return _short(exc) or type(exc).__name__


def _short(text: object, limit: int = 200) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass
class _Pending:
    future: asyncio.Future[_Result | _Pong]
    # Runs in the reader, before any later message is handled: a snapshot applied later could overwrite a
    # newer change that arrived right behind it.
    on_result: Callable[[_Result], None] | None = None


# The client -------------------------------------------------------------------------------------------------


class HomeAssistantClient:
    """The latest states of some entities, and service calls, over one WebSocket connection to Home Assistant.

    `await client.run()` (in a task) owns the connection until cancelled. Read `state()` / `states`, await
    `wait_connected()` and `call_service()` from other tasks of the same event loop. `on_change` is called
    (synchronously, in the reader) with every new version of a subscribed entity, and with None when one
    disappears.
    """

    def __init__(
        self,
        entity_ids: Iterable[str],
        on_change: OnChange | None = None,
        *,
        url: str = SUPERVISOR_WEBSOCKET_URL,
        token: str | None = None,
        request_timeout: float = 10.0,
        ping_interval: float = 30.0,
        backoff: tuple[float, float] = (1.0, 60.0),
    ) -> None:
        access_token = token if token is not None else supervisor.token()
        if not access_token:
            raise HomeAssistantAuthError(
                "no SUPERVISOR_TOKEN: not running as an add-on with homeassistant_api: true (or pass a token)"
            )
        self.entity_ids = frozenset(entity_ids)
        self.on_change = on_change
        self.url = url
        self.request_timeout = request_timeout
        self.ping_interval = ping_interval
        self.backoff = backoff
        # The latest connection failure, kept after recovery for diagnostics.
        self.last_error: HomeAssistantError | None = None
        self.ha_version: str | None = None
        self._token = access_token
        self._states: dict[str, EntityState] = {}
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)  # never reset: Home Assistant wants ids to increase on a connection
        self._pending: dict[int, _Pending] = {}
        self._send_lock = asyncio.Lock()
        self._connected = asyncio.Event()
        self._subscription: int | None = None
        self._compressed = True  # subscribe_entities' format, else state_changed events
        self._initial = asyncio.Event()  # the first `a` of the current subscription has been applied
        self._fallback_logged = False
        self._delay = backoff[0]
        self._outage_since: float | None = None
        self._failures = 0
        self._auth_reported = False
        self._callback_failing = False
        # Core answered on the current connection. The Supervisor's proxy says auth_ok before it reaches
        # Core and closes at once when it cannot: only an answer ends an outage (and its backoff).
        self._answered = False
        # This add-on's wall clock minus Home Assistant's, measured at live changes (whose timestamps are
        # Home Assistant's "now"); 0 until one arrives: in an add-on both read the same host clock.
        self.clock_offset = 0.0
        self._offset_measured = False  # on the current connection
        self._skew_logged = False

    # reading ------------------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Authenticated and subscribed, with the initial states applied."""
        return self._connected.is_set()

    @property
    def states(self) -> Mapping[str, EntityState]:
        return MappingProxyType(self._states)

    def state(self, entity_id: str) -> EntityState | None:
        return self._states.get(entity_id)

    async def wait_connected(self, timeout: float | None = None) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError:
            reason = f": {self.last_error}" if self.last_error else ""
            raise HomeAssistantTimeoutError(
                f"not connected to Home Assistant within {timeout} s{reason}"
            ) from None

    # service calls ------------------------------------------------------------------------------------------

    async def call_service(
        self,
        domain: str,
        service: str,
        data: Mapping[str, Any] | None = None,
        target: Mapping[str, Any] | None = None,
        return_response: bool = False,
        timeout: float | None = None,
    ) -> Any:
        """Call a service (an "action"); with return_response (HA >= 2023.12) return its `response`."""
        message: dict[str, Any] = {
            "type": "call_service",
            "domain": domain,
            "service": service,
            "service_data": dict(data or {}),
        }
        if target:
            message["target"] = dict(target)
        if return_response:
            message["return_response"] = True
        result = await self._command(message, f"{domain}.{service}", timeout)
        return result.get("response") if return_response and isinstance(result, dict) else None

    async def forecast(
        self, entity_id: str, kind: Literal["hourly", "daily", "twice_daily"] = "hourly"
    ) -> list[dict[str, Any]]:
        """weather.get_forecasts for one weather entity: its forecast entries (datetime, condition, ...)."""
        response = await self.call_service(
            "weather", "get_forecasts", {"type": kind}, {"entity_id": entity_id}, return_response=True
        )
        try:
            forecasts = _FORECASTS.validate_python(response)
        except ValidationError as exc:
            raise HomeAssistantError(
                f"weather.get_forecasts returned no forecast list: {_short(exc)}"
            ) from None
        if entity_id not in forecasts:
            raise HomeAssistantError(f"weather.get_forecasts returned no {kind} forecast for {entity_id}")
        return forecasts[entity_id].forecast

    async def solar_forecast(self) -> dict[str, Any]:
        """The Energy dashboard's solar forecasts (`energy/solar_forecast`): {config entry id: {"wh_hours":
        {time: Wh}}} for the forecast integrations its solar sources name; {} when they name none."""
        result = await self._command({"type": "energy/solar_forecast"}, "energy/solar_forecast")
        if not isinstance(result, dict):
            raise HomeAssistantError(f"energy/solar_forecast returned {_short(result)}, not a mapping")
        return result

    async def config_entry_domains(self) -> dict[str, str]:
        """Each config entry's integration (`config_entries/get`): {entry id: domain}."""
        result = await self._command({"type": "config_entries/get"}, "config_entries/get")
        try:
            entries = _CONFIG_ENTRIES.validate_python(result)
        except ValidationError as exc:
            raise HomeAssistantError(f"config_entries/get returned no entry list: {_short(exc)}") from None
        return {entry.entry_id: entry.domain for entry in entries}

    # the connection -----------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Stay connected until cancelled: reconnect with backoff (doubling up to the maximum)."""
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    await self._connection(session)
                except HomeAssistantError as exc:
                    await asyncio.sleep(self._failed(exc))

    def _failed(self, error: HomeAssistantError) -> float:
        """Log one warning per outage (one error for a refused token); return the delay before retrying."""
        self.last_error = error
        first = self._outage_since is None
        if first:
            self._outage_since, self._failures = time.monotonic(), 0
        self._failures += 1
        if isinstance(error, HomeAssistantAuthError):
            if not self._auth_reported:
                _LOG.error(
                    "%s; is homeassistant_api: true in the add-on's config.yaml? Retrying every %g s",
                    error,
                    self.backoff[1],
                )
                self._auth_reported = True
            # Retrying a refused token quickly only fills Home Assistant's log with failed logins.
            self._delay = self.backoff[1]
        elif first:
            _LOG.warning("Home Assistant at %s: %s; reconnecting with backoff", self.url, error)
        else:
            _LOG.debug("Home Assistant still unreachable (attempt %d): %s", self._failures, error)
        delay = self._delay
        self._delay = min(self._delay * 2, self.backoff[1])
        return delay

    def _alive(self) -> None:
        """The first answer from Core on this connection: the outage is over."""
        if self._answered:
            return
        self._answered = True
        if self._outage_since is not None:
            _LOG.info(
                "connected to Home Assistant %s again after %.0f s (%d failed attempts)",
                self.ha_version or "",
                time.monotonic() - self._outage_since,
                self._failures,
            )
        else:
            _LOG.info("connected to Home Assistant %s", self.ha_version or "")
        self._outage_since, self._auth_reported, self._delay = None, False, self.backoff[0]

    async def _connection(self, session: aiohttp.ClientSession) -> NoReturn:
        """One connection, from connect to close; always ends with a HomeAssistantError saying why."""
        try:
            async with asyncio.timeout(self.request_timeout):
                ws = await session.ws_connect(self.url, max_msg_size=_MAX_MESSAGE)
        except TimeoutError:
            raise HomeAssistantConnectionError(f"no connection within {self.request_timeout} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise HomeAssistantConnectionError(f"cannot connect: {_describe(exc)}") from exc
        reader: asyncio.Task[None] | None = None
        self._answered = False
        self._offset_measured = False
        try:
            async with asyncio.timeout(self.request_timeout):
                await self._authenticate(ws)
            self._ws = ws
            reader = asyncio.create_task(self._read(ws))
            await self._subscribe()
            self._connected.set()
            await self._keepalive(reader)
            raise HomeAssistantConnectionError(f"Home Assistant closed the connection (code {ws.close_code})")
        except TimeoutError:
            raise HomeAssistantConnectionError("authentication timed out") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise HomeAssistantConnectionError(f"the connection failed: {_describe(exc)}") from exc
        finally:
            self._connected.clear()
            self._ws, self._subscription = None, None
            if reader is not None:
                reader.cancel()
                await asyncio.wait({reader})
            # Closing is a courtesy to the other end: a dead link must not hold up the reconnection.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await ws.close()

    async def _authenticate(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        hello = await self._receive(ws)
        if not isinstance(hello, _AuthRequired):
            raise HomeAssistantConnectionError(f"expected auth_required, got {type(hello).__name__}")
        await ws.send_str(json.dumps({"type": "auth", "access_token": self._token}))
        reply = await self._receive(ws)
        if isinstance(reply, _AuthInvalid):
            raise HomeAssistantAuthError(
                f"Home Assistant refused the token: {reply.message or 'auth_invalid'}"
            )
        if not isinstance(reply, _AuthOk):
            raise HomeAssistantConnectionError(f"expected auth_ok, got {type(reply).__name__}")
        self.ha_version = reply.ha_version

    @staticmethod
    async def _receive(ws: aiohttp.ClientWebSocketResponse) -> _Message:
        message = await ws.receive()
        if message.type is not aiohttp.WSMsgType.TEXT:
            raise HomeAssistantConnectionError(
                f"connection closed during authentication ({message.type.name})"
            )
        try:
            return _INCOMING.validate_json(message.data)
        except ValidationError as exc:
            raise HomeAssistantConnectionError(f"unexpected message: {_short(message.data)}") from exc

    async def _keepalive(self, reader: asyncio.Task[None]) -> None:
        """Until the reader ends: a ping through to Core now and then, since a dead link can stay silent."""
        while True:
            done, _ = await asyncio.wait({reader}, timeout=self.ping_interval)
            if done:
                reader.result()
                return
            try:
                await self._request({"type": "ping"})
            except HomeAssistantTimeoutError:
                raise HomeAssistantConnectionError(
                    f"no pong from Home Assistant within {self.request_timeout} s"
                ) from None

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for message in ws:
                if message.type is aiohttp.WSMsgType.TEXT:
                    self._dispatch(message.data)
                elif message.type is aiohttp.WSMsgType.ERROR:
                    return
        finally:
            self._fail_pending(HomeAssistantConnectionError("the connection to Home Assistant was lost"))

    def _dispatch(self, text: str) -> None:
        try:
            payload = json.loads(text)
        except ValueError:
            _LOG.warning("ignoring a message from Home Assistant that is not JSON: %s", _short(text))
            return
        # Core only coalesces messages into a list for clients that ask for it; we do not.
        if not isinstance(payload, dict) or payload.get("type") not in _KNOWN_TYPES:
            _LOG.debug("ignoring a message from Home Assistant: %s", _short(payload))
            return
        try:
            message = _INCOMING.validate_python(payload)
        except ValidationError as exc:
            _LOG.warning("ignoring a malformed %s message: %s", payload.get("type"), _short(exc))
            return
        if isinstance(message, _Result | _Pong):
            self._alive()
            pending = self._pending.pop(message.id, None)
            if pending is None or pending.future.done():
                return
            if isinstance(message, _Result) and message.success and pending.on_result is not None:
                try:
                    pending.on_result(message)
                except HomeAssistantError as exc:
                    pending.future.set_exception(exc)
                    return
            pending.future.set_result(message)
        elif isinstance(message, _Event) and message.id == self._subscription:
            self._on_event(message.event)

    def _fail_pending(self, error: HomeAssistantError) -> None:
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            if not entry.future.done():
                entry.future.set_exception(error)

    # requests -----------------------------------------------------------------------------------------------

    async def _request(
        self,
        message: dict[str, Any],
        *,
        timeout: float | None = None,
        on_result: Callable[[_Result], None] | None = None,
    ) -> _Result | _Pong:
        ws = self._ws
        if ws is None or ws.closed:
            raise HomeAssistantConnectionError("not connected to Home Assistant")
        future: asyncio.Future[_Result | _Pong] = asyncio.get_running_loop().create_future()
        # The id is taken under the lock that orders the sends: Home Assistant refuses an id below the last.
        async with self._send_lock:
            message_id = next(self._ids)
            self._pending[message_id] = _Pending(future, on_result)
            try:
                await ws.send_str(json.dumps({"id": message_id, **message}))
            except (aiohttp.ClientError, OSError) as exc:
                self._pending.pop(message_id, None)
                raise HomeAssistantConnectionError(f"sending {message['type']} failed: {exc}") from exc
        limit = self.request_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                return await future
        except TimeoutError:
            raise HomeAssistantTimeoutError(
                f"no answer from Home Assistant to {message['type']} within {limit} s"
            ) from None
        finally:
            self._pending.pop(message_id, None)

    async def _command(
        self,
        message: dict[str, Any],
        what: str,
        timeout: float | None = None,
        on_result: Callable[[_Result], None] | None = None,
    ) -> Any:
        result = await self._request(message, timeout=timeout, on_result=on_result)
        assert isinstance(result, _Result), "a command is answered by a result"
        if not result.success:
            error = result.error or _ErrorInfo()
            raise HomeAssistantCommandError(what, error.code, error.message)
        return result.result

    # states -------------------------------------------------------------------------------------------------

    async def _subscribe(self) -> None:
        if not self.entity_ids:
            return
        self._initial = asyncio.Event()
        entities = {"type": "subscribe_entities", "entity_ids": sorted(self.entity_ids)}
        try:
            await self._command(entities, "subscribe_entities", on_result=self._subscribed(compressed=True))
        except HomeAssistantCommandError as exc:
            # Home Assistant before 2022.4 does not know subscribe_entities: follow every state_changed
            # event instead and keep ours, with a get_states for the values at the start.
            if not self._fallback_logged:
                _LOG.info("%s; following state_changed events instead", exc)
                self._fallback_logged = True
        else:
            try:
                async with asyncio.timeout(self.request_timeout):
                    await self._initial.wait()
            except TimeoutError:
                raise HomeAssistantTimeoutError("subscribe_entities sent no initial states") from None
            return
        events = {"type": "subscribe_events", "event_type": "state_changed"}
        await self._command(events, "subscribe_events", on_result=self._subscribed(compressed=False))
        await self._command({"type": "get_states"}, "get_states", on_result=self._snapshot)

    def _subscribed(self, *, compressed: bool) -> Callable[[_Result], None]:
        def accept(result: _Result) -> None:
            self._subscription, self._compressed = result.id, compressed

        return accept

    def _snapshot(self, result: _Result) -> None:
        try:
            states = _STATES.validate_python(result.result)
        except ValidationError as exc:
            raise HomeAssistantConnectionError(f"get_states returned no state list: {_short(exc)}") from None
        now, wall = time.monotonic(), time.time()
        self._replace_all(
            [
                EntityState(
                    item.entity_id,
                    item.state,
                    item.attributes,
                    item.last_updated,
                    now,
                    self._age(item.last_reported or item.last_updated, wall),
                )
                for item in states
                if item.entity_id in self.entity_ids
            ]
        )

    def _age(self, said: datetime | None, wall: float) -> float:
        """How old a state Home Assistant has had in place is, by its own timestamp on our clock.

        Unknown (no timestamp) or in the future (clocks apart by more than the correction knows): 0, as
        old as its arrival, which is all the add-on could tell before it read these timestamps."""
        if said is None:
            return 0.0
        return max(0.0, wall - self.clock_offset - said.timestamp())

    def _measure_clock(self, said: datetime | None, wall: float) -> None:
        """A live change's timestamp is Home Assistant's clock at the change, a moment before it arrived:
        the smallest difference seen on a connection is the closest to the clocks' own."""
        if said is None:
            return
        sample = wall - said.timestamp()
        if self._offset_measured and sample >= self.clock_offset:
            return
        self.clock_offset, self._offset_measured = sample, True
        if abs(sample) > CLOCK_SKEW_NOTE_S and not self._skew_logged:
            self._skew_logged = True
            _LOG.warning(
                "Home Assistant's clock is %.0f s %s this add-on's; the ages of its states are corrected "
                "for it, but check the time settings of the machines",
                abs(sample),
                "behind" if sample > 0 else "ahead of",
            )

    def _replace_all(self, states: list[EntityState]) -> None:
        """A full picture after (re)subscribing: entities deleted while we were away go too."""
        present = {state.entity_id for state in states}
        for entity_id in [known for known in self._states if known not in present]:
            self._remove(entity_id)
        for state in states:
            self._put(state)
        self._initial.set()

    def _on_event(self, event: dict[str, Any]) -> None:
        try:
            if self._compressed:
                self._apply_entities(_EntitiesEvent.model_validate(event), time.monotonic(), time.time())
            elif event.get("event_type") == "state_changed":
                self._apply_state_changed(
                    _StateChangedEvent.model_validate(event), time.monotonic(), time.time()
                )
        except ValidationError as exc:
            _LOG.warning("ignoring a malformed state update from Home Assistant: %s", _short(exc))

    def _apply_entities(self, update: _EntitiesEvent, now: float, wall: float) -> None:
        # The first `a` of a subscription is what Home Assistant has in place, of any age; a later one is
        # an entity that appeared just now.
        initial = not self._initial.is_set()
        added = [
            EntityState(
                entity_id,
                item.s,
                item.a,
                _timestamp(item.lu or item.lc),
                now,
                self._age(_timestamp(item.lr or item.lu or item.lc), wall) if initial else 0.0,
            )
            for entity_id, item in update.a.items()
            if entity_id in self.entity_ids
        ]
        if initial:
            self._replace_all(added)
        else:
            for state in added:
                self._put(state)
        for entity_id in update.r:
            self._remove(entity_id)
        for entity_id, diff in update.c.items():
            old = self._states.get(entity_id)
            if old is None:
                _LOG.debug("a change of %s, which we have no state for", entity_id)
                continue
            plus, gone = diff.added, set(diff.removed.a)
            attributes = {key: value for key, value in old.attributes.items() if key not in gone} | plus.a
            changed_at = _timestamp(plus.lc or plus.lu)
            self._measure_clock(_timestamp(plus.lr) or changed_at, wall)
            self._put(
                replace(
                    old,
                    state=old.state if plus.s is None else plus.s,
                    attributes=attributes,
                    last_updated=changed_at or old.last_updated,
                    received_at=now,
                    age_at_receipt=0.0,  # a change, as it happens
                )
            )

    def _apply_state_changed(self, event: _StateChangedEvent, now: float, wall: float) -> None:
        entity_id, new = event.data.entity_id, event.data.new_state
        if entity_id not in self.entity_ids:
            return
        if new is None:
            self._remove(entity_id)
        else:
            self._measure_clock(new.last_reported or new.last_updated, wall)
            self._put(EntityState(entity_id, new.state, new.attributes, new.last_updated, now))

    def _put(self, state: EntityState) -> None:
        self._states[state.entity_id] = state
        self._notify(state.entity_id, state)

    def _remove(self, entity_id: str) -> None:
        if self._states.pop(entity_id, None) is not None:
            self._notify(entity_id, None)

    def _notify(self, entity_id: str, state: EntityState | None) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(entity_id, state)
        except Exception:
            # The reader must survive a bad callback, or one bug would silence every entity; logged once
            # until it works again, since a meter updates every second.
            if not self._callback_failing:
                _LOG.exception("the state callback failed for %s", entity_id)
            self._callback_failing = True
        else:
            self._callback_failing = False
