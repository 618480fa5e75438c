"""A person's command wins: manual holds, Passive leases of at most 15 minutes, and schedule clearing that
never leaves the home uncovered. Engine rules on the pure optimiser; the rest on simulated batteries."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from marstek_webasto_addon.addon.controller import OptimiserController, _Actuator, nothing_to_clear
from marstek_webasto_addon.addon.inputs import GridInput, PvForecast
from marstek_webasto_addon.addon.options import parse_options
from marstek_webasto_addon.bridge.devices import BatteryDevice
from marstek_webasto_addon.bridge.holds import LEASE_S, RENEW_S, ManualHolds
from marstek_webasto_addon.devices.marstek.commands import ManualSlot
from marstek_webasto_addon.devices.marstek.link import BatteryLink
from marstek_webasto_addon.devices.marstek.transport import UdpEndpoint
from marstek_webasto_addon.devices.outcome import WriteStatus
from marstek_webasto_addon.optimiser.model import Command, Role
from marstek_webasto_addon.optimiser.settings import Settings

from .conftest import FAST, SimFactory, bounded, client_for, until
from .mqtt_fixtures import Broker, broker, recording
from .optimiser_world import World, battery
from .test_bridge_mqtt import bridge
from .test_optimiser_live import BASE, keep_publishing, modes, options

__all__ = ["broker"]
pytestmark = pytest.mark.timeout(120)


class ManualClock:
    def __init__(self) -> None:
        self.at = datetime(2026, 11, 29, 14, 0)

    def now(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


# --- the engine ------------------------------------------------------------------------------------------


def three() -> list:  # type: ignore[type-arg]
    return [battery("A", 50), battery("B", 20), battery("C", 80)]


def settle(world: World) -> None:
    world.grid = 300.0
    world.step()
    world.run(310)


def test_a_held_battery_gets_no_command_and_the_hold_is_a_decision() -> None:
    world = World(three())
    settle(world)
    held = next(b for b in world.batteries if b.mode == "Auto")  # even the active battery
    world.set(held.name, hold="manual hold until 15:00 (Auto, from panel)", mode_changed_t=world.t)
    before = len(world.log)
    results = world.run(1200)
    assert not any(c.battery_id == held.id for c in world.log[before:])
    texts = [d.text for r in results for d in r.decisions]
    assert any(f"{held.name}: manual hold until 15:00" in t for t in texts)
    assert results[-1].status.roles[held.name] == "manual hold"
    # another battery covers the home: the engine picked a new active one
    assert results[-1].status.active_battery not in (None, held.name)


def test_the_safety_hold_leaves_a_held_battery_alone_too() -> None:
    world = World(three())
    settle(world)
    world.set("B", hold="manual hold until 15:00 (Passive -800 W, from mqtt)", mode="Passive")
    world.grid_age = None  # the meter is gone: everyone else back to Auto
    world.run(60)
    assert "B" not in [b.name for b in world.batteries if b.mode == "Auto"]
    assert sorted(world.in_auto()) == ["A", "C"]


def test_after_a_hold_the_switch_interval_counts_from_the_persons_change() -> None:
    world = World(three(), settings=Settings(enabled=True, method="rules", min_switch_interval=5))
    settle(world)
    world.set("C", hold="manual hold", mode="AI", mode_changed_t=world.t)
    world.run(60)
    world.set("C", hold="")  # handed back one minute after the person's command
    mark = len(world.log)
    results = world.run(180)  # four minutes after the command: still inside the switch interval
    assert any("C: manual hold ended" in d.text for r in results for d in r.decisions)
    assert not any(c.battery_id == "c" for c in world.log[mark:])
    world.run(70)
    assert any(c.battery_id == "c" and c.role is not None for c in world.log[mark:])


def test_night_clearing_never_clears_the_battery_that_covers_the_home() -> None:
    world = World(
        three(),
        now=datetime(2026, 6, 3, 22, 55),
        settings=Settings(enabled=True, method="rules", desired_total_capacity=12.0),
    )
    world.grid = 300.0
    cleared: list[str] = []
    for _ in range(int(3 * 3600 / 10)):  # until 01:55, inside the charging window
        result = world.step()
        modes_now = {b.id: b.mode for b in world.batteries}
        for command in result.commands:
            if command.clear_schedules:
                assert modes_now[command.battery_id] != "Auto", "the covering battery was cleared"
                assert command.battery_id not in cleared  # once a night
                cleared.append(command.battery_id)
        if len(cleared) == 2:
            assert len(world.in_auto()) == 1  # the third one covers the home meanwhile
    assert sorted(cleared) == ["a", "b", "c"]  # the covering one too, once it charges


def test_a_lease_is_never_longer_than_15_minutes_and_ends_with_the_persons_duration() -> None:
    clock = ManualClock()
    store: dict[str, Any] = {}
    holds = ManualHolds(store, clock=clock)
    hold = holds.start("battery_x", "Passive +2500 W for 240 min", "panel", 240 * 60, 2500)
    assert holds.lease_seconds(hold) == LEASE_S
    assert holds.lease_due("battery_x") is None  # the first lease went out with the command
    clock.advance(RENEW_S)
    assert holds.lease_due("battery_x") is hold
    holds.leased(hold)
    clock.advance(240 * 60 - RENEW_S - 100)
    assert holds.lease_seconds(hold) == 100  # the last lease ends with the person's duration
    clock.advance(101)
    assert holds.get("battery_x") is None
    assert store == {}  # an ended hold is not kept


def test_holds_survive_a_restart_and_a_damaged_one_is_dropped() -> None:
    clock = ManualClock()
    store: dict[str, Any] = {}
    ManualHolds(store, clock=clock).start("battery_x", "Passive -800 W for 120 min", "mqtt", 7200, -800)
    store["battery_y"] = {"device_id": "battery_y", "until": "soon"}
    again = ManualHolds(store, clock=clock)
    hold = again.get("battery_x")
    assert hold is not None
    assert hold.passive_power == -800
    assert again.lease_due("battery_x") is hold  # renewed at once: whether the last lease arrived is unknown
    assert "battery_y" not in store


def test_a_persons_mode_change_outlives_a_restart_with_the_hold_and_never_lies_in_the_future() -> None:
    # The switch interval counts from a person's change too: a restart must not forget it.
    clock = ManualClock()
    store: dict[str, Any] = {}
    ManualHolds(store, clock=clock).start("battery_x", "Auto", "panel", 3600)
    changed = clock.now().timestamp()
    clock.advance(20)
    assert ManualHolds(store, clock=clock).changed_at("battery_x") == changed
    clock.advance(-620)  # the clock was set back ten minutes before the next start: counts as now
    assert ManualHolds(store, clock=clock).changed_at("battery_x") == clock.now().timestamp()


# --- live: simulated batteries ------------------------------------------------------------------------


async def held_device(
    make_sim: SimFactory, endpoint: UdpEndpoint, clock: ManualClock
) -> tuple[Any, BatteryDevice]:
    sim = await make_sim(1, socs=[70.0])
    client = client_for(sim, endpoint)
    link = BatteryLink("FaseA", client)
    await link.poll_once()
    settings = {"passive_power": 2500, "passive_duration": 240}
    return sim, BatteryDevice(link, settings, holds=ManualHolds({}, clock=clock))


async def test_a_persons_long_discharge_goes_out_as_renewed_leases(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    clock = ManualClock()
    sim, device = await held_device(make_sim, endpoint, clock)
    outcome = await device.execute("discharge_now", "PRESS", "panel")
    assert outcome.status is WriteStatus.APPLIED
    assert "manual hold until 18:00" in outcome.detail
    battery = sim.batteries[0]
    assert battery.setmode_log[-1]["passive_cfg"] == {"power": 2500, "cd_time": LEASE_S}
    assert device.values()["manual_hold"].startswith("2026-11-29T18:00")
    assert await device.renew_lease() is None  # not due yet
    clock.advance(RENEW_S)
    renewed = await device.renew_lease()
    assert renewed is not None
    assert renewed.ok
    assert battery.setmode_log[-1]["passive_cfg"] == {"power": 2500, "cd_time": LEASE_S}
    assert len(battery.setmode_log) == 2
    # "return to optimiser" ends the hold; no lease is written after that
    await device.execute("resume_optimiser", "PRESS", "panel")
    clock.advance(RENEW_S)
    assert await device.renew_lease() is None
    assert device.values()["manual_hold"] is None
    assert len(battery.setmode_log) == 2


async def test_every_mode_command_of_a_person_holds(make_sim: SimFactory, endpoint: UdpEndpoint) -> None:
    clock = ManualClock()
    sim, device = await held_device(make_sim, endpoint, clock)
    await device.execute("mode", "AI", "mqtt")
    hold = device.holds.get(device.device_id)
    assert hold is not None
    assert hold.until - hold.started == 30 * 60
    assert hold.passive_power is None
    # a stop carries the person's duration as a hold, and only a short lease to the device
    await device.execute("stop", "PRESS", "mqtt")
    assert sim.batteries[0].setmode_log[-1]["passive_cfg"] == {"power": 0, "cd_time": LEASE_S}
    stop_hold = device.holds.get(device.device_id)
    assert stop_hold is not None
    assert stop_hold.passive_power == 0
    assert stop_hold.until - stop_hold.started == 240 * 60
    # settings are not mode commands: they do not touch the hold
    await device.execute("passive_power", -800, "mqtt")
    assert device.holds.get(device.device_id) is stop_hold


async def test_the_optimiser_never_overrides_a_persons_command(
    broker: Broker, make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(3, socs=[60.0, 30.0, 90.0])
    stop = asyncio.Event()
    async with recording(broker) as recorder, bridge(broker, options(sim, enabled=True), tmp_path) as runtime:
        meter = asyncio.create_task(keep_publishing(recorder, 0.4, stop))
        await recorder.wait_for(
            lambda: sorted(modes(sim)) == ["Auto", "Passive", "Passive"], 30, "the optimiser in control"
        )
        target = next(i for i, b in enumerate(sim.batteries) if b.mode == "Passive")
        device = runtime.batteries[target]
        await recorder.publish(f"{BASE}/{device.device_id}/mode/set", "Auto")
        await until(lambda: sim.batteries[target].mode == "Auto" and device.holds.get(device.device_id), 15)
        sent = len(sim.batteries[target].setmode_log)
        await asyncio.sleep(4)  # several control intervals of 1 s
        assert len(sim.batteries[target].setmode_log) == sent
        assert sim.batteries[target].mode == "Auto"
        assert runtime.optimiser is not None
        assert runtime.optimiser.status is not None
        assert runtime.optimiser.status.roles[device.name] == "manual hold"
        controller = runtime.optimiser
        decisions = [d.text for d in controller.decisions]
        assert any(f"{device.name}: manual hold until" in text for text in decisions)
        state = json.loads(recorder.latest[f"{BASE}/{device.device_id}/state"])
        assert state["manual_hold"] is not None
        # handed back: the hold ends at once and says so
        await recorder.publish(f"{BASE}/{device.device_id}/resume_optimiser/set", "PRESS")
        await until(lambda: device.holds.get(device.device_id) is None, 15)
        await until(lambda: any("manual hold ended" in d.text for d in controller.decisions), 15)
        stop.set()
        await meter


async def test_schedules_are_cleared_one_battery_at_a_time_and_known_clean_ones_are_skipped(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    sim = await make_sim(3, socs=[60.0, 30.0, 90.0])
    devices = []
    for index in range(3):
        link = BatteryLink(f"Fase{'ABC'[index]}", client_for(sim, endpoint, index))
        await link.poll_once()
        devices.append(BatteryDevice(link, {}))
    details: list[str] = []
    clearing = asyncio.Lock()
    actuators = [_Actuator(d, lambda _, outcome: details.append(outcome.detail), clearing) for d in devices]
    for device, actuator in zip(devices, actuators, strict=True):
        # as the optimiser clears them: standing by in Passive, the role sent again after the clear
        actuator.last_role = Command(device.device_id or "", Role.IDLE, 0, 900)
    in_manual: list[int] = []

    async def watch() -> None:
        while True:
            in_manual.append(sum(b.mode == "Manual" for b in sim.batteries))
            await asyncio.sleep(0.002)

    async def clear_all() -> None:
        for device, actuator in zip(devices, actuators, strict=True):
            actuator.submit(Command(device.device_id or "", None, clear_schedules=True))
        await until(lambda: all(a.task is not None and a.task.done() for a in actuators), 60)

    watcher = asyncio.create_task(watch())
    await clear_all()
    watcher.cancel()
    assert max(in_manual) == 1  # never two batteries idle in Manual at once
    assert sum("disabled slots accepted" in d for d in details) == 3
    assert [b.mode for b in sim.batteries] == ["Passive"] * 3  # each got its role back
    # the next night finds every slot known clear and writes nothing
    for device in devices:
        await device.link.poll_once()
    sent = [len(b.setmode_log) for b in sim.batteries]
    await clear_all()
    assert [len(b.setmode_log) for b in sim.batteries] == sent
    assert sum("nothing to clear" in d for d in details) == 3
    # a role that came with a clear that writes nothing (nothing to clear; a battery over Modbus) is still
    # sent, at once, not left to the optimiser's repair a minute later
    charge = Command(devices[0].device_id or "", Role.CHARGE, -500, 900)
    actuators[0].submit(charge)
    actuators[0].submit(Command(devices[0].device_id or "", None, clear_schedules=True))
    await until(lambda: actuators[0].task is not None and actuators[0].task.done(), 30)
    assert (sim.batteries[0].mode, sim.batteries[0].passive_power) == ("Passive", -500)
    assert actuators[0].last_role == charge
    # a battery seen in Manual since (a schedule from the app) is cleared again
    await devices[1].link.client.set_mode(ManualSlot(0, "00:00", "23:59", power=-500))
    devices[1].link.client.schedule.pop(0)  # written by the app, not by the add-on
    assert not nothing_to_clear(devices[1])


# A clearing's 20 slot writes take 4 s or more here, as they take 100 s or more on a real battery.
SLOW_WRITES = replace(FAST, write_gap=0.2)


async def steering(
    sim: Any, endpoint: UdpEndpoint, store: dict[str, Any], enabled: bool = True
) -> tuple[list[BatteryDevice], OptimiserController]:
    """The optimiser's controller over the simulated batteries, as `run` builds it (without the broker)."""
    devices = []
    for index in range(len(sim.batteries)):
        link = BatteryLink(f"Fase{'ABC'[index]}", client_for(sim, endpoint, index, SLOW_WRITES))
        await link.poll_once()
        devices.append(BatteryDevice(link, {}))
    grid = GridInput("test")
    grid.set(300.0)
    parsed = parse_options(options(sim, enabled))
    return devices, OptimiserController(parsed, devices, grid, PvForecast("none"), store, lambda: None)


