"""Broker credentials from the Supervisor's MQTT service, for `run` under any process supervisor.

The Supervisor cannot run here: a small aiohttp server on 127.0.0.1 answers GET /services/mqtt the way it
does (the Mosquitto add-on not started yet: 400 "service not available"; then the credentials).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from marstek_webasto_addon.addon.options import OptionsError, parse_options
from marstek_webasto_addon.addon.supervisor import SupervisorError, mqtt_service
from marstek_webasto_addon.cli.run import broker_settings

from .conftest import until

pytestmark = pytest.mark.timeout(30)
TOKEN = "a-supervisor-token"
SERVICE = {"host": "core-mosquitto", "port": 1883, "ssl": False, "username": "addons", "password": "pw"}


@dataclass
class FakeSupervisor:
    url: str = ""
    not_ready_for: int = 0  # answer "not available" this many times first
    requests: list[str | None] = field(default_factory=list)

    async def services_mqtt(self, request: web.Request) -> web.Response:
        self.requests.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"result": "error", "message": "Unauthorized"}, status=401)
        if len(self.requests) <= self.not_ready_for:
            return web.json_response({"result": "error", "message": "Service not available"}, status=400)
        return web.json_response({"result": "ok", "data": SERVICE})


@pytest.fixture
async def supervisor(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeSupervisor]:
    fake = FakeSupervisor()
    app = web.Application()
    app.router.add_get("/services/mqtt", fake.services_mqtt)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("SUPERVISOR_TOKEN", TOKEN)
    for name in ("MWA_MQTT_HOST", "MWA_MQTT_PORT", "MWA_MQTT_USERNAME", "MWA_MQTT_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    yield fake
    await runner.cleanup()


async def test_the_broker_comes_from_the_supervisor_once_it_is_up(supervisor: FakeSupervisor) -> None:
    supervisor.not_ready_for = 2
    waiting: list[str] = []
    task = asyncio.create_task(broker_settings(parse_options({}), waiting, supervisor.url, first_retry_s=0.1))
    await until(lambda: waiting)
    assert "Service not available" in waiting[0]
    assert "Mosquitto" in waiting[0]  # the message says what to do
    settings = await asyncio.wait_for(task, 10)
    assert (settings.host, settings.port, settings.username, settings.password) == (
        "core-mosquitto",
        1883,
        "addons",
        "pw",
    )
    assert waiting == []  # the panel's "waiting for a broker" problem is gone
    assert supervisor.requests == [f"Bearer {TOKEN}"] * 3


async def test_explicit_options_and_handed_over_credentials_come_first(
    supervisor: FakeSupervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = parse_options({"mqtt": {"host": "10.0.0.5", "port": 1884, "username": "me", "password": "x"}})
    settings = await broker_settings(options, None, supervisor.url)
    assert (settings.host, settings.port, settings.username) == ("10.0.0.5", 1884, "me")
    monkeypatch.setenv("MWA_MQTT_HOST", "broker.from.bashio")
    monkeypatch.setenv("MWA_MQTT_USERNAME", "addons")
    settings = await broker_settings(parse_options({}), None, supervisor.url)
    assert (settings.host, settings.port, settings.username) == ("broker.from.bashio", 1883, "addons")
    assert supervisor.requests == []


async def test_a_wrong_token_or_no_supervisor_is_a_clear_error(
    supervisor: FakeSupervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPERVISOR_TOKEN", "stale")
    with pytest.raises(SupervisorError, match="Unauthorized"):
        await mqtt_service(supervisor.url)
    with pytest.raises(SupervisorError, match="unreachable"):
        await mqtt_service("http://127.0.0.1:9", timeout=2)
    monkeypatch.delenv("SUPERVISOR_TOKEN")
    with pytest.raises(OptionsError, match=r"mqtt\.host"):
        await broker_settings(parse_options({}), None, supervisor.url)
