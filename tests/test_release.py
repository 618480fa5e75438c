"""After a bridge that did not stop cleanly: `release` hands RS485 control back on every battery the options
put on Modbus (simulated Venus batteries serving Modbus on 127.0.0.1), and the s6 finish script runs it."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from marstek_webasto_addon.cli import release
from marstek_webasto_addon.devices.marstek.simulator.device import SimulatedBattery

from .conftest import SimFactory, free_port
from .test_addon_s6 import FINISH, environment

pytestmark = pytest.mark.timeout(60)


def forced_discharge(battery: SimulatedBattery, watts: int = 800) -> None:
    """What a bridge that died under a lease leaves: RS485 control on, a forced discharge running."""
    battery.rs485_control, battery.force_mode, battery.force_discharge_w = True, 2, watts


def on_modbus(name: str, port: int, transport: str = "modbus") -> dict[str, Any]:
    return {"name": name, "host": "127.0.0.1", "transport": transport, "modbus_port": port}


def options_file(tmp_path: Path, batteries: list[dict[str, Any]]) -> Path:
    path = tmp_path / "options.json"
    path.write_text(json.dumps({"batteries": batteries}))
    return path


async def run_release(path: Path, budget: float = 5.0) -> int:
    return await release.release(argparse.Namespace(options=path, budget=budget))


async def test_control_left_on_is_released_and_other_batteries_are_left_alone(
    make_sim: SimFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim = await make_sim(3)
    left_on, idle, local_api = sim.batteries
    forced_discharge(left_on)
    forced_discharge(local_api)  # on the Local API only: the options never put it on Modbus
    first, second = await sim.serve_modbus(0), await sim.serve_modbus(1)
    third = await sim.serve_modbus(2)
    idle.mode = "AI"
    path = options_file(
        tmp_path,
        [
            on_modbus("FaseA", first.port),
            on_modbus("FaseB", second.port, transport="auto"),
            {"name": "FaseC", "host": "127.0.0.1", "port": sim.addresses[0][1], "modbus_port": third.port},
        ],
    )
    with caplog.at_level(logging.INFO):
        assert await run_release(path) == 0
    assert (left_on.rs485_control, left_on.force_mode, left_on.force_discharge_w) == (False, 0, 0)
    assert (idle.rs485_control, idle.mode) == (False, "AI")
    assert local_api.rs485_control  # transport udp: not the add-on's to release over Modbus
    assert "FaseA (127.0.0.1:" in caplog.text
    assert "RS485 control released" in caplog.text
    assert "FaseB (127.0.0.1:" in caplog.text
    assert "not in RS485 control" in caplog.text
    assert "FaseC" not in caplog.text


async def test_a_battery_that_cannot_be_reached_fails_the_release_and_the_others_are_still_released(
    make_sim: SimFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim = await make_sim(1)
    forced_discharge(sim.batteries[0])
    server = await sim.serve_modbus(0)
    path = options_file(
        tmp_path,
        [on_modbus("Gone", free_port(socket.SOCK_STREAM)), on_modbus("FaseA", server.port)],
    )
    assert await run_release(path) == release.EXIT_NOT_RELEASED
    assert not sim.batteries[0].rs485_control
    assert "Gone (127.0.0.1:" in caplog.text
    assert "RS485 control may still be on" in caplog.text


async def test_a_battery_entry_that_does_not_validate_is_an_error_that_names_the_problem(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = options_file(tmp_path, [{"name": "FaseA", "transport": "modbus"}])  # no address at all
    assert await run_release(path) == release.EXIT_NOT_RELEASED
    assert "batteries[0]: cannot be released" in caplog.text
    assert "needs modbus_host" in caplog.text
    path.write_text("{not json")
    assert await run_release(path) == release.EXIT_BAD_OPTIONS


async def test_an_invalid_option_elsewhere_does_not_stop_the_release(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    # The Supervisor writes the options when they are saved, not when the add-on restarts: the dead
    # bridge's batteries are still named, whatever else no longer validates.
    sim = await make_sim(1)
    forced_discharge(sim.batteries[0])
    server = await sim.serve_modbus(0)
    path = tmp_path / "options.json"
    path.write_text(json.dumps({"batteries": [on_modbus("FaseA", server.port)], "control_interval": -5}))
    assert await run_release(path) == 0
    assert not sim.batteries[0].rs485_control


@pytest.mark.parametrize(("exit_code", "signal_number", "released"), [("1", "0", True), ("0", "0", False)])
async def test_the_finish_script_releases_control_only_after_a_bridge_that_did_not_stop_cleanly(
    make_sim: SimFactory, tmp_path: Path, exit_code: str, signal_number: str, released: bool
) -> None:
    sim = await make_sim(1)
    battery = sim.batteries[0]
    forced_discharge(battery)
    server = await sim.serve_modbus(0)
    env = environment(tmp_path, {"batteries": [on_modbus("FaseA", server.port)]}, None)
    halt = tmp_path / "halt"
    halt.write_text("#!/bin/sh\nexit 0\n")
    halt.chmod(0o755)
    env.update({"MWA_S6_RESULTS": str(tmp_path), "MWA_S6_HALT": str(halt)})
    # The simulator answers from this event loop: the script runs alongside it, not blocking it.
    finish = await asyncio.create_subprocess_exec(
        "bashio", str(FINISH), exit_code, signal_number, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(finish.communicate(), 40)
    assert finish.returncode == 0, output.decode()
    assert battery.rs485_control is not released
    assert ("RS485 control released" in output.decode()) is released
