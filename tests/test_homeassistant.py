"""The Home Assistant WebSocket client, against a fake Home Assistant speaking the protocol on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from marstek_webasto_addon.addon import homeassistant
from marstek_webasto_addon.addon.forecast_inputs import sunny_hours
from marstek_webasto_addon.addon.homeassistant import (
    EntityState,
    HomeAssistantAuthError,
    HomeAssistantClient,
    HomeAssistantCommandError,
    HomeAssistantConnectionError,
    HomeAssistantError,
    HomeAssistantTimeoutError,
)

from .conftest import until
from .ha_fake import HA_VERSION, FakeHomeAssistant

pytestmark = pytest.mark.timeout(60)

P1 = "sensor.p1_power"
ENERGY = "sensor.energy_production_tomorrow"
LATER = "sensor.not_created_yet"
ENTITIES = (P1, ENERGY, LATER)
WEATHER = "weather.forecast_home"
LOGGER = homeassistant.__name__


class Changes:
    """The on_change callback: records every call and wakes whoever waits for one."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, EntityState | None]] = []
        self._event = asyncio.Event()

    def __call__(self, entity_id: str, state: EntityState | None) -> None:
        self.seen.append((entity_id, state))
        self._event.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._event.clear()
                await self._event.wait()


def state_of(client: HomeAssistantClient, entity_id: str) -> str | None:
    state = client.state(entity_id)
    return None if state is None else state.state


