"""Each configured wallbox is one device in Home Assistant: no two boxes may end up under one identity.

A NEXT has no serial number to go by: it is known by its host and unit id. Two NEXT boxes behind one host
(a Modbus proxy, port forwards) on different ports would share that identity, so Home Assistant would show
one wallbox and a command meant for one box would reach the other.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from marstek_webasto_addon.addon.options import OptionsError, parse_options
from marstek_webasto_addon.devices.webasto.registers import WallboxModel

from .mqtt_fixtures import Broker, broker, recording
from .test_cli_options import CLI, PREFIX, outside_the_addon
from .webasto_fixtures import BoxFactory, make_box

__all__ = ["broker", "make_box"]
pytestmark = pytest.mark.timeout(60)


def two_boxes(port_a: int, port_b: int, **second: Any) -> dict[str, Any]:
    return {
        "wallboxes": [
            {"name": "Garage", "host": "127.0.0.1", "port": port_a, "model": "next"},
            {"name": "Carport", "host": "127.0.0.1", "port": port_b, "model": "next", **second},
        ],
        "mqtt": {"host": "127.0.0.1"},
        "wallbox_poll_interval": 1,
    }


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(OptionsError) as caught:
        parse_options(data, broker_elsewhere=False)
    return caught.value.problems


def test_two_next_boxes_on_one_host_and_unit_id_are_refused_naming_both() -> None:
    assert problems_of(two_boxes(1502, 1503)) == [
        "wallboxes[0] and wallboxes[1]: two wallboxes on one host need different unit_id values (Garage and "
        "Carport are both 127.0.0.1, unit_id 255); a NEXT is known by its host and unit id, so Home "
        "Assistant would see one wallbox and a command for one would reach the other (a UNITE, known by "
        "its serial number, may share them: set its model to unite)"
    ]
    # a host name is one host however it is capitalised
    spelled = two_boxes(1502, 1503, host="Proxy.local")
    spelled["wallboxes"][0]["host"] = "proxy.local"
    [problem] = problems_of(spelled)
    assert problem.startswith("wallboxes[0] and wallboxes[1]:")
    # What keeps the boxes apart is accepted: another unit id, or a UNITE (known by its serial number).
    for fine in (two_boxes(1502, 1503, unit_id=1), two_boxes(1502, 1503, model="unite")):
        assert len(parse_options(fine, broker_elsewhere=False).wallboxes) == 2


async def test_the_bridge_refuses_to_run_two_boxes_under_one_identity(
    broker: Broker, make_box: BoxFactory, tmp_path: Path
) -> None:
    """Two NEXT simulators behind 127.0.0.1, as behind port forwards: the bridge says why it does not
    start, announces no wallbox to Home Assistant and sends nothing to either box."""
    _, garage = await make_box(WallboxModel.NEXT)
    _, carport = await make_box(WallboxModel.NEXT)
    options = two_boxes(garage.port, carport.port) | {"mqtt": {"host": broker.host, "port": broker.port}}
    file = tmp_path / "options.json"
    file.write_text(json.dumps(options))
    command = ("run", "--options", str(file), "--state-dir", str(tmp_path / "data"), "--panel-port", "0")
    async with recording(broker) as recorder:
        process = await asyncio.create_subprocess_exec(
            *CLI,
            *command,
            env=outside_the_addon(tmp_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert process.stdout is not None
        output = asyncio.create_task(process.stdout.read())

        def wallboxes_announced() -> list[str]:
            return [
                topic
                for topic in recorder.latest
                if topic.startswith("homeassistant/") and "_wallbox_" in topic.split("/")[2]
            ]

        try:
            # Before the fix the bridge ran, and announced both boxes under one device.
            await recorder.wait_for(
                lambda: process.returncode is not None or bool(wallboxes_announced()), 30, "an outcome"
            )
            devices = sorted({topic.split("/")[2] for topic in wallboxes_announced()})
            assert process.returncode is not None, f"the bridge runs, with the wallbox devices {devices}"
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), 15)
        text = (await output).decode()
        assert process.returncode == 2, text
        [problem] = [line.removeprefix(PREFIX) for line in text.splitlines() if PREFIX in line]
        assert problem.startswith("wallboxes[0] and wallboxes[1]:"), problem
        assert wallboxes_announced() == []
    assert (garage.connections, carport.connections) == (0, 0)
