"""The optimiser controlling simulated batteries live, through `run`'s runtime, a broker and a P1 topic."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from marstek_webasto_addon.addon.controller import KEEP_MODE_CHANGE_S, OptimiserController
from marstek_webasto_addon.addon.inputs import BatteryMeterInput, GridInput, PvForecast
from marstek_webasto_addon.addon.options import parse_options
from marstek_webasto_addon.bridge.devices import BatteryDevice
from marstek_webasto_addon.devices.marstek.datapoints import Method
from marstek_webasto_addon.devices.marstek.link import BatteryLink, LinkSettings
from marstek_webasto_addon.devices.marstek.transport import UdpEndpoint
from marstek_webasto_addon.optimiser.car_sessions import CarSession
from marstek_webasto_addon.optimiser.planner import plan

from .conftest import SimFactory, client_for
from .mqtt_fixtures import Broker, Recorder, broker, recording
from .test_bridge_mqtt import bridge
from .test_planner import DAY, inputs
from .test_venus_transport_live import addon

__all__ = ["broker"]
pytestmark = pytest.mark.timeout(120)
P1 = "home/p1/power"
BASE = "marstek_webasto"


def options(sim: Any, enabled: bool) -> dict[str, Any]:
    return {
        "batteries": [
            {"name": f"Fase{'ABC'[i]}", "host": host, "port": port}
            for i, (host, port) in enumerate(sim.addresses)
        ],
        "marstek_bind": "127.0.0.1",
        "battery_poll_interval": 1,
        "timing": {"request_gap": 0.01, "write_gap": 0.05, "timeout": 0.3, "verify_delay": 0.2},
        "grid_source": {"type": "mqtt", "topic": P1, "unit": "kW"},
        "control_interval": 1,
        # night charging off: the test must behave the same at any hour it runs
        "optimiser": {
            "enabled": enabled,
            "method": "rules",
            "hysteresis": 0,
            "min_switch_interval": 1,
            "input_stale_after": 10,
            "night_charging": False,
        },
    }


async def keep_publishing(recorder: Recorder, kw: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await recorder.publish(P1, str(kw))
        await asyncio.sleep(0.5)


def modes(sim: Any) -> list[str]:
    return [battery.mode for battery in sim.batteries]


async def test_the_optimiser_steers_batteries_holds_on_a_stale_meter_and_lets_go(
    broker: Broker, make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(3, socs=[60.0, 30.0, 90.0])
    stop = asyncio.Event()
    async with recording(broker) as recorder, bridge(broker, options(sim, enabled=True), tmp_path) as runtime:
        meter = asyncio.create_task(keep_publishing(recorder, 0.4, stop))  # 400 W import
        await recorder.wait_for(
            lambda: sorted(modes(sim)) == ["Auto", "Passive", "Passive"],
            30,
            "one battery in Auto, the others idle in Passive",
        )
        status = f"{BASE}/optimiser/state"
        await recorder.wait_for(
            lambda: (
                status in recorder.latest
                and json.loads(recorder.latest[status])["strategy"] in ("rotation", "night: no rotation")
            ),
            10,
            "status",
        )
        state = json.loads(recorder.latest[status])
        assert state["grid_power"] == pytest.approx(400)
        assert state["input_stale"] == "OFF"
        active = state["active_battery"]
        assert active in ("FaseA", "FaseB", "FaseC")
        passive = [b for b in sim.batteries if b.mode == "Passive"]
        assert all(b.passive_power == 0 for b in passive)  # idle
        assert all(b.passive_until > sim.clock.seconds() for b in passive)  # with a countdown

        # a parameter changed in Home Assistant is used and stored
        await recorder.publish(f"{BASE}/optimiser/peak_target/set", "4.5")
        await recorder.wait_for(
            lambda: json.loads(recorder.latest[status])["peak_target"] == 4.5, 10, "setting"
        )
        assert runtime.optimiser is not None
        assert runtime.optimiser.settings.peak_target == 4.5
        saved = json.loads((tmp_path / "state.json").read_text())
        assert saved["optimiser"]["overrides"]["peak_target"] == 4.5

        # the meter goes quiet: hold, every battery back on its own Auto control
        stop.set()
        await meter
        await recorder.wait_for(lambda: modes(sim) == ["Auto", "Auto", "Auto"], 30, "hold in Auto")
        await recorder.wait_for(
            lambda: json.loads(recorder.latest[status])["input_stale"] == "ON", 5, "problem"
        )


async def test_the_master_switch_releases_the_batteries_and_stops_commanding(
    broker: Broker, make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(2, socs=[60.0, 30.0])
    stop = asyncio.Event()
    async with recording(broker) as recorder, bridge(broker, options(sim, enabled=True), tmp_path):
        meter = asyncio.create_task(keep_publishing(recorder, 0.4, stop))
        await recorder.wait_for(lambda: "Passive" in modes(sim), 30, "one battery idle in Passive")
        await recorder.publish(f"{BASE}/optimiser/enabled/set", "OFF")
        await recorder.wait_for(lambda: modes(sim) == ["Auto", "Auto"], 30, "released to Auto")
        sent = [len(b.setmode_log) for b in sim.batteries]
        await asyncio.sleep(3)
        assert [len(b.setmode_log) for b in sim.batteries] == sent
        stop.set()
        await meter


async def test_a_clean_stop_returns_steered_batteries_to_auto(
    broker: Broker, make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(2, socs=[60.0, 30.0])
    stop = asyncio.Event()
    async with recording(broker) as recorder:
        async with bridge(broker, options(sim, enabled=True), tmp_path):
            meter = asyncio.create_task(keep_publishing(recorder, 0.3, stop))
            await recorder.wait_for(lambda: "Passive" in modes(sim), 30, "one battery idle in Passive")
        stop.set()
        await meter
    assert modes(sim) == ["Auto", "Auto"]


# the switch interval across a restart and the master switch, on the demo's faster clock -----------------

SPEED = 10  # the batteries' and the optimiser's clock: the 2 min interval lasts 12 real seconds
INTERVAL_S = 120


def interval_options(sim: Any) -> dict[str, Any]:
    opts = options(sim, enabled=True)
    opts["optimiser"].update(min_switch_interval=INTERVAL_S // 60, input_stale_after=60)
    return opts


async def test_a_restart_within_the_switch_interval_waits_it_out_from_the_stops_auto(
    broker: Broker, make_sim: SimFactory, tmp_path: Path
) -> None:
    # Seen in a review: a stop sent Auto, and a start 20 s later sent Passive to the same battery at once.
    # The stop's Auto is a mode change like any other: kept under /data in wall-clock time, it holds the
    # first Passive after the start back until the interval from it has passed.
    sim = await make_sim(2, socs=[60.0, 30.0], speed=SPEED)
    fase_b = sim.batteries[1]
    stop = asyncio.Event()
    async with recording(broker) as recorder:
        meter = asyncio.create_task(keep_publishing(recorder, 0.4, stop))  # the fullest, FaseA, covers
        async with addon(broker, interval_options(sim), tmp_path, sim.clock):
            await recorder.wait_for(lambda: modes(sim) == ["Auto", "Passive"], 30, "FaseB idle in Passive")
            stopping = sim.clock.seconds()
        assert modes(sim) == ["Auto", "Auto"]  # the stop's Auto
        kept = json.loads((tmp_path / "state.json").read_text())["optimiser"]["mode_changes"]
        auto_at = kept[f"battery_{fase_b.ble_mac}"]
        epoch = sim.clock.now().timestamp() - sim.clock.seconds()  # the simulated wall clock at t = 0
        assert epoch + stopping <= auto_at <= epoch + sim.clock.seconds()  # in wall-clock time
        await asyncio.sleep(20 / SPEED)
        sent = len(fase_b.setmode_log)
        async with addon(broker, interval_options(sim), tmp_path, sim.clock) as runtime:
            # the engine starts with it, on its own clock
            assert runtime.optimiser is not None
            restored = runtime.optimiser.engine.mode_changes()[f"battery_{fase_b.ble_mac}"]
            assert restored == pytest.approx(auto_at - epoch, abs=0.5)
            await recorder.wait_for(
                lambda: fase_b.mode == "Passive", (INTERVAL_S + 60) / SPEED, "FaseB idle again"
            )
            assert fase_b.passive_since - stopping >= INTERVAL_S  # not before the interval from the Auto
            # meanwhile at most Auto again (the start's hold while the meter is not read yet): no mode change
            assert [e["mode"] for e in fase_b.setmode_log[sent:-1]] in ([], ["Auto"])
        stop.set()
        await meter


async def test_the_master_switch_off_and_on_waits_the_interval_from_the_releases_auto(
    broker: Broker, make_sim: SimFactory, tmp_path: Path
) -> None:
    # Seen in a review: switched off, then on 10 s later, the optimiser sent Passive at once to the batteries
    # the release had just sent to Auto.
    sim = await make_sim(2, socs=[60.0, 30.0], speed=SPEED)
    fase_b = sim.batteries[1]
    stop = asyncio.Event()
    opts = interval_options(sim)
    async with recording(broker) as recorder, addon(broker, opts, tmp_path, sim.clock):
        meter = asyncio.create_task(keep_publishing(recorder, 0.4, stop))
        await recorder.wait_for(lambda: modes(sim) == ["Auto", "Passive"], 30, "FaseB idle in Passive")
        switched_off = sim.clock.seconds()
        await recorder.publish(f"{BASE}/optimiser/enabled/set", "OFF")
        await recorder.wait_for(lambda: modes(sim) == ["Auto", "Auto"], 10, "released to Auto")
        await asyncio.sleep(10 / SPEED)
        sent = len(fase_b.setmode_log)
        await recorder.publish(f"{BASE}/optimiser/enabled/set", "ON")
        await recorder.wait_for(
            lambda: fase_b.mode == "Passive", (INTERVAL_S + 60) / SPEED, "FaseB idle again"
        )
        assert fase_b.passive_since - switched_off >= INTERVAL_S
        assert len(fase_b.setmode_log) == sent + 1
        stop.set()
        await meter


async def test_switched_off_by_default_nothing_is_commanded(
    broker: Broker, make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(2)
    opts = options(sim, enabled=True)
    del opts["optimiser"]["enabled"]
    stop = asyncio.Event()
    async with recording(broker) as recorder, bridge(broker, opts, tmp_path):
        meter = asyncio.create_task(keep_publishing(recorder, 0.3, stop))
        await recorder.wait_for(lambda: f"{BASE}/optimiser/state" in recorder.latest, 20, "optimiser state")
        await asyncio.sleep(3)
        stop.set()
        await meter
        assert json.loads(recorder.latest[f"{BASE}/optimiser/state"])["enabled"] == "OFF"
    assert all(b.setmode_log == [] for b in sim.batteries)


async def test_a_flickering_ct_state_keeps_the_last_good_meter_reading(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    # Seen with the real add-on: one poll with ct_state 0 made the grid reading vanish, and an optimiser
    # without a reading holds every battery in Auto. A reading is stale by its age, not by one bad poll.
    sim = await make_sim(1, socs=[60.0])
    link = BatteryLink("FaseA", client_for(sim, endpoint), LinkSettings(extra_fast=(Method.EM_STATUS,)))
    meter = BatteryMeterInput(BatteryDevice(link, {}))
    await link.poll_once()
    good = meter.current()
    assert good.value is not None
    quirks = sim.batteries[0].quirks
    sim.batteries[0].quirks = replace(quirks, rogue_values={"ct_state": 0})
    await link.poll_once()
    assert link.snapshot.values["ct_connected"] is False
    held = meter.current()
    assert (held.value, held.at) == (good.value, good.at)  # still there, and ageing
    sim.batteries[0].quirks = quirks
    await link.poll_once()
    fresh = meter.current()
    assert fresh.at is not None
    assert good.at is not None
    assert fresh.at > good.at


async def test_a_ct_meter_that_stops_answering_grows_old_while_the_battery_answers_the_rest(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    # The battery answers its status but no longer what carries its CT meter (a firmware hiccup; or `auto`
    # running on Modbus, which cannot read the CT): its last meter reading must age, so the optimiser's
    # stale-input rule puts it in its safe hold, and the panel shows the CT power unknown, not frozen.
    sim = await make_sim(1, socs=[60.0])
    link = BatteryLink("FaseA", client_for(sim, endpoint), LinkSettings(extra_fast=(Method.EM_STATUS,)))
    meter = BatteryMeterInput(BatteryDevice(link, {}))
    await link.poll_once()
    good = meter.current()
    assert good.value is not None
    assert good.at is not None
    venus = sim.batteries[0]
    # (ES.GetMode carries the CT's total power as well)
    silent = {*venus.profile.silent, Method.EM_STATUS, Method.ES_MODE}
    venus.profile = replace(venus.profile, silent=frozenset(silent))
    for _ in range(2):
        await link.poll_once()
    assert link.online
    assert link.snapshot.updated_at > good.at  # the battery's other values keep coming
    held = meter.current()
    assert (held.value, held.at) == (good.value, good.at)  # the meter's reading keeps its own age
    limit = good.at + link.allowed_age("meter_power")
    assert link.current_values(now=limit - 0.5)["meter_power"] == good.value
    assert "meter_power" not in link.current_values(now=limit + 0.5)
    assert link.current_values(now=limit + 0.5)["wifi_ssid"] == link.snapshot.values["wifi_ssid"]  # identity


async def test_values_read_at_their_own_cadence_are_never_shown_out_of_date(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    # The Venus A's battery power is derived from the PV channels, read every 6th poll: it must stay shown
    # between those reads, as must the SOC and the CT meter.
    sim = await make_sim(1, socs=[60.0], profile="venus_a_v150")
    settings = LinkSettings(poll_interval=0.2)
    link = BatteryLink("FaseA", client_for(sim, endpoint), settings)
    watched = {"battery_power", "pv_power", "meter_power", "soc"}
    shown: list[set[str]] = []
    for _ in range(3 * settings.slow_every):
        await link.poll_once()
        shown.append(watched & set(link.current_values()))
        await asyncio.sleep(settings.poll_interval)
    assert all(keys == watched for keys in shown), shown
    pv_age, soc_age = link.snapshot.age("pv_power"), link.snapshot.age("soc")
    assert pv_age is not None
    assert soc_age is not None
    assert pv_age > soc_age  # each read at its own time: the PV channels by a slow method
    # A point two methods carry (the CT meter: EM.GetStatus every 6th poll, ES.GetMode every poll on firmware
    # that has it there) is allowed the slower one's cadence; every poll when EM.GetStatus is read every poll.
    slow = settings.slow_every * settings.poll_interval + settings.offline_window
    assert link.allowed_age("meter_power") == pytest.approx(slow)
    fast = BatteryLink("FaseA", client_for(sim, endpoint), replace(settings, extra_fast=(Method.EM_STATUS,)))
    assert fast.allowed_age("meter_power") == pytest.approx(settings.poll_interval + settings.offline_window)


def controller_with(optimiser: dict[str, Any], store: dict[str, Any]) -> OptimiserController:
    """A controller over no battery: how its settings come from the options and the store."""
    parsed = parse_options(
        {
            "batteries": [{"name": "FaseA", "host": "127.0.0.1"}],
            "grid_source": {"type": "mqtt", "topic": P1, "unit": "kW"},
            "optimiser": optimiser,
        }
    )
    return OptimiserController(parsed, [], GridInput("test"), PvForecast("none"), store, lambda: None)


def test_changes_made_in_home_assistant_survive_an_update_that_adds_a_parameter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Seen after an update: a new parameter made the stored options differ from the new ones, and every
    # change made in Home Assistant was wiped, `enabled` among them: an optimiser switched off there took
    # over the batteries again. Only an option that itself changed ends its override.
    configured = {"enabled": True, "peak_target": 3.0, "night_charging": True, "hysteresis": 2}
    before = controller_with(configured, {}).store["options"]
    del before["wear_cost"]  # the version before had no such parameter
    overrides = {"enabled": False, "peak_target": 4.0, "night_charging": False}
    store = {"options": before, "overrides": dict(overrides)}
    settings = controller_with(configured, store).settings
    assert store["overrides"] == overrides
    assert (settings.enabled, settings.peak_target, settings.night_charging) == (False, 4.0, False)
    assert "wear_cost" in store["options"]  # known from now on
    # the option of one of them changed: that override goes, with a line in the log; the others stay
    caplog.set_level(logging.INFO, logger="marstek_webasto_addon.addon.controller")
    settings = controller_with({**configured, "peak_target": 5.0}, store).settings
    assert store["overrides"] == {"enabled": False, "night_charging": False}
    assert (settings.enabled, settings.peak_target, settings.night_charging) == (False, 5.0, False)
    assert any("dropped, their option changed: peak_target" in r.getMessage() for r in caplog.records)
    # a stored change the parameters no longer know, or no longer accept, goes alone and is named
    caplog.clear()
    store["overrides"] = {"enabled": False, "retired": 1, "hysteresis": "much"}
    settings = controller_with({**configured, "peak_target": 5.0}, store).settings
    assert store["overrides"] == {"enabled": False}
    assert not settings.enabled
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2
    assert "retired" in warned[0]
    assert "hysteresis" in warned[1]


def test_stored_mode_changes_count_from_now_when_in_the_future_and_absurd_ones_are_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = time.time()
    store: dict[str, Any] = {
        "mode_changes": {
            "battery_a": now - 60,  # a minute ago
            "battery_b": now + 7200,  # the clock was set back two hours: counts as now
            "battery_c": now - 2 * KEEP_MODE_CHANGE_S,  # too old to matter
            "battery_d": "soon",
            "battery_e": True,
            "battery_f": math.nan,
            "battery_g": -5,
        }
    }
    controller = controller_with({"enabled": True}, store)
    t = time.monotonic()
    changed = controller.engine.mode_changed
    assert sorted(changed) == ["battery_a", "battery_b"]
    assert changed["battery_a"] == pytest.approx(t - 60, abs=1)
    assert changed["battery_b"] == pytest.approx(t, abs=1)
    assert store["mode_changes"] == {
        "battery_a": pytest.approx(now - 60, abs=1),
        "battery_b": pytest.approx(now, abs=1),
    }
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w.split(" of ")[1].split(" ")[0] for w in warned] == [
        "battery_d",
        "battery_e",
        "battery_f",
        "battery_g",
    ]
    # not an object at all: nothing restored
    assert controller_with({"enabled": True}, {"mode_changes": [1, 2]}).engine.mode_changed == {}


async def test_a_switched_off_optimiser_shows_no_plan(
    broker: Broker, make_sim: SimFactory, tmp_path: Path
) -> None:
    # The plan is no longer made once the optimiser is off: the last one shown as current would be a lie.
    sim = await make_sim(2, socs=[60.0, 30.0])
    opts = options(sim, enabled=True)
    opts["optimiser"]["method"] = "planner"
    stop = asyncio.Event()
    async with recording(broker) as recorder, bridge(broker, opts, tmp_path) as runtime:
        controller = runtime.optimiser
        assert controller is not None
        meter = asyncio.create_task(keep_publishing(recorder, 0.4, stop))

        def plan_action() -> object:
            return json.loads(recorder.latest.get(f"{BASE}/optimiser/state", "{}")).get("plan_action")

        await recorder.wait_for(lambda: controller.plan_json()["steps"] != [], 30, "a plan")
        await recorder.wait_for(lambda: plan_action() is not None, 30, "the plan's action published")
        await recorder.publish(f"{BASE}/optimiser/enabled/set", "OFF")
        await recorder.wait_for(lambda: plan_action() is None, 30, "no plan action once switched off")
        assert controller.plan_json() == {"status": "the optimiser is switched off", "steps": []}
        assert controller.plan_summary() is None
        stop.set()
        await meter


class StoppedClock:
    speed = 1.0

    def __init__(self, at: datetime) -> None:
        self.at = at

    def seconds(self) -> float:
        return 0.0

    def now(self) -> datetime:
        return self.at


def test_a_plan_that_no_longer_covers_now_is_no_plan_for_the_car() -> None:
    # A plan the optimiser stopped renewing said "0 kW" for the car past its last step: plan mode kept the
    # car waiting for ever instead of charging it by its departure as it does without a plan.
    controller = controller_with({"enabled": True, "method": "planner"}, {})
    car = CarSession(DAY + timedelta(hours=17), DAY + timedelta(hours=23), 10.0)
    controller.live.plan = plan(inputs(car=(car,)))
    controller.clock = StoppedClock(DAY + timedelta(hours=20))
    planned = controller.planned_car()
    assert planned is not None  # within the plan: its power for now
    controller.clock = StoppedClock(DAY + timedelta(days=2))
    assert controller.planned_car() is None
