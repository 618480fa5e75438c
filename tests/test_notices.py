"""Problems that need a person: the Problem sensor of each device, and Home Assistant notifications that are
created once when a problem starts and dismissed when it ends (a fake Home Assistant on 127.0.0.1)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from marstek_webasto_addon.addon import runtime as runtime_module
from marstek_webasto_addon.addon.notices import NOTIFICATION_PREFIX

from .conftest import SimFactory, until
from .ha_fake import FakeHomeAssistant
from .mqtt_fixtures import Broker, broker, recording
from .test_bridge_mqtt import BASE, bridge

__all__ = ["broker"]
pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def fake() -> AsyncIterator[FakeHomeAssistant]:
    ha = FakeHomeAssistant()
    await ha.start()
    yield ha
    await ha.stop()


def notifications(fake: FakeHomeAssistant, service: str) -> list[dict[str, Any]]:
    return [
        m["service_data"]
        for m in fake.commands("call_service")
        if m.get("domain") == "persistent_notification" and m.get("service") == service
    ]


async def test_a_battery_offline_for_long_is_a_problem_sensor_and_one_notification_until_it_answers(
    fake: FakeHomeAssistant,
    broker: Broker,
    make_sim: SimFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MWA_HA_URL", fake.url)
    monkeypatch.setenv("MWA_HA_TOKEN", fake.token)
    monkeypatch.setattr(runtime_module, "NOTICE_CHECK_S", 0.2)
    sim = await make_sim(2, socs=[60.0, 30.0])
    options = {
        "batteries": [
            {"name": f"Fase{'AB'[i]}", "host": h, "port": p} for i, (h, p) in enumerate(sim.addresses)
        ],
        "marstek_bind": "127.0.0.1",
        "battery_poll_interval": 1,
        "offline_after": 1,
        "timing": {"request_gap": 0.01, "write_gap": 0.05, "timeout": 0.3, "verify_delay": 0.2},
    }
    async with recording(broker) as recorder, bridge(broker, options, tmp_path) as runtime:
        runtime.notice_board.offline_after_s = 2.0  # ten minutes in the add-on
        await until(lambda: all(b.available for b in runtime.batteries), 15)
        battery = runtime.batteries[1]
        state = f"{BASE}/{battery.device_id}/state"
        await recorder.wait_for(
            lambda: state in recorder.latest and json.loads(recorder.latest[state])["problem"] == "OFF", 10
        )
        quirks = sim.batteries[1].quirks
        sim.batteries[1].quirks = replace(quirks, loss_percent=100.0)  # it stops answering
        await until(lambda: battery.notices, 30)
        await recorder.wait_for(
            lambda: json.loads(recorder.latest[state])["problem"] == "ON", 10, "problem ON"
        )
        # the attributes are a topic of their own, published just after the state: wait for them too
        problem_attributes = f"{BASE}/{battery.device_id}/problem/attributes"
        await recorder.wait_for(
            lambda: bool(json.loads(recorder.latest.get(problem_attributes, "{}")).get("problems")),
            10,
            "the problem's attributes",
        )
        attributes = json.loads(recorder.latest[problem_attributes])
        assert "FaseB" in attributes["problems"][0]
        assert "Local API" in attributes["problems"][0]  # what to check
        await fake.wait_for(lambda: notifications(fake, "create"), 10)
        created = notifications(fake, "create")
        assert created[0]["notification_id"] == f"{NOTIFICATION_PREFIX}offline_{battery.device_id}"
        assert created[0]["title"] == "FaseB is offline"
        await until(lambda: len(runtime.notifications.shown) == 1, 5)  # type: ignore[union-attr]
        before = len(notifications(fake, "create"))
        sim.batteries[1].quirks = quirks
        await fake.wait_for(lambda: notifications(fake, "dismiss"), 20)
        assert notifications(fake, "dismiss")[0]["notification_id"] == created[0]["notification_id"]
        assert len(notifications(fake, "create")) == before  # once per problem, not once per check
        await recorder.wait_for(
            lambda: json.loads(recorder.latest[state])["problem"] == "OFF", 10, "problem OFF"
        )
    assert runtime.batteries[0].notices == []  # the other battery never had a problem
