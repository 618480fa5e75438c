"""Commands that come back from MQTT, against a real Mosquitto and the simulators.

Validation, coalescing ("latest wins") and the order queued commands run in, a person's command against the
charge-mode controller, settings taken while a device is offline, and how bad payloads are reported.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path

import aiomqtt
import pytest

from marstek_webasto_addon.addon.runtime import Runtime
from marstek_webasto_addon.bridge.mqtt import MqttBridge

from .mqtt_fixtures import Broker, Recorder, broker, recording
from .test_bridge_mqtt import BASE, Site, bridge, command, configs, site, state_of, wait_ready
from .webasto_fixtures import make_box

__all__ = ["broker", "make_box", "site"]
pytestmark = pytest.mark.timeout(90)


def _garage(runtime: Runtime) -> str:
    return str(next(d for d in runtime.wallboxes if d.name == "Garage").device_id)


def _mqtt(runtime: Runtime) -> MqttBridge:
    assert runtime.mqtt is not None
    return runtime.mqtt


async def _drained(recorder: Recorder, runtime: Runtime, timeout: float = 20) -> None:
    mqtt = _mqtt(runtime)

    def idle() -> bool:
        return mqtt.router.backlog() == 0 and all(
            q.task is None or q.task.done() for q in mqtt.router._queues.values()
        )

    await recorder.wait_for(idle, timeout, "the command queues drained")


# --- the order queued commands run in ----------------------------------------------------------------------


async def test_a_replaced_passive_power_is_not_moved_behind_the_button_pressed_after_it(
    broker: Broker, site: Site, tmp_path: Path
) -> None:
    """The person sets 500 W, presses Discharge now, then moves the slider to 800 W, all while the battery's
    previous write is still paced. The replacing 800 W came last, but the discharge runs at it, the person's
    final value, not at the 1000 W stored before (a battery's mode runs after the settings queued with it)."""
    sim = site.batteries.batteries[0]
    options = site.options(batteries=1, wallboxes=False)
    options["timing"]["write_gap"] = 0.5  # a paced battery: the queue fills while a write is pending
    async with recording(broker) as recorder, bridge(broker, options, tmp_path) as runtime:
        await wait_ready(recorder, runtime, entities=40)
        battery = f"battery_{sim.ble_mac}"
        assert state_of(recorder, battery)["passive_power"] == 1000
        await recorder.publish(f"{BASE}/{battery}/mode/set", "AI")  # occupies the worker
        await recorder.wait_for(lambda: _mqtt(runtime).router.backlog() == 0, 5, "AI taken")
        await recorder.publish(f"{BASE}/{battery}/passive_power/set", "500")
        await recorder.publish(f"{BASE}/{battery}/discharge_now/set", "PRESS")
        await recorder.publish(f"{BASE}/{battery}/passive_power/set", "800")
        await recorder.wait_for(lambda: sim.mode == "Passive", 20, "the discharge")
        await _drained(recorder, runtime)
        assert sim.passive_power == 800, f"discharged at {sim.passive_power} W; the person asked for 800 W"


# --- a refused charging current or phase command leaves the charge mode as it was ----------------------


async def test_a_refused_charging_current_does_not_end_the_charge_mode(
    broker: Broker, site: Site, tmp_path: Path
) -> None:
    """3 A passes the entity's validation (0..16) but the box's minimum is 6 A: the client refuses it and
    nothing is written. Bad input loses nothing: the wallbox stays in its `pv` charge mode (a current that
    is taken puts it in `manual`, before the write, so that no charge step undoes it on its way)."""
    async with recording(broker) as recorder, bridge(broker, site.options(batteries=1), tmp_path) as runtime:
        await wait_ready(recorder, runtime, entities=60)
        garage = _garage(runtime)
        assert (await command(recorder, garage, "charge_mode", "pv"))["status"] == "applied"
        await recorder.wait_for(lambda: state_of(recorder, garage)["charge_mode"] == "pv", 5, "pv")
        setpoint = site.next_sim.setpoint
        outcome = await command(recorder, garage, "charging_current", "3", matching="3 A")
        assert outcome["status"] == "rejected", outcome
        assert "minimum" in outcome["detail"]
        assert site.next_sim.setpoint == setpoint  # nothing reached the box
        control = next(c for c in runtime.car_controls if c.wallbox.name == "Garage")
        assert control.mode == "pv", f"a refused command changed the charge mode to {control.mode!r}"


async def test_a_refused_phase_switch_does_not_end_the_charge_mode(
    broker: Broker, site: Site, tmp_path: Path
) -> None:
    """The UNITE refuses 3 phases on a single-phase installation (register 404); nothing is written, and
    the charge mode stays as it was."""
    site.unite_sim.profile = replace(site.unite_sim.profile, phases_installed=1)
    async with recording(broker) as recorder, bridge(broker, site.options(batteries=1), tmp_path) as runtime:
        await wait_ready(recorder, runtime, entities=60)
        carport = "wallbox_4711001234567890"
        await recorder.wait_for(
            lambda: runtime.wallboxes[1].link.snapshot.values.get("phases_installed") == "1",
            10,
            "the single-phase installation read",
        )
        assert (await command(recorder, carport, "charge_mode", "now"))["status"] == "applied"
        outcome = await command(recorder, carport, "phases", "3", matching="3 phases")
        assert outcome["status"] == "rejected", outcome
        control = next(c for c in runtime.car_controls if c.wallbox.name == "Carport")
        assert control.mode == "now", f"a refused command changed the charge mode to {control.mode!r}"


# --- rejection texts ---------------------------------------------------------------------------------------


async def test_a_number_in_other_digits_is_not_called_out_of_range(
    broker: Broker, site: Site, tmp_path: Path
) -> None:
    """1000 in full-width digits (as some phone keyboards type them) is rejected, and the reason must not
    say "1000 is out of range: it must be between -2500 and 2500 W", which is false (Python's float()
    reads what pydantic refused)."""
    sim = site.batteries.batteries[0]
    async with (
        recording(broker) as recorder,
        bridge(broker, site.options(batteries=1, wallboxes=False), tmp_path) as runtime,
    ):
        await wait_ready(recorder, runtime, entities=40)
        battery = f"battery_{sim.ble_mac}"
        outcome = await command(recorder, battery, "passive_power", "\uff11\uff10\uff10\uff10")
        assert outcome["status"] == "rejected"
        assert "is not a number" in outcome["detail"], outcome["detail"]
        assert state_of(recorder, battery)["passive_power"] == 1000


# --- "Clear manual schedules" and a mode chosen right after it ------------------------------------------


async def test_clear_schedules_is_not_dropped_by_a_mode_chosen_right_after_it(
    broker: Broker, site: Site, tmp_path: Path
) -> None:
    """The person presses "Clear manual schedules", then picks Auto, while a paced write is pending. Clearing
    the schedules is not a mode: both wishes are carried out, not the later one instead of the other."""
    sim = site.batteries.batteries[0]
    options = site.options(batteries=1, wallboxes=False)
    options["timing"]["write_gap"] = 0.5
    async with recording(broker) as recorder, bridge(broker, options, tmp_path) as runtime:
        await wait_ready(recorder, runtime, entities=40)
        battery = f"battery_{sim.ble_mac}"
        sim.slots[4].enabled = True
        await recorder.publish(f"{BASE}/{battery}/mode/set", "AI")  # occupies the worker
        await recorder.wait_for(lambda: _mqtt(runtime).router.backlog() == 0, 5, "AI taken")
        await recorder.publish(f"{BASE}/{battery}/clear_schedules/set", "PRESS")
        await recorder.publish(f"{BASE}/{battery}/mode/set", "Auto")
        await recorder.wait_for(lambda: sim.mode == "Auto", 20, "Auto")
        await _drained(recorder, runtime)
        replaced = _mqtt(runtime).router.dropped.replaced
        last = state_of(recorder, battery)["last_command"]
        assert not any(slot.enabled for slot in sim.slots), (
            f"the schedules were never cleared ({replaced} command(s) replaced; last command: {last})"
        )


# --- odd payloads, offline and unknown devices, retained commands, a broker outage ------------------------


ODD_PAYLOADS: list[tuple[str, bytes, str]] = [
    ("passive_power", b"", "not a number"),
    ("passive_power", b"   ", "not a number"),
    ("passive_power", b"\xff\xfe\x00", "not a number"),  # not UTF-8
    ("passive_power", b"1e400", "not a number"),  # overflows to inf
    ("passive_power", b"-1e400", "not a number"),
    ("passive_power", b"Infinity", "not a number"),
    ("passive_power", b'{"value": 500}', "not a number"),  # JSON where a number is expected
    ("passive_power", b"[500]", "not a number"),
    ("passive_power", b"9" * 200_000, "not a number"),  # huge
    ("passive_duration", b"0", "out of range"),
    ("passive_duration", b"1441", "out of range"),
    ("depth_of_discharge", b"95", "out of range"),
    ("mode", b"passive", "not one of"),  # other case
    ("mode", b"AUTO", "not one of"),
    ("mode", b"", "not one of"),
    ("charge_now", b"press", "expected 'PRESS'"),
    ("led", b"on", "expected 'ON' or 'OFF'"),
    ("led", b"\xc3\x28", "expected 'ON' or 'OFF'"),  # not UTF-8
]


async def test_odd_payloads_are_rejected_with_a_reason_and_the_session_goes_on(
    broker: Broker, site: Site, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """PASSES. Empty, non-UTF-8, huge, inf, JSON, other-case payloads: each rejected with a reason on the
    device's last command (the panel's source too), nothing reaches the battery, the stored setting is kept,
    and a good command afterwards still runs. ' Passive ' with whitespace and '-0' are accepted."""
    caplog.set_level(logging.WARNING, logger="marstek_webasto_addon.bridge.commands")
    sim = site.batteries.batteries[0]
    async with (
        recording(broker) as recorder,
        bridge(broker, site.options(batteries=1, wallboxes=False), tmp_path) as runtime,
    ):
        await wait_ready(recorder, runtime, entities=40)
        battery = f"battery_{sim.ble_mac}"
        device = _mqtt(runtime).devices_by_id()[battery]
        setmodes = len(sim.setmode_log)
        assert recorder.client is not None
        for key, payload, reason in ODD_PAYLOADS:
            rejected = _mqtt(runtime).router.dropped.rejected
            await recorder.client.publish(f"{BASE}/{battery}/{key}/set", payload, qos=1)
            await recorder.wait_for(
                lambda r=rejected: _mqtt(runtime).router.dropped.rejected > r, 10, f"{key}={payload[:20]!r}"
            )
            assert device.last_outcome is not None
            assert device.last_outcome.status == "rejected"
            assert reason in device.last_outcome.detail, (key, payload[:20], device.last_outcome.detail)
            assert len(device.last_outcome.command) < 200  # a huge payload is not echoed whole
        assert len(sim.setmode_log) == setmodes
        assert state_of(recorder, battery)["passive_power"] == 1000
        assert any("rejected passive_power" in r.getMessage() for r in caplog.records)  # in the log too
        # negative zero is zero; surrounding whitespace is not part of the value
        assert (await command(recorder, battery, "passive_power", "-0"))["status"] == "applied"
        assert state_of(recorder, battery)["passive_power"] == 0
        assert (await command(recorder, battery, "mode", " AI \n"))["status"] == "applied"
        assert sim.mode == "AI"


async def test_a_command_for_an_offline_battery_is_refused_and_not_run_when_it_returns(
    broker: Broker, site: Site, tmp_path: Path
) -> None:
    """PASSES. Offline: refused with a reason on the device; when the battery answers again, the refused
    command is not carried out late."""
    sim = site.batteries.batteries[0]
    availability = f"{BASE}/battery_{sim.ble_mac}/availability"
    async with (
        recording(broker) as recorder,
        bridge(broker, site.options(batteries=1, wallboxes=False), tmp_path) as runtime,
    ):
        await wait_ready(recorder, runtime, entities=40)
        battery = f"battery_{sim.ble_mac}"
        site.batteries.outage(0, 60)
        await recorder.wait_for(lambda: recorder.latest.get(availability) == b"offline", 20, "offline")
        outcome = await command(recorder, battery, "discharge_now", "PRESS")
        assert outcome["status"] == "rejected"
        assert "offline" in outcome["detail"]
        site.batteries.outage(0, 0)
        await recorder.wait_for(lambda: recorder.latest.get(availability) == b"online", 20, "online")
        await asyncio.sleep(1.0)
        assert sim.mode == "Auto"
        assert all(entry["mode"] != "Passive" for entry in sim.setmode_log)


async def test_commands_for_unknown_or_malformed_devices_leave_the_session_running(
    broker: Broker, site: Site, tmp_path: Path
) -> None:
    """PASSES. A removed device, an empty id segment, extra levels: counted or ignored, the session lives."""
    sim = site.batteries.batteries[0]
    async with (
        recording(broker) as recorder,
        bridge(broker, site.options(batteries=1, wallboxes=False), tmp_path) as runtime,
    ):
        await wait_ready(recorder, runtime, entities=40)
        sessions = _mqtt(runtime).sessions
        await recorder.publish(f"{BASE}/battery_000000000000/mode/set", "AI")
        await recorder.publish(f"{BASE}//mode/set", "AI")
        await recorder.publish(f"{BASE}/site/grid_power/set", "5")
        await recorder.publish(f"{BASE}/{BASE}/battery/mode/extra/set", "AI")
        await recorder.wait_for(lambda: _mqtt(runtime).router.dropped.unknown_device >= 1, 10, "unknown")
        await recorder.wait_for(lambda: _mqtt(runtime).router.dropped.rejected >= 1, 10, "site: no control")
        await recorder.publish(f"{BASE}/battery_{sim.ble_mac}/mode/set", "AI")
        await recorder.wait_for(lambda: sim.mode == "AI", 20, "the good command after them")
        assert _mqtt(runtime).sessions == sessions


async def test_a_retained_command_is_not_run_again_after_a_reconnect(
    broker: Broker, site: Site, tmp_path: Path
) -> None:
    """PASSES. A /set published with retain while the bridge runs is carried out once (live); the broker's
    retained copy, delivered again on the re-subscribe after a broker restart, is not carried out again."""
    broker.config.write_text(
        broker.config.read_text().replace("persistence false", "persistence true")
        + f"persistence_location {broker.config.parent}/\n"
    )
    broker.stop()
    broker.start()
    sim = site.batteries.batteries[0]
    battery = f"battery_{sim.ble_mac}"
    async with bridge(broker, site.options(batteries=1, wallboxes=False), tmp_path) as runtime:
        async with recording(broker) as recorder:
            await wait_ready(recorder, runtime, entities=40)
            await recorder.publish(f"{BASE}/{battery}/mode/set", "AI", retain=True)
            await recorder.wait_for(lambda: sim.mode == "AI", 20, "the live command")
            await _drained(recorder, runtime)
        runs = sum(1 for e in sim.setmode_log if e["mode"] == "AI")
        sessions = _mqtt(runtime).sessions
        async with aiomqtt.Client(broker.host, broker.port, identifier="ha") as ha:
            await ha.publish(f"{BASE}/{battery}/mode/set", "Auto", qos=1)  # a person's later choice
        await recorder.wait_for(lambda: sim.mode == "Auto", 20, "Auto")
        broker.stop()  # the retained AI survives (persistence)
        broker.start()
        await recorder.wait_for(lambda: _mqtt(runtime).sessions > sessions, 20, "reconnected")
        await asyncio.sleep(1.5)
        assert sim.mode == "Auto"
        assert sum(1 for e in sim.setmode_log if e["mode"] == "AI") == runs
        async with aiomqtt.Client(broker.host, broker.port, identifier="cleanup") as ha:
            await ha.publish(f"{BASE}/{battery}/mode/set", "", qos=1, retain=True)


async def test_a_command_running_while_the_broker_goes_away_completes_and_the_next_one_runs(
    broker: Broker, site: Site, tmp_path: Path
) -> None:
    """PASSES. A command taken just before the broker stops runs to its end (its outcome's publish fails
    quietly), the panel can still command during the outage, and after the reconnect the outcome shows and
    MQTT commands run again."""
    sim = site.batteries.batteries[0]
    options = site.options(batteries=1, wallboxes=False)
    options["timing"]["write_gap"] = 0.5
    battery = f"battery_{sim.ble_mac}"
    async with bridge(broker, options, tmp_path) as runtime:
        async with recording(broker) as recorder:
            await wait_ready(recorder, runtime, entities=40)
            sessions = _mqtt(runtime).sessions
            await recorder.publish(f"{BASE}/{battery}/mode/set", "AI")
            await recorder.wait_for(lambda: _mqtt(runtime).router.backlog() == 0, 5, "AI taken")
        broker.stop()
        await recorder.wait_for(lambda: sim.mode == "AI", 20, "AI despite the outage")
        # the panel, meanwhile
        result = await _mqtt(runtime).router.run(battery, "mode", "Manual", "panel", 20)
        assert result.outcome is not None
        assert result.outcome.ok, result
        broker.start()
        async with recording(broker) as recorder:
            await recorder.wait_for(lambda: _mqtt(runtime).sessions > sessions, 20, "reconnected")
            await recorder.wait_for(
                lambda: (
                    f"{BASE}/{battery}/state" in recorder.latest
                    and "Manual" in str(state_of(recorder, battery)["last_command"])
                ),
                20,
                "the panel's outcome published after the reconnect",
            )
            await recorder.publish(f"{BASE}/{battery}/mode/set", "Auto")
            await recorder.wait_for(lambda: sim.mode == "Auto", 20, "a command after the reconnect")


# --- BUG (design-level): add-on-side car settings cannot be changed while the wallbox is offline -----------


async def test_the_charge_mode_can_be_set_while_the_wallbox_is_offline(
    broker: Broker, site: Site, tmp_path: Path
) -> None:
    """charge_mode / charge_energy / departure are the add-on's own settings (CarControl, under /data):
    nothing is sent to the box. A person who switches the car to `off` while the box's network is down can:
    otherwise the box would come back in `now` and charge at full power against their wish. In Home
    Assistant these entities stay available with the bridge; what goes to the box is still refused."""
    async with recording(broker) as recorder, bridge(broker, site.options(batteries=1), tmp_path) as runtime:
        await wait_ready(recorder, runtime, entities=60)
        garage = _garage(runtime)
        assert (await command(recorder, garage, "charge_mode", "now"))["status"] == "applied"
        await site.next_server.stop()
        availability = f"{BASE}/{garage}/availability"
        await recorder.wait_for(lambda: recorder.latest.get(availability) == b"offline", 30, "offline")
        outcome = await command(recorder, garage, "charge_mode", "off")
        control = next(c for c in runtime.car_controls if c.wallbox.name == "Garage")
        assert outcome["status"] == "applied", outcome
        assert control.mode == "off"
        await recorder.wait_for(lambda: state_of(recorder, garage)["charge_mode"] == "off", 5, "off shown")
        refused = await command(recorder, garage, "charging_current", "10", matching="charging_current")
        assert "offline" in refused["detail"], refused
        found = configs(recorder)
        mode = next(c for t, c in found.items() if garage in t and t.endswith("/charge_mode/config"))
        current = next(c for t, c in found.items() if garage in t and t.endswith("/charging_current/config"))
        assert [a["topic"] for a in mode["availability"]] == [f"{BASE}/status"]
        assert availability in [a["topic"] for a in current["availability"]]