def seconds(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


@pytest.fixture(params=["subscribe_entities", "state_changed"])
def mode(request: pytest.FixtureRequest) -> str:
    """Every state test runs against a current Core and against one without subscribe_entities."""
    value: str = request.param
    return value


@pytest.fixture
async def fake(mode: str) -> AsyncIterator[FakeHomeAssistant]:
    ha = FakeHomeAssistant(subscribe_entities=mode == "subscribe_entities")
    ha.preset(P1, "1234", {"unit_of_measurement": "W", "device_class": "power", "friendly_name": "P1 power"})
    ha.preset(ENERGY, "12.3", {"unit_of_measurement": "kWh", "device_class": "energy"})
    ha.preset("sensor.unrelated", "1")
    await ha.start()
    yield ha
    await ha.stop()


def make_client(
    fake: FakeHomeAssistant, on_change: Changes | None = None, **kwargs: Any
) -> HomeAssistantClient:
    options: dict[str, Any] = {"backoff": (0.01, 0.05), "request_timeout": 2.0} | kwargs
    return HomeAssistantClient(ENTITIES, on_change, url=fake.url, token="test-token", **options)


@asynccontextmanager
async def running(client: HomeAssistantClient) -> AsyncIterator[HomeAssistantClient]:
    task = asyncio.create_task(client.run())
    try:
        yield client
    finally:
        task.cancel()
        await asyncio.wait({task})
    assert task.cancelled(), f"run() ended by itself: {task.exception()!r}"


# states -----------------------------------------------------------------------------------------------------


async def test_initial_states_arrive(fake: FakeHomeAssistant) -> None:
    changes = Changes()
    client = make_client(fake, changes)
    before = time.monotonic()
    async with running(client):
        await client.wait_connected(5)
        p1, energy = client.state(P1), client.state(ENERGY)
        assert p1 is not None
        assert energy is not None
        assert (p1.state, p1.unit, p1.attributes["friendly_name"]) == ("1234", "W", "P1 power")
        assert p1.last_updated == seconds(fake.states[P1].last_updated)
        assert before <= p1.received_at <= time.monotonic()
        assert p1.number("kW") == pytest.approx(1.234)
        assert energy.number("Wh") == pytest.approx(12300)
        assert client.state(LATER) is None
        assert set(client.states) == {P1, ENERGY}  # not sensor.unrelated
        assert sorted(entity for entity, _ in changes.seen) == [ENERGY, P1]
        assert client.connected
        assert client.last_error is None
        assert client.ha_version == HA_VERSION
        assert len(fake.auth_attempts) == 1
        if fake.subscribe_entities:
            [subscribe] = fake.commands("subscribe_entities")
            assert subscribe["entity_ids"] == sorted(ENTITIES)


async def test_a_change_updates_the_state_and_calls_the_callback(fake: FakeHomeAssistant) -> None:
    changes = Changes()
    client = make_client(fake, changes)
    async with running(client):
        await client.wait_connected(5)
        old = client.state(P1)
        assert old is not None
        changes.seen.clear()

        await fake.set_state(P1, "1500")
        await changes.wait_for(lambda: len(changes.seen) == 1)
        [(entity_id, new)] = changes.seen
        assert entity_id == P1
        assert new is not None
        assert new is client.state(P1)
        assert (new.state, new.unit, new.attributes["friendly_name"]) == ("1500", "W", "P1 power")
        assert new.last_updated == seconds(fake.states[P1].last_updated)
        assert new.received_at > old.received_at
        assert old.state == "1234"  # a version already handed out does not change under its holder

        # Only an attribute: Core sends `lu` rather than `lc`, and no state.
        await fake.set_state(P1, "1500", {"power_factor": 0.97})
        await changes.wait_for(lambda: len(changes.seen) == 2)
        newer = client.state(P1)
        assert newer is not None
        assert (newer.state, newer.attributes["power_factor"]) == ("1500", 0.97)
        assert newer.last_updated == seconds(fake.states[P1].last_updated) != new.last_updated

        # An entity that did not exist when we subscribed.
        await fake.set_state(LATER, "5", {"unit_of_measurement": "W"})
        await changes.wait_for(lambda: state_of(client, LATER) == "5")
        assert changes.seen[-1][0] == LATER


async def test_attributes_that_disappear_are_removed(fake: FakeHomeAssistant) -> None:
    changes = Changes()
    client = make_client(fake, changes)
    async with running(client):
        await client.wait_connected(5)
        changes.seen.clear()
        await fake.set_state(P1, "1234", {"unit_of_measurement": "W"}, keep=False)
        await changes.wait_for(lambda: len(changes.seen) == 1)
        state = client.state(P1)
        assert state is not None
        assert state.state == "1234"
        assert dict(state.attributes) == {"unit_of_measurement": "W"}


async def test_a_removed_entity_is_gone_and_reported(fake: FakeHomeAssistant) -> None:
    changes = Changes()
    client = make_client(fake, changes)
    async with running(client):
        await client.wait_connected(5)
        await fake.remove_state(ENERGY)
        await changes.wait_for(lambda: (ENERGY, None) in changes.seen)
        assert client.state(ENERGY) is None
        assert ENERGY not in client.states
        assert state_of(client, P1) == "1234"


async def test_the_fallback_follows_state_changed_events_for_our_entities_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    fake = FakeHomeAssistant(subscribe_entities=False)
    fake.preset(P1, "1234", {"unit_of_measurement": "W"})
    fake.preset("sensor.unrelated", "1")
    await fake.start()
    changes = Changes()
    client = make_client(fake, changes)
    try:
        async with running(client):
            await client.wait_connected(5)
            assert [m["type"] for m in fake.received] == [
                "subscribe_entities",
                "subscribe_events",
                "get_states",
            ]
            assert set(client.states) == {P1}
            await fake.set_state("sensor.unrelated", "2")
            await fake.set_state(P1, "42")
            await changes.wait_for(lambda: state_of(client, P1) == "42")
            assert all(entity_id == P1 for entity_id, _ in changes.seen)
            assert "sensor.unrelated" not in client.states
    finally:
        await fake.stop()
    [fallback] = [r.getMessage() for r in caplog.records if "state_changed events instead" in r.getMessage()]
    assert "subscribe_entities failed: Unknown command. (unknown_command)" in fallback


# the connection ---------------------------------------------------------------------------------------------


async def test_a_refused_token_is_a_clear_error_and_is_not_retried_fast(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    fake = FakeHomeAssistant(token="the-real-token")
    await fake.start()
    client = make_client(fake, backoff=(0.01, 0.5))
    try:
        async with running(client):
            await fake.wait_for(lambda: len(fake.auth_attempts) >= 1)
            with pytest.raises(HomeAssistantTimeoutError, match="refused the token: Invalid access"):
                await client.wait_connected(0.2)
            assert isinstance(client.last_error, HomeAssistantAuthError)
            assert not client.connected
            await fake.wait_for(lambda: len(fake.auth_attempts) >= 3, timeout=5)
            first, second, third = fake.auth_attempts[:3]
            assert second - first >= 0.45  # the maximum backoff, not 10 ms
            assert third - second >= 0.45
            assert fake.received == []
            [error] = warnings_of(caplog)  # one error for the outage, not one per attempt
            assert error.levelno == logging.ERROR
            assert "refused the token: Invalid access" in error.getMessage()
            assert "homeassistant_api: true" in error.getMessage()
            # Once the token works the client connects; a refusal in a later outage is reported again.
            fake.token = "test-token"
            await client.wait_connected(5)
            fake.token = "the-next-token"
            await fake.drop_connections()
            await until(lambda: len(warnings_of(caplog)) >= 3)
    finally:
        await fake.stop()
    assert [r.levelname for r in warnings_of(caplog)] == ["ERROR", "WARNING", "ERROR"]


async def test_the_token_comes_from_the_supervisor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUPERVISOR_TOKEN", raising=False)
    with pytest.raises(HomeAssistantAuthError, match="no SUPERVISOR_TOKEN"):
        HomeAssistantClient([P1])
    fake = FakeHomeAssistant(token="from-the-supervisor")
    fake.preset(P1, "7")
    await fake.start()
    monkeypatch.setenv("SUPERVISOR_TOKEN", "from-the-supervisor")
    client = HomeAssistantClient([P1], url=fake.url)
    assert HomeAssistantClient([P1]).url == "ws://supervisor/core/websocket"
    try:
        async with running(client):
            await client.wait_connected(5)
            assert state_of(client, P1) == "7"
    finally:
        await fake.stop()


async def test_reconnects_and_resubscribes_after_the_connection_drops(
    fake: FakeHomeAssistant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    changes = Changes()
    client = make_client(fake, changes)
    subscription = "subscribe_entities" if fake.subscribe_entities else "subscribe_events"
    async with running(client):
        await client.wait_connected(5)
        await fake.drop_connections()
        await fake.wait_for(lambda: len(fake.commands(subscription)) == 2 and len(fake.connections) == 1)
        await client.wait_connected(5)
        await fake.set_state(P1, "777")
        await changes.wait_for(lambda: state_of(client, P1) == "777")
    [warning] = warnings_of(caplog)
    assert "closed the connection" in warning.getMessage()
    assert isinstance(client.last_error, HomeAssistantConnectionError)
    assert any("again after" in r.getMessage() for r in caplog.records)


async def test_reconnects_after_a_restart_and_sees_what_changed_meanwhile(
    fake: FakeHomeAssistant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    changes = Changes()
    client = make_client(fake, changes)
    async with running(client):
        await client.wait_connected(5)
        await fake.stop()
        await until(lambda: not client.connected)
        # While Core is down: the meter moves and the forecast entity is deleted.
        fake.preset(P1, "2000", {"unit_of_measurement": "W"})
        del fake.states[ENERGY]
        await until(lambda: sum("still unreachable" in r.getMessage() for r in caplog.records) >= 3)
        assert state_of(client, P1) == "1234"  # the last known value stays readable during the outage
        await fake.start()
        await changes.wait_for(lambda: state_of(client, P1) == "2000" and (ENERGY, None) in changes.seen)
        await client.wait_connected(5)
        assert client.state(ENERGY) is None
        assert len(fake.auth_attempts) == 2
    [warning] = warnings_of(caplog)  # one warning for the whole outage, however many attempts failed
    assert "reconnecting" in warning.getMessage()
    [restored] = [r.getMessage() for r in caplog.records if "again after" in r.getMessage()]
    assert "failed attempts" in restored


@pytest.mark.parametrize("mode", ["subscribe_entities"])
async def test_the_backoff_doubles_to_its_maximum_and_starts_again_after_a_success(
    fake: FakeHomeAssistant,
) -> None:
    client = make_client(fake, backoff=(0.05, 0.4))
    async with running(client):
        await client.wait_connected(5)
        fake.core_down = True  # a Core restart as the add-on sees it: the proxy answers 502 until Core is up
        await fake.drop_connections()
        dropped = time.monotonic()
        await fake.wait_for(lambda: len(fake.upgrades) >= 8)
        attempts = fake.upgrades[1:]
        assert attempts[0] - dropped < 0.3  # the first delay again, not the 0.4 s where it ended
        gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
        for gap, delay in zip(gaps, [0.05, 0.1, 0.2, 0.4, 0.4, 0.4], strict=False):
            assert gap >= delay - 0.01
        assert max(gaps) < 0.7  # held at the maximum, never 0.8
        assert "502" in str(client.last_error)
        assert not client.connected
        fake.core_down = False
        await client.wait_connected(5)
        # After a success the next outage starts with the first delay again.
        fake.core_down = True
        await fake.drop_connections()
        dropped = time.monotonic()
        count = len(fake.upgrades)
        await fake.wait_for(lambda: len(fake.upgrades) > count)
        assert fake.upgrades[count] - dropped < 0.3


async def test_a_silent_connection_is_noticed_by_the_keepalive(fake: FakeHomeAssistant) -> None:
    client = make_client(fake, ping_interval=0.05, request_timeout=0.3)
    async with running(client):
        await client.wait_connected(5)
        await fake.wait_for(lambda: len(fake.commands("ping")) >= 2)  # the second follows the first pong
        assert len(fake.auth_attempts) == 1
        fake.answer_pings = False
        await fake.wait_for(lambda: len(fake.auth_attempts) >= 2)
        assert "no pong from Home Assistant within 0.3 s" in str(client.last_error)


async def test_a_failing_callback_and_a_malformed_update_do_not_stop_the_client(
    fake: FakeHomeAssistant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    changes = Changes()

    def broken(entity_id: str, state: EntityState | None) -> None:
        changes(entity_id, state)
        raise RuntimeError("a bug in the input layer")

    client = make_client(fake)
    client.on_change = broken
    async with running(client):
        await client.wait_connected(5)
        subscription = fake.commands("subscribe_entities" if fake.subscribe_entities else "subscribe_events")[
            -1
        ]["id"]
        update = {"c": {P1: {"+": {"s": 5}}}} if fake.subscribe_entities else {"event_type": "state_changed"}
        await fake.push_raw({"id": subscription, "type": "event", "event": update})
        # An event for a subscription that is not ours (one of a previous connection, say).
        stray = (
            {"c": {P1: {"+": {"s": "666"}}}} if fake.subscribe_entities else {"event_type": "state_changed"}
        )
        await fake.push_raw({"id": subscription + 100, "type": "event", "event": stray})
        await fake.set_state(P1, "1600")
        await changes.wait_for(lambda: state_of(client, P1) == "1600")
        assert [s.state for _, s in changes.seen if s is not None and s.entity_id == P1] == ["1234", "1600"]
        assert client.connected
        assert len(fake.auth_attempts) == 1
    [callback_error, malformed] = warnings_of(caplog)  # the callback's first failure only, not each one
    assert callback_error.levelno == logging.ERROR
    assert callback_error.exc_info is not None
    assert "the state callback failed for" in callback_error.getMessage()
    assert malformed.levelno == logging.WARNING
    assert "malformed state update" in malformed.getMessage()


# service calls ----------------------------------------------------------------------------------------------

FORECAST = [
    {
        "datetime": (datetime(2025, 11, 24, 23, tzinfo=UTC) + timedelta(hours=h)).isoformat(),
        "condition": "sunny" if 9 <= h < 15 else "cloudy",  # 09:00-14:00Z: 10:00-15:00 in Brussels
        "temperature": 6.0,
        "precipitation": 0.0,
    }
    for h in range(24)
]


@pytest.mark.parametrize("mode", ["subscribe_entities"])
async def test_call_service_returns_the_response(fake: FakeHomeAssistant) -> None:
    fake.forecasts[WEATHER] = FORECAST
    client = make_client(fake)
    async with running(client):
        await client.wait_connected(5)
        response = await client.call_service(
            "weather",
            "get_forecasts",
            {"type": "hourly"},
            target={"entity_id": WEATHER},
            return_response=True,
        )
        assert response == {WEATHER: {"forecast": FORECAST}}
        forecast = await client.forecast(WEATHER)
        assert forecast == FORECAST
        assert sunny_hours(forecast, date(2025, 11, 25), tz=ZoneInfo("Europe/Brussels")) == 6
        with pytest.raises(HomeAssistantError, match=r"no hourly forecast for weather\.elsewhere"):
            await client.forecast("weather.elsewhere")
    call = fake.commands("call_service")[0]
    assert {key: call[key] for key in ("domain", "service", "service_data", "target", "return_response")} == {
        "domain": "weather",
        "service": "get_forecasts",
        "service_data": {"type": "hourly"},
        "target": {"entity_id": WEATHER},
        "return_response": True,
    }


@pytest.mark.parametrize("mode", ["subscribe_entities"])
async def test_a_client_for_service_calls_only_subscribes_to_nothing(fake: FakeHomeAssistant) -> None:
    # subscribe_entities without entity_ids would stream every entity of the house.
    fake.forecasts[WEATHER] = FORECAST
    client = HomeAssistantClient([], url=fake.url, token="test-token")
    async with running(client):
        await client.wait_connected(5)
        assert await client.forecast(WEATHER) == FORECAST
    assert [m["type"] for m in fake.received] == ["call_service"]
    assert client.states == {}


@pytest.mark.parametrize("mode", ["subscribe_entities"])
async def test_call_service_failures_say_what_home_assistant_said(fake: FakeHomeAssistant) -> None:
    client = make_client(fake)
    async with running(client):
        await client.wait_connected(5)
        with pytest.raises(HomeAssistantCommandError, match=r"Action weather\.nope not found") as failure:
            await client.call_service("weather", "nope", {})
        assert failure.value.code == "not_found"
        assert isinstance(failure.value, HomeAssistantError)
        with pytest.raises(HomeAssistantCommandError, match="must be called with return_response=True"):
            await client.call_service("weather", "get_forecasts", {"type": "hourly"}, {"entity_id": WEATHER})
        assert client.connected


@pytest.mark.parametrize("mode", ["subscribe_entities"])
async def test_call_service_times_out_and_the_connection_stays(fake: FakeHomeAssistant) -> None:
    fake.hanging_services.add("script.slow")
    fake.forecasts[WEATHER] = FORECAST
    client = make_client(fake)
    async with running(client):
        await client.wait_connected(5)
        started = time.monotonic()
        with pytest.raises(HomeAssistantTimeoutError, match=r"call_service within 0\.2 s"):
            await client.call_service("script", "slow", timeout=0.2)
        assert 0.2 <= time.monotonic() - started < 1.5
        assert await client.forecast(WEATHER) == FORECAST  # the late answer cannot be mistaken for this one
        assert client.connected
        assert len(fake.auth_attempts) == 1


@pytest.mark.parametrize("mode", ["subscribe_entities"])
async def test_call_service_fails_fast_without_a_connection(fake: FakeHomeAssistant) -> None:
    fake.hanging_services.add("script.slow")
    client = make_client(fake)
    async with running(client):
        await client.wait_connected(5)
        call = asyncio.create_task(client.call_service("script", "slow"))
        await fake.wait_for(lambda: len(fake.commands("call_service")) == 1)
        await fake.stop()
        with pytest.raises(HomeAssistantConnectionError, match="connection to Home Assistant was lost"):
            await call
        await until(lambda: not client.connected)
        started = time.monotonic()
        with pytest.raises(HomeAssistantConnectionError, match="not connected"):
            await client.call_service("weather", "get_forecasts", {"type": "hourly"}, return_response=True)
        assert time.monotonic() - started < 0.1
