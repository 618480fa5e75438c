"""What Home Assistant receives: readings rounded to what the data point can say, enums as enums."""

from __future__ import annotations

import json
from pathlib import Path

from marstek_webasto_addon.bridge.exposes import Component, Expose, state_value

from .conftest import SimFactory
from .mqtt_fixtures import Broker, broker, recording
from .test_bridge_mqtt import BASE, PREFIX, bridge, configs

__all__ = ["broker"]


def test_float_noise_is_rounded_to_the_points_precision() -> None:
    energy = Expose("ac_input_energy", "AC energy in", Component.SENSOR, "kWh", precision=2)
    power = Expose("ac_power", "AC power", Component.SENSOR, "W", precision=0)
    raw = Expose("version", "Version", Component.SENSOR)
    assert state_value(energy, 0.011800000000000001) == 0.01
    assert state_value(energy, 1234.5678) == 1234.57
    assert state_value(power, 812.6) == 813
    assert isinstance(state_value(power, 812.6), int)
    assert state_value(raw, 0.1 + 0.2) == 0.1 + 0.2  # no precision declared: untouched
    assert state_value(energy, 7) == 7  # integers are exact already


async def test_no_float_noise_and_the_tariff_period_is_an_enum(
    broker: Broker, make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(1, socs=[55.5])
    host, port = sim.addresses[0]
    options = {
        "batteries": [{"name": "FaseA", "host": host, "port": port}],
        "marstek_bind": "127.0.0.1",
        "battery_poll_interval": 1,
        "timing": {"request_gap": 0.01, "write_gap": 0.05, "timeout": 0.3, "verify_delay": 0.2},
    }
    async with recording(broker) as recorder, bridge(broker, options, tmp_path):
        state_topic = f"{BASE}/battery_{sim.batteries[0].ble_mac}/state"
        optimiser = f"{PREFIX}/sensor/marstek_webasto_optimiser/tariff_period/config"
        await recorder.wait_for(lambda: state_topic in recorder.latest and optimiser in recorder.latest, 20)
        config = configs(recorder)[optimiser]
        assert config["device_class"] == "enum"
        assert set(config["options"]) == {"peak", "off_peak", "super_off_peak"}
        text = recorder.latest[state_topic].decode()
        numbers = [v for v in json.loads(text).values() if isinstance(v, float)]
        assert numbers, text
        assert all(len(repr(v).split(".")[1]) <= 3 for v in numbers), text
