"""The site's energy meters (Energy dashboard): counters where the devices have them, integrated power
otherwise, never falling, kept across restarts."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from marstek_webasto_addon.bridge.site_energy import MAX_GAP_S, BatterySource, CounterMeter, SiteEnergy
from marstek_webasto_addon.devices.marstek.decode import BatterySnapshot

from .conftest import SimFactory
from .mqtt_fixtures import Broker, broker, recording
from .test_bridge_mqtt import PREFIX, bridge, configs

__all__ = ["broker"]


@dataclass
class FakeBattery:
    """A snapshot that the test writes: the energy meters only read numbers from it."""

    values: dict[str, Any] = field(default_factory=dict)
    online: bool = True

    def source(self, key: str) -> BatterySource:
        return BatterySource(key, lambda: BatterySnapshot(values=dict(self.values)), lambda: self.online)


def test_battery_counters_add_up_and_an_offline_battery_does_not_make_the_meter_fall() -> None:
    a, b = (
        FakeBattery({"ac_input_energy": 100.0, "ac_output_energy": 50.0}),
        FakeBattery({"ac_input_energy": 10.0, "ac_output_energy": 5.0}),
    )
    store: dict[str, Any] = {}
    energy = SiteEnergy(store, [a.source("a"), b.source("b")], lambda: None)
    energy.update(0)
    assert energy.totals()["battery_charge_energy"] == 0  # the first reading is a baseline, not energy
    a.values["ac_input_energy"] = 101.5
    b.values["ac_output_energy"] = 5.25
    energy.update(10)
    assert energy.totals()["battery_charge_energy"] == pytest.approx(1.5, abs=1e-3)
    assert energy.totals()["battery_discharge_energy"] == pytest.approx(0.25, abs=1e-3)
    b.online = False
    a.values["ac_input_energy"] = 102.0
    energy.update(20)
    assert energy.totals()["battery_charge_energy"] == pytest.approx(2.0, abs=1e-3)
    # b comes back: what it charged while away counts once; a counter that fell (a reset) only rebases
    b.online = True
    b.values["ac_input_energy"] = 11.0
    a.values["ac_input_energy"] = 3.0
    energy.update(30)
    assert energy.totals()["battery_charge_energy"] == pytest.approx(3.0, abs=1e-3)
    a.values["ac_input_energy"] = 3.5
    energy.update(40)
    assert energy.totals()["battery_charge_energy"] == pytest.approx(3.5, abs=1e-3)


def test_power_is_integrated_where_there_is_no_counter_and_gaps_are_not_guessed() -> None:
    grid: list[float | None] = [1000.0]
    battery = FakeBattery({"ac_power": -500.0})  # charging, no counters on this firmware
    energy = SiteEnergy({}, [battery.source("a")], lambda: grid[0])
    clock = [0.0]

    def run(seconds: float, every: float = 60.0) -> None:
        for _ in range(int(seconds / every)):
            clock[0] += every
            energy.update(clock[0])

    energy.update(0)
    run(3600)
    totals = energy.totals()
    assert totals["grid_import_energy"] == pytest.approx(1.0, abs=1e-3)
    assert totals["battery_charge_energy"] == pytest.approx(0.5, abs=1e-3)
    grid[0] = -2000.0
    run(1800)
    assert energy.totals()["grid_import_energy"] == pytest.approx(
        1.0 + 1000 * 60 / 3.6e6, abs=1e-3
    )  # held one step
    assert energy.totals()["grid_export_energy"] == pytest.approx(2000 * 1740 / 3.6e6, abs=1e-3)
    grid[0] = None  # no fresh reading: nothing is counted, and the next reading starts afresh
    run(600)
    exported = energy.totals()["grid_export_energy"]
    grid[0] = -2000.0
    run(60)
    assert energy.totals()["grid_export_energy"] == pytest.approx(exported, abs=1e-3)
    run(MAX_GAP_S * 2, every=MAX_GAP_S * 2)  # a gap longer than the add-on can vouch for
    assert energy.totals()["grid_export_energy"] == pytest.approx(exported, abs=1e-3)


def test_the_grid_meters_counters_win_over_integration() -> None:
    counters: list[float | None] = [500.0, 20.0]
    energy = SiteEnergy({}, [], lambda: 5000.0, CounterMeter("battery:a", lambda: (counters[0], counters[1])))
    energy.update(0)
    counters[0] = 500.4
    energy.update(3600)
    assert energy.totals()["grid_import_energy"] == pytest.approx(0.4, abs=1e-3)  # not the 5 kWh of the power


def test_totals_and_baselines_survive_a_restart() -> None:
    battery = FakeBattery({"ac_input_energy": 100.0, "ac_output_energy": 50.0})
    store: dict[str, Any] = {}
    first = SiteEnergy(store, [battery.source("a")], lambda: None)
    first.update(0)
    battery.values["ac_input_energy"] = 102.0
    first.update(10)
    saved = json.loads(json.dumps(store))  # as it goes to /data
    battery.values["ac_input_energy"] = 103.0  # charged while the add-on was stopped
    again = SiteEnergy(saved, [battery.source("a")], lambda: None)
    again.update(0)
    assert again.totals()["battery_charge_energy"] == pytest.approx(3.0, abs=1e-3)


def test_damaged_stored_totals_are_dropped_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    energy = SiteEnergy({"totals": [], "baselines": "x"}, [], lambda: None)
    assert set(energy.totals().values()) == {0.0}
    assert "the totals kept in state.json are not an object ([])" in caplog.text
    store: dict[str, Any] = {
        "totals": {"grid_import_energy": "lots", "grid_export_energy": 2.5, "battery_charge_energy": None},
        "baselines": {"a:in": True, "a:out": 4.0},
    }
    energy = SiteEnergy(store, [], lambda: None)
    assert energy.totals()["grid_import_energy"] == 0.0  # counts on from 0
    assert energy.totals()["grid_export_energy"] == 2.5  # the good ones are kept
    assert energy.baselines == {"a:out": 4.0}
    assert "totals grid_import_energy in state.json is not a number ('lots'); dropped" in caplog.text
    energy.update(0)
    assert store["totals"]["grid_import_energy"] == 0.0  # written back whole


async def test_the_site_device_offers_energy_dashboard_sensors(
    broker: Broker, make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(2, socs=[60.0, 30.0])
    options = {
        "batteries": [
            {"name": f"Fase{'AB'[i]}", "host": h, "port": p} for i, (h, p) in enumerate(sim.addresses)
        ],
        "marstek_bind": "127.0.0.1",
        "battery_poll_interval": 1,
        "timing": {"request_gap": 0.01, "write_gap": 0.05, "timeout": 0.3, "verify_delay": 0.2},
    }
    async with recording(broker) as recorder, bridge(broker, options, tmp_path) as runtime:
        keys = (
            "grid_import_energy",
            "grid_export_energy",
            "battery_charge_energy",
            "battery_discharge_energy",
        )
        topics = {k: f"{PREFIX}/sensor/marstek_webasto_site/{k}/config" for k in keys}
        await recorder.wait_for(
            lambda: all(t in recorder.latest for t in topics.values()), 20, "energy sensors"
        )
        found = configs(recorder)
        for topic in topics.values():
            config = found[topic]
            assert config["state_class"] == "total_increasing"
            assert config["device_class"] == "energy"
            assert config["unit_of_measurement"] == "kWh"
            assert config.get("enabled_by_default", True) is True
        await asyncio.sleep(3)
        assert runtime.site is not None
        state = runtime.site.state()
        assert all(isinstance(state[k], int | float) and state[k] >= 0 for k in keys)
