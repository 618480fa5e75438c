"""The wallbox's charge modes live: MQTT commands, the simulated NEXT with a car, the capacity cap, a
person's command winning, the mode kept across a restart."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from marstek_webasto_addon.addon.car_control import PLUGGED, CarControl
from marstek_webasto_addon.devices.webasto.simulator import Car

from .mqtt_fixtures import Broker, broker, recording
from .test_bridge_mqtt import Site as BridgeSite
from .test_bridge_mqtt import bridge, command, site, state_of, wait_ready
from .webasto_fixtures import make_box

__all__ = ["broker", "make_box", "site"]
P1 = "test/p1"


def options(site: BridgeSite) -> dict[str, Any]:
    return {**site.options(), "grid_source": {"type": "mqtt", "topic": P1}, "control_interval": 1}


async def test_charge_modes_steer_the_wallbox_and_a_persons_current_wins(
    broker: Broker, site: BridgeSite, tmp_path: Path
) -> None:
    box = site.next_sim
    async with recording(broker) as recorder, bridge(broker, options(site), tmp_path) as runtime:
        await wait_ready(recorder, runtime)
        garage = str(next(d for d in runtime.wallboxes if d.name == "Garage").device_id)
        assert state_of(recorder, garage)["charge_mode"] == "manual"  # the add-on steers nothing by default
        assert (await command(recorder, garage, "charging_current", "0"))["status"] == "applied"
        await recorder.publish(P1, "300")
        assert (await command(recorder, garage, "charge_mode", "now"))["status"] == "applied"
        # now: the most the box allows, held under the capacity tariff's 2.5 kW quarter-hour average
        await recorder.wait_for(lambda: box.setpoint >= 6, 10, "charging starts")

        def steering() -> str:
            return str(state_of(recorder, garage).get("charge_control"))

        await recorder.wait_for(lambda: not steering().startswith("waiting for"), 10, "a decision")
        # "as fast as allowed: 16 A", or the capacity cap's current with its reason
        assert "allowed" in steering() or "capacity" in steering(), steering()
        assert 6 <= box.setpoint <= 16
        assert (await command(recorder, garage, "charge_mode", "off"))["status"] == "applied"
        await recorder.wait_for(lambda: box.setpoint == 0, 10, "charging pauses")
        # a person's own current wins: the charge mode steps back to manual
        outcome = await command(recorder, garage, "charging_current", "10", matching="charging current 10")
        assert outcome["status"] == "applied", outcome
        assert box.setpoint == 10
        await recorder.wait_for(lambda: state_of(recorder, garage)["charge_mode"] == "manual", 5, "manual")
        assert (await command(recorder, garage, "charge_mode", "pv"))["status"] == "applied"
        rejected = await command(recorder, garage, "charge_mode", "turbo")
        assert rejected["status"] == "rejected"
    # the mode is kept under /data: after a restart the wallbox is still in pv
    async with recording(broker) as recorder, bridge(broker, options(site), tmp_path) as runtime:
        await wait_ready(recorder, runtime)
        assert state_of(recorder, garage)["charge_mode"] == "pv"
        await recorder.publish(P1, "800")  # importing: no surplus
        await recorder.wait_for(
            lambda: "surplus" in str(state_of(recorder, garage).get("charge_control")), 10, "pv waits"
        )
        await recorder.wait_for(lambda: box.setpoint == 0, 10, "no charging without surplus")
    state = json.loads((tmp_path / "state.json").read_text())
    assert [m["mode"] for m in state["charge_modes"].values()] == ["pv"]


async def test_a_unite_switched_to_one_phase_never_draws_a_one_phase_current_on_three(
    broker: Broker, site: BridgeSite, tmp_path: Path
) -> None:
    box = site.unite_sim
    box.plug_in(Car())  # a three-phase car
    highest_w = 0.0

    async def watch() -> None:
        nonlocal highest_w
        while True:
            highest_w = max(highest_w, box.power_w)
            await asyncio.sleep(0.02)

    async with recording(broker) as recorder, bridge(broker, options(site), tmp_path) as runtime:
        await wait_ready(recorder, runtime)
        carport = str(next(d for d in runtime.wallboxes if d.name == "Carport").device_id)
        assert (await command(recorder, carport, "charging_current", "0"))["status"] == "applied"
        assert box.phases == 3
        watcher = asyncio.create_task(watch())
        await recorder.publish(P1, "300")  # importing: min+pv charges at the least it can, on one phase
        assert (await command(recorder, carport, "charge_mode", "min_pv"))["status"] == "applied"
        await recorder.wait_for(lambda: box.phases == 1 and box.setpoint == 6, 15, "6 A on one phase")
        await asyncio.sleep(1.0)
        watcher.cancel()
        assert box.phases == 1
        assert box.power_w == pytest.approx(6 * 230, rel=0.05)
        # never the decided 6 A on the three phases the box had (4.1 kW)
        assert highest_w <= 6 * 230 * 1.05
        steering = str(state_of(recorder, carport).get("charge_control"))
        assert "minimum 6 A" in steering, steering
        # a person's phases win, as their current does: the charge mode steps back
        assert (await command(recorder, carport, "phases", "3"))["status"] == "applied"
        await recorder.wait_for(lambda: state_of(recorder, carport)["charge_mode"] == "manual", 5, "manual")
        await asyncio.sleep(1.5)
        assert box.phases == 3


async def test_a_persons_current_wins_over_a_charge_mode_write_already_on_its_way(
    broker: Broker, site: BridgeSite, tmp_path: Path
) -> None:
    # The controller has decided (its write is scheduled, not yet sent) when a person's current arrives:
    # the person's current is the one the box keeps.
    box = site.next_sim
    async with recording(broker) as recorder, bridge(broker, options(site), tmp_path) as runtime:
        await wait_ready(recorder, runtime)
        garage = next(d for d in runtime.wallboxes if d.name == "Garage")
        control = garage.charge
        assert isinstance(control, CarControl)
        assert (await garage.execute("charging_current", 0)).status.value == "applied"
        await recorder.publish(P1, "300")
        assert control.set_mode("now") is None
        decision = control.step()  # "now": the box's maximum, written by a task of its own
        assert decision is not None
        assert decision.charge
        assert decision.current_a >= 6
        outcome = await garage.execute("charging_current", 8, source="test")
        assert outcome.status.value == "applied", outcome
        await asyncio.sleep(1.0)  # room for a late write to land
        assert control.mode == "manual"
        assert box.setpoint == 8


async def test_plan_mode_gives_the_planner_the_cars_session_and_says_early_when_it_cannot_be_met(
    broker: Broker, site: BridgeSite, tmp_path: Path
) -> None:
    planned = {**options(site), "optimiser": {"enabled": True, "input_stale_after": 30}}
    async with recording(broker) as recorder, bridge(broker, planned, tmp_path) as runtime:
        await wait_ready(recorder, runtime)
        garage = str(next(d for d in runtime.wallboxes if d.name == "Garage").device_id)
        optimiser = runtime.optimiser
        assert optimiser is not None

        async def feed_meter() -> None:
            await recorder.publish(P1, "400")

        await feed_meter()
        # a departure well ahead, whatever the time the test runs (the default, 07:30, is 23 minutes
        # away at 07:07, and 12 kWh cannot be met then)
        later = (optimiser.clock.now() + timedelta(hours=6)).strftime("%H:%M")
        assert (await command(recorder, garage, "departure", later))["status"] == "applied"
        assert (await command(recorder, garage, "charge_energy", "12"))["status"] == "applied"
        assert (await command(recorder, garage, "charge_mode", "plan"))["status"] == "applied"

        def plan_car() -> Any:
            plan = optimiser.live.plan
            return plan.car[0] if plan is not None and plan.car else None

        await recorder.wait_for(lambda: plan_car() is not None, 15, "the car in the plan")
        session = plan_car()
        assert session.session.energy_kwh == 12.0  # the NEXT's session so far has charged nothing
        assert session.met
        control = next(d for d in runtime.wallboxes if d.name == "Garage").charge
        assert isinstance(control, CarControl)
        inputs = control.inputs()
        assert inputs is not None
        assert inputs.plan_slack  # 12 kWh in 6 h at up to 11 kW: the capacity cap may hold the car back
        await recorder.wait_for(
            lambda: "kWh planned by" in str(state_of(recorder, garage).get("charge_control")), 10, "shown"
        )
        # 100 kWh by a departure 30 minutes from now cannot be met: the user sees it at once
        soon = (optimiser.clock.now() + timedelta(minutes=30)).strftime("%H:%M")
        assert (await command(recorder, garage, "charge_energy", "100"))["status"] == "applied"
        assert (await command(recorder, garage, "departure", soon))["status"] == "applied"
        await feed_meter()
        await recorder.wait_for(
            lambda: "the plan misses" in str(state_of(recorder, garage).get("charge_control")), 15, "missing"
        )
        missing = plan_car()
        assert missing.missing_kwh > 90
        inputs = control.inputs()
        assert inputs is not None
        assert not inputs.plan_slack  # no slack: the plan's power goes through, the departure first
        # meanwhile the car charges as fast as allowed: the plan puts all it can before the departure
        await recorder.wait_for(lambda: site.next_sim.setpoint >= 6, 15, "charging")


async def test_the_cars_stays_are_logged_and_plan_mode_plans_for_the_one_it_usually_makes(
    broker: Broker, site: BridgeSite, tmp_path: Path
) -> None:
    planned = {**options(site), "optimiser": {"enabled": True, "input_stale_after": 30}}
    box = site.next_sim
    box.unplug()
    async with recording(broker) as recorder, bridge(broker, planned, tmp_path) as runtime:
        await wait_ready(recorder, runtime)
        garage = next(d for d in runtime.wallboxes if d.name == "Garage")
        control = next(c for c in runtime.car_controls if c.wallbox is garage)

        async def cable(plugged: bool) -> None:
            await recorder.wait_for(
                lambda: (garage.link.snapshot.values.get("cable_state") in PLUGGED) is plugged,
                10,
                "the cable",
            )
            await asyncio.sleep(1.5)  # a control step on it

        await cable(False)  # the wallbox read with no car: the next plug-in is an arrival
        box.plug_in(Car())
        await cable(True)
        # it charges a little; the NEXT's register 1502 reads 0 meanwhile (the last session's energy): the
        # stay's energy is the energy meter's since the plug-in
        meter = garage.link.snapshot.number("energy_total")
        assert meter is not None
        device = str(garage.device_id)
        assert (await command(recorder, device, "charging_current", "16"))["status"] == "applied"
        await recorder.wait_for(
            lambda: (garage.link.snapshot.number("energy_total") or 0) > meter + 0.002, 15, "charging"
        )
        taken = control.stay_kwh()
        assert taken is not None
        assert taken > 0.002
        box.unplug()
        await recorder.wait_for(lambda: len(control.stays) == 1, 10, "the stay logged")
        assert control.stays[0].departure > control.stays[0].arrival
        assert control.stays[0].energy_kwh >= taken
    # The log is kept under /data. Instead of today's short stay, five on the days before, as a week would
    # have left them: each began around this time of day.
    path = tmp_path / "state.json"
    state = json.loads(path.read_text())
    (key,) = state["charge_modes"]
    assert len(state["charge_modes"][key]["stays"]) == 1
    now = datetime.now()
    usual = now - timedelta(minutes=30) if now.hour >= 1 else now + timedelta(minutes=10)
    state["charge_modes"][key]["stays"] = [
        [(usual - timedelta(days=d)).isoformat(), (usual - timedelta(days=d, hours=-12)).isoformat(), 24.0]
        for d in range(5, 0, -1)
    ] + [
        # written with a UTC offset (by hand): read as local time
        [
            (usual - timedelta(days=6)).astimezone(UTC).isoformat(),
            (usual - timedelta(days=5)).isoformat(),
            24.0,
        ],
        ["garbage"],
        [now.isoformat(), (now - timedelta(hours=1)).isoformat(), 5.0],
        [now.isoformat(), "x", 1],
    ]
    path.write_text(json.dumps(state))  # (the last three, damaged by hand, are left out)
    async with recording(broker) as recorder, bridge(broker, planned, tmp_path) as runtime:
        await wait_ready(recorder, runtime)
        garage = next(d for d in runtime.wallboxes if d.name == "Garage")
        optimiser = runtime.optimiser
        assert optimiser is not None
        assert (await command(recorder, str(garage.device_id), "charge_mode", "plan"))["status"] == "applied"
        await recorder.publish(P1, "400")

        def plan_car() -> Any:
            plan = optimiser.live.plan
            return plan.car[0].session if plan is not None and plan.car else None

        # No car, but it usually comes about now: the plan keeps room for its share of a stay (6 of 28 days)
        await recorder.wait_for(lambda: plan_car() is not None, 15, "the expected car in the plan")
        expected = plan_car()
        assert expected.expected
        assert timedelta(0) < expected.arrival - now <= timedelta(minutes=30)  # the next quarter-hour
        assert expected.energy_kwh == pytest.approx(24.0 * 6 / 28, abs=0.01)
        await recorder.wait_for(
            lambda: "expected about" in str(state_of(recorder, str(garage.device_id)).get("charge_control")),
            10,
            "shown",
        )
        # the wallbox gets no plan for a car that is not there
        control = next(c for c in runtime.car_controls if c.wallbox is garage)
        assert control.planned() is None
        # the car comes: its own session replaces the expected one, and the wallbox follows the plan
        box.plug_in(Car())
        await recorder.wait_for(lambda: plan_car() is not None and not plan_car().expected, 15, "the car")
        await recorder.wait_for(lambda: control.planned() is not None, 15, "the wallbox's plan")
