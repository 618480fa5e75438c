"""Each configured wallbox is one device in Home Assistant: no two boxes may end up under one identity.

A NEXT has no serial number to go by: it is known by its host and unit id. Two NEXT boxes behind one host
(a Modbus proxy, port forwards) on different ports shared that identity: Home Assistant showed one wallbox
and a command meant for one box reached the other. Such boxes are now told apart by their port as well;
every other box keeps the identity its entities have always had.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from marstek_webasto_addon.devices.webasto.registers import WallboxModel

from .mqtt_fixtures import Broker, broker, recording
from .test_bridge_mqtt import BASE, bridge
from .webasto_fixtures import BoxFactory, make_box

__all__ = ["broker", "make_box"]
pytestmark = pytest.mark.timeout(60)


def two_boxes(port_a: int, port_b: int) -> dict[str, Any]:
    return {
        "wallboxes": [
            {"name": "Garage", "host": "127.0.0.1", "port": port_a, "model": "next"},
            {"name": "Carport", "host": "127.0.0.1", "port": port_b, "model": "next"},
        ],
        "wallbox_poll_interval": 1,
    }


async def test_two_next_boxes_behind_one_host_are_two_devices_each_commanded_alone(
    broker: Broker, make_box: BoxFactory, tmp_path: Path
) -> None:
    garage_sim, garage = await make_box(WallboxModel.NEXT)
    carport_sim, carport = await make_box(WallboxModel.NEXT)
    async with recording(broker) as recorder, bridge(broker, two_boxes(garage.port, carport.port), tmp_path):
        ids = [f"wallbox_127_0_0_1_255_{garage.port}", f"wallbox_127_0_0_1_255_{carport.port}"]
        await recorder.wait_for(
            lambda: all(f"{BASE}/{i}/state" in recorder.latest for i in ids), 20, "both boxes' states"
        )
        before = garage_sim.setpoint
        await recorder.publish(f"{BASE}/{ids[1]}/charging_current/set", "10")
        await recorder.wait_for(lambda: carport_sim.setpoint == 10, 20, "Carport at 10 A")
        assert garage_sim.setpoint == before  # the command reached only the box it was meant for


async def test_a_next_beside_a_unite_on_one_host_keeps_its_identity(
    broker: Broker, make_box: BoxFactory, tmp_path: Path
) -> None:
    # A UNITE is known by its serial number: a NEXT beside it on one host shares nothing with it, and keeps
    # the id its entities have always had.
    _, garage = await make_box(WallboxModel.NEXT)
    unite_sim, unite = await make_box(WallboxModel.UNITE)
    options = two_boxes(garage.port, unite.port)
    options["wallboxes"][1]["model"] = "unite"
    async with recording(broker) as recorder, bridge(broker, options, tmp_path):
        ids = ["wallbox_127_0_0_1_255", f"wallbox_{unite_sim.profile.serial}"]
        await recorder.wait_for(
            lambda: all(f"{BASE}/{i}/state" in recorder.latest for i in ids), 20, "both boxes' states"
        )