async def clearing_under_way(sim: Any, controller: OptimiserController, devices: list[BatteryDevice]) -> int:
    """One battery covers the home in Auto, the other is cleared before night charging: its index."""
    controller.step()
    await until(lambda: sorted(modes(sim)) == ["Auto", "Passive"], 15)
    index = modes(sim).index("Passive")
    device_id = devices[index].device_id or ""
    controller._dispatch([Command(device_id, None, clear_schedules=True, reason="before night charging")])
    await until(lambda: sim.batteries[index].mode == "Manual", 15)
    return index


async def test_a_clean_stop_abandons_a_clearing_under_way_and_sends_auto(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    # Clearing holds a battery in Manual, which has no countdown, for 100 s or more; the stop waited 30 s
    # for it, then the endpoint was closed and the Auto queued behind the clearing never went out.
    sim = await make_sim(2, socs=[60.0, 30.0])
    store: dict[str, Any] = {}
    devices, controller = await steering(sim, endpoint, store)
    index = await clearing_under_way(sim, controller, devices)
    await bounded(controller.stop(timeout=2.0), 10, "the stop")
    assert modes(sim) == ["Auto", "Auto"]  # before the stop returns, i.e. before the endpoint closes
    manual = [c for c in sim.batteries[index].setmode_log if c["mode"] == "Manual"]
    assert 0 < len(manual) < 20  # abandoned, not finished
    assert store["in_manual"] == []
    assert not nothing_to_clear(devices[index])  # cut short: it is cleared again the next night


async def test_a_start_after_a_crash_mid_clearing_puts_the_battery_back_in_auto(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    sim = await make_sim(2, socs=[60.0, 30.0])
    store: dict[str, Any] = {}
    devices, controller = await steering(sim, endpoint, store)
    index = await clearing_under_way(sim, controller, devices)
    persisted = json.loads(json.dumps(store))  # what /data holds when the process is killed here
    for actuator in controller._actuators.values():  # the process is gone: nothing of it writes any more
        if actuator.task is not None:
            actuator.task.cancel()
            await asyncio.wait({actuator.task})
    assert sim.batteries[index].mode == "Manual"
    other = len(sim.batteries[1 - index].setmode_log)
    # The next start: the optimiser was switched off meanwhile, so it commands nobody; the battery left in
    # Manual goes back to Auto all the same, and nothing else is sent.
    devices, restarted = await steering(sim, endpoint, persisted, enabled=False)
    running = asyncio.create_task(restarted.run())
    try:
        await until(lambda: sim.batteries[index].mode == "Auto", 15)
        await until(lambda: persisted["in_manual"] == [], 5)
    finally:
        running.cancel()
        await asyncio.wait({running})
    last = devices[index].last_outcome
    assert last is not None
    assert "a schedule clearing was cut short" in last.command
    assert len(sim.batteries[1 - index].setmode_log) == other


async def test_a_stop_waits_for_all_batteries_at_once(make_sim: SimFactory, endpoint: UdpEndpoint) -> None:
    # Two steered batteries stop answering before the stop: each one's Auto takes its retries. Waited for
    # one after the other, they took twice the stop's time, and s6 kills the process at a fixed grace.
    sim = await make_sim(3, socs=[60.0, 40.0, 30.0])
    devices, controller = await steering(sim, endpoint, {})
    controller.step()
    await until(lambda: sorted(modes(sim)) == ["Auto", "Passive", "Passive"], 15)
    passive = [i for i, mode in enumerate(modes(sim)) if mode == "Passive"]
    for index in passive:
        sim.outage(index, 60.0)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await bounded(controller.stop(timeout=3.0), 20, "the stop")
    took = loop.time() - began
    assert took < 5.0, took  # one wait of 3 s for both, not 3 s each
    writing = [controller._actuators[id(devices[i])].task for i in passive]
    assert all(task is not None and not task.done() for task in writing)  # each one's Auto, still trying
    for task in writing:
        assert task is not None
        task.cancel()
        await asyncio.wait({task})
