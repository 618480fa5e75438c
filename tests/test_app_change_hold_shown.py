"""A battery a person switches to Manual/AI/UPS in the Marstek app is held by the optimiser for the manual
hold time (tests/test_app_changes.py). That hold is a manual hold like one given through the add-on: its
end shows on the *Manual hold until* sensor (and the panel, which shows that value), *Return to optimiser*
ends it, and it is kept under /data: after a restart the battery, still in the app's mode, is left alone
until the same end instead of being taken over by a fresh optimiser, and the hold ends then.

Simulated batteries on 127.0.0.1; the bridge's runtime with Mosquitto, or the optimiser's controller on a
clock the test moves (the end of a hold is tens of minutes away)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from marstek_webasto_addon.addon.controller import OptimiserController
from marstek_webasto_addon.addon.inputs import GridInput, PvForecast
from marstek_webasto_addon.addon.options import parse_options
from marstek_webasto_addon.bridge.devices import BatteryDevice
from marstek_webasto_addon.bridge.holds import RENEW_S, ManualHold, ManualHolds
from marstek_webasto_addon.devices.marstek.link import BatteryLink
from marstek_webasto_addon.devices.marstek.transport import UdpEndpoint

from .conftest import SimFactory, bounded, client_for, until
from .mqtt_fixtures import Broker, broker, recording
from .test_bridge_mqtt import bridge, state_of
from .test_manual_hold import ManualClock, held_device
from .test_optimiser_live import BASE, keep_publishing, modes, options
from .test_venus_transport import venus_on_modbus

__all__ = ["broker"]
pytestmark = pytest.mark.timeout(120)

APP = "outside the add-on"


def shown(until_epoch: float) -> str:
    """The *Manual hold until* sensor's value for a hold ending at `until_epoch`."""
    return datetime.fromtimestamp(until_epoch).astimezone().isoformat()


# --- the bridge over MQTT, restarted on the same state folder ------------------------------------------


async def test_an_app_change_hold_shows_its_end_survives_a_restart_and_return_to_optimiser_ends_it(
    broker: Broker, make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(3, socs=[60.0, 30.0, 90.0])
    stop = asyncio.Event()
    async with recording(broker) as recorder:
        meter = asyncio.create_task(keep_publishing(recorder, 0.4, stop))
        async with bridge(broker, options(sim, enabled=True), tmp_path) as runtime:
            await recorder.wait_for(
                lambda: sorted(modes(sim)) == ["Auto", "Passive", "Passive"], 30, "the optimiser in control"
            )
            target = next(i for i, b in enumerate(sim.batteries) if b.mode == "Passive")
            device = runtime.batteries[target]
            device_id = device.device_id
            assert device_id is not None
            controller = runtime.optimiser
            assert controller is not None
            # its standby command written and verified: the app's change must not race the verification
            actuator = controller._actuators[id(device)]
            await until(lambda: actuator.task is not None and actuator.task.done(), 15)
            sim.batteries[target].mode = "AI"  # the person's tap in the Marstek app
            await until(lambda: any(APP in d.text for d in controller.decisions), 15)
            hold = runtime.holds.get(device_id)
            assert hold is not None, "the app-change hold is no manual hold"
            assert "put in AI outside the add-on" in hold.describe()
            assert hold.until - hold.started == pytest.approx(30 * 60, abs=5)
            end = shown(hold.until)
            await recorder.wait_for(
                lambda: state_of(recorder, device_id).get("manual_hold") == end,
                10,
                "the Manual hold until sensor showing the app-change hold's end",
            )
            sent = len(sim.batteries[target].setmode_log)
        # The add-on restarts; the battery is still in the app's mode.
        assert sim.batteries[target].mode == "AI"
        stored = json.loads((tmp_path / "state.json").read_text())["holds"][device_id]
        assert stored["outside_mode"] == "AI"
        async with bridge(broker, options(sim, enabled=True), tmp_path) as runtime:
            device = runtime.batteries[target]
            restarted = runtime.optimiser
            assert restarted is not None
            await recorder.wait_for(
                lambda: (
                    restarted.status is not None
                    and device.name in restarted.status.roles
                    and restarted.status.active_battery not in (None, device.name)
                ),
                30,
                "the restarted optimiser steering",
            )
            # three more control steps (of 1 s) after that: the held battery was never commanded
            since = restarted.engine.last_t
            assert since is not None
            await until(lambda: (restarted.engine.last_t or 0.0) >= since + 3, 15)
            assert sim.batteries[target].mode == "AI"
            assert len(sim.batteries[target].setmode_log) == sent
            assert restarted.status is not None
            assert restarted.status.roles[device.name] == "manual hold"
            restored = runtime.holds.get(device_id)
            assert restored is not None
            assert shown(restored.until) == end  # the same end as before the restart
            await recorder.wait_for(
                lambda: state_of(recorder, device_id).get("manual_hold") == end,
                10,
                "the sensor showing the same end after the restart",
            )
            # Return to optimiser ends it, as it ends any manual hold: the optimiser takes the battery back.
            await recorder.publish(f"{BASE}/{device_id}/resume_optimiser/set", "PRESS")
            await until(lambda: runtime.holds.get(device_id) is None, 15)
            await until(lambda: any("manual hold ended" in d.text for d in restarted.decisions), 15)
            # its role again (the command itself waits out the switch interval from the app's change)
            await until(
                lambda: (
                    restarted.status is not None
                    and restarted.status.roles.get(device.name) not in (None, "manual hold")
                ),
                15,
            )
            await recorder.wait_for(
                lambda: state_of(recorder, device_id).get("manual_hold") is None, 10, "the sensor cleared"
            )
        stop.set()
        await meter


# --- the controller on a clock the test moves ----------------------------------------------------------


class StepClock:
    """The optimiser's clock and the holds' wall clock as one: moved by the test, not by real time."""

    speed = 1.0

    def __init__(self) -> None:
        self.t = 1000.0
        self.at = datetime(2026, 11, 29, 14, 0)

    def seconds(self) -> float:
        return self.t

    def now(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.t += seconds
        self.at += timedelta(seconds=seconds)


class Site:
    """What /data holds, and the add-on built on it as `run` builds it (without the broker)."""

    def __init__(self, sim: Any, endpoint: UdpEndpoint, clock: StepClock, state: dict[str, Any]) -> None:
        self.sim = sim
        self.clock = clock
        self.state = state
        self.holds = ManualHolds(state.setdefault("holds", {}), clock=clock)
        self.devices = [
            BatteryDevice(BatteryLink(f"Fase{'ABC'[i]}", client_for(sim, endpoint, i)), {}, holds=self.holds)
            for i in range(len(sim.batteries))
        ]
        self.grid = GridInput("test")
        given = options(sim, True)
        parsed = parse_options({**given, "optimiser": {**given["optimiser"], "manual_hold": 10}})
        self.controller = OptimiserController(
            parsed,
            self.devices,
            self.grid,
            PvForecast("none"),
            state.setdefault("optimiser", {}),
            lambda: None,
            clock=clock,
        )

    async def run(self, seconds: float) -> None:
        """Control steps of 10 s on the test's clock, each on fresh readings and its writes done."""
        for _ in range(round(seconds / 10)):
            self.clock.advance(10)
            for device in self.devices:
                await device.link.poll_once()
            self.grid.set(300.0)
            self.controller.step()
            await until(self.written, 15)

    def written(self) -> bool:
        return all(a.task is None or a.task.done() for a in self.controller._actuators.values())

    def texts(self) -> list[str]:
        return [d.text for d in self.controller.decisions]


async def held_in_ai(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> tuple[Any, StepClock, Site, int, ManualHold]:
    """The optimiser steering two batteries, one of them then put in AI in the Marstek app and left there:
    the simulator, the clock, the site, that battery's index and its app-change hold."""
    sim = await make_sim(2, socs=[60.0, 30.0])
    clock = StepClock()
    site = Site(sim, endpoint, clock, {})
    await site.run(60)
    target = modes(sim).index("Passive")
    device_id = site.devices[target].device_id
    assert device_id is not None
    sim.batteries[target].mode = "AI"
    await site.run(20)
    hold = site.holds.get(device_id)
    assert hold is not None
    return sim, clock, site, target, hold


async def test_an_app_change_hold_keeps_its_end_across_a_restart_and_ends_then(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    sim = await make_sim(2, socs=[60.0, 30.0])
    clock = StepClock()
    site = Site(sim, endpoint, clock, {})
    await site.run(60)
    assert sorted(modes(sim)) == ["Auto", "Passive"]
    target = modes(sim).index("Passive")
    device = site.devices[target]
    device_id = device.device_id
    assert device_id is not None
    sim.batteries[target].mode = "Manual"  # the Marstek app
    changed = clock.now().timestamp()
    await site.run(20)
    assert any(f"{device.name} was put in Manual {APP}" in t for t in site.texts())
    hold = site.holds.get(device_id)
    assert hold is not None, "the app-change hold is no manual hold"
    assert changed < hold.until <= changed + 20 + 10 * 60
    end = hold.until
    assert device.values()["manual_hold"] == shown(end)

    # A clean stop and a start four minutes later, on what /data holds.
    await bounded(site.controller.stop(timeout=2.0), 10, "the stop")
    assert sim.batteries[target].mode == "Manual"  # left in the person's mode
    sent = len(sim.batteries[target].setmode_log)
    clock.advance(4 * 60)
    site = Site(sim, endpoint, clock, json.loads(json.dumps(site.state)))
    device = site.devices[target]
    await site.run(60)
    assert len(sim.batteries[target].setmode_log) == sent, "the restarted optimiser took the battery"
    assert sim.batteries[target].mode == "Manual"
    restored = site.holds.get(device_id)
    assert restored is not None
    assert restored.until == end
    assert device.values()["manual_hold"] == shown(end)
    assert site.controller.status is not None
    assert site.controller.status.roles[device.name] == "manual hold"

    # The person hands it back in the app; the hold still runs until its end, and ends then.
    sim.batteries[target].mode = "Auto"
    while clock.now().timestamp() + 10 < end:
        await site.run(10)
        assert site.holds.get(device_id) is not None
        assert len(sim.batteries[target].setmode_log) == sent
    await site.run(20)
    assert clock.now().timestamp() <= end + 20
    assert site.holds.get(device_id) is None
    assert device.values()["manual_hold"] is None
    assert any(f"{device.name}: manual hold ended" in t for t in site.texts())
    await site.run(60)
    assert len(sim.batteries[target].setmode_log) > sent  # the optimiser steers it again
    assert site.state["holds"] == {}


async def test_an_app_change_hold_renewed_at_its_end_never_reads_as_ended(
    make_sim: SimFactory, endpoint: UdpEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    """The battery stays in the app's mode past the hold's end: the optimiser renews the hold, and the sensor
    goes from the old end to the new one without blanking in between (no "ended" a moment before)."""
    sim, clock, site, target, hold = await held_in_ai(make_sim, endpoint)
    device = site.devices[target]
    device_id = hold.device_id
    end = hold.until
    caplog.set_level("INFO")
    while clock.now().timestamp() < end + 60:
        await site.run(10)
        assert device.values()["manual_hold"] is not None, "the sensor blanked at the renewal"
    renewed = site.holds.get(device_id)
    assert renewed is not None
    assert renewed.until > end + 5 * 60
    assert device.values()["manual_hold"] == shown(renewed.until)
    assert "manual hold ended" not in caplog.text
    assert sim.batteries[target].mode == "AI"


async def test_an_app_change_hold_survives_a_stop_that_lasts_past_its_end(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    """The add-on is down for longer than the hold had left (a host update): the battery, still in the app's
    mode, is not taken by the fresh optimiser; the hold is renewed as it would have been."""
    sim, clock, site, target, hold = await held_in_ai(make_sim, endpoint)
    device_id = hold.device_id
    await bounded(site.controller.stop(timeout=2.0), 10, "the stop")
    sent = len(sim.batteries[target].setmode_log)
    clock.advance(hold.until - clock.now().timestamp() + 20 * 60)  # back 20 min after the hold's end
    site = Site(sim, endpoint, clock, json.loads(json.dumps(site.state)))
    await site.run(60)
    assert len(sim.batteries[target].setmode_log) == sent, "the restarted optimiser took the battery"
    assert sim.batteries[target].mode == "AI"
    renewed = site.holds.get(device_id)
    assert renewed is not None
    assert renewed.until > clock.now().timestamp() + 5 * 60


async def test_return_to_optimiser_just_after_the_holds_end_is_not_undone(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    """Return to optimiser pressed after the hold's end but before the optimiser's next step: the optimiser
    takes the battery back instead of renewing the hold the person just ended."""
    sim, clock, site, target, hold = await held_in_ai(make_sim, endpoint)
    device = site.devices[target]
    device_id = hold.device_id
    while clock.now().timestamp() + 10 < hold.until:
        await site.run(10)
    clock.advance(hold.until - clock.now().timestamp() + 2)  # just past its end, no step yet
    outcome = await device.execute("resume_optimiser", "PRESS", source="panel")
    assert "ended the manual hold" in outcome.detail
    await site.run(60)
    assert site.holds.get(device_id) is None, "the ended hold came back"
    assert sim.batteries[target].mode != "AI"  # the optimiser steers it again


# --- a person's Passive given here, then another mode picked in the app -------------------------------------


async def renewed(device: BatteryDevice, battery: Any, clock: ManualClock) -> None:
    """The person's Passive is written again at its next renewal."""
    written = len(battery.setmode_log)
    clock.advance(RENEW_S)
    outcome = await device.renew_lease()
    assert outcome is not None
    assert outcome.ok
    assert len(battery.setmode_log) == written + 1
    assert battery.mode == "Passive"


async def persons_passive(
    make_sim: SimFactory, endpoint: UdpEndpoint, mode: str | None = None
) -> tuple[ManualClock, BatteryDevice, Any, str]:
    """A person's Discharge now (from the panel) on one battery, no optimiser running; the battery in `mode`
    before it, as the bridge read it (None: the simulator's own). Returns the clock, the device, the
    simulated battery and the mode it had before the Passive."""
    clock = ManualClock()
    sim, device = await held_device(make_sim, endpoint, clock)
    battery = sim.batteries[0]
    if mode is not None:
        battery.mode = mode
        await device.link.poll_once()
    prior = battery.mode
    await device.execute("discharge_now", "PRESS", "panel")
    return clock, device, battery, prior


async def test_a_persons_passive_gives_way_to_a_mode_picked_later_in_the_app(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    clock, device, battery, _ = await persons_passive(make_sim, endpoint)
    written = len(battery.setmode_log)
    battery.mode = "AI"  # the same person, or another, in the Marstek app: the later choice
    await device.link.poll_once()
    clock.advance(RENEW_S)
    assert await device.renew_lease() is None
    assert len(battery.setmode_log) == written, "the lease renewal overrode the app"
    assert battery.mode == "AI"
    assert device.device_id is not None
    hold = device.holds.get(device.device_id)
    assert hold is not None
    assert hold.outside_mode == "AI"  # held as the app's choice now, shown as such
    assert hold.passive_power is None


async def test_with_the_optimiser_a_persons_passive_gives_way_to_the_app_for_good(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    """The optimiser runs: after the Passive gives way, it does not take the battery out of the app's mode
    either (it holds it as any app change)."""
    sim = await make_sim(2, socs=[60.0, 30.0])
    clock = StepClock()
    site = Site(sim, endpoint, clock, {})
    await site.run(60)
    device = site.devices[0]
    battery = sim.batteries[0]
    await device.execute("discharge_now", "PRESS", "panel")
    await site.run(20)
    battery.mode = "AI"  # the Marstek app
    await site.run(RENEW_S)
    written = len(battery.setmode_log)
    assert await device.renew_lease() is None
    await site.run(120)
    assert battery.mode == "AI"
    assert len(battery.setmode_log) == written, "the optimiser took the battery from the app's mode"
    assert device.device_id is not None
    hold = site.holds.get(device.device_id)
    assert hold is not None
    assert hold.outside_mode == "AI"


async def test_a_persons_passive_from_ai_survives_a_clean_restart(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    # The battery was in AI when the person pressed Discharge now; a clean stop puts it in Auto (the hold
    # is kept): after the restart Auto is no choice of anyone's, and the Passive is renewed.
    clock, device, battery, _ = await persons_passive(make_sim, endpoint, "AI")
    assert await device.end_lease() is not None  # the clean stop
    assert device.device_id is not None
    stopped = device.holds.get(device.device_id)
    assert stopped is not None
    assert stopped.prior_mode == "Auto"  # where the add-on itself left it: no one's choice after the restart
    await device.link.poll_once()
    assert battery.mode == "Auto"
    await renewed(device, battery, clock)


async def test_a_persons_passive_whose_countdown_ran_out_is_renewed(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    # Back in the mode it had before the Passive (a countdown that ran out during a link outage) is no
    # person's choice: the Passive is written again for the rest of its duration.
    clock, device, battery, prior = await persons_passive(make_sim, endpoint)
    battery.mode = prior
    await device.link.poll_once()
    await renewed(device, battery, clock)
    assert device.values()["manual_hold"] is not None


async def test_over_modbus_a_persons_passive_gives_way_to_auto_picked_in_the_app(
    make_sim: SimFactory,
) -> None:
    # Over Modbus no countdown runs out (the add-on holds the lease): Auto picked in the app while a person's
    # Passive runs is that person's later choice, and the renewal must not take RS485 control back.
    clock = ManualClock()
    async with venus_on_modbus(make_sim, soc=55.0) as (venus, server, battery):
        link = BatteryLink("FaseA", battery)
        server.registers.app_sets_work_mode("AI")
        await link.poll_once()
        device = BatteryDevice(
            link, {"passive_power": 800, "passive_duration": 240}, holds=ManualHolds({}, clock=clock)
        )
        assert (await device.execute("discharge_now", "PRESS", "panel")).ok
        assert venus.rs485_control
        server.registers.app_sets_work_mode("Auto")
        await link.poll_once()
        clock.advance(RENEW_S)
        assert await device.renew_lease() is None
        await link.poll_once()
        assert not venus.rs485_control, "the renewal took RS485 control back over the app's Auto"
        assert venus.mode == "Auto"
        assert device.device_id is not None
        assert device.holds.get(device.device_id) is None
