"""`kill -9` of the add-on: nothing it sent outlives it by more than 15 minutes.

The add-on runs as a real process (`run`), the battery and wallbox simulators in the test. The battery's
simulated time runs 60 times faster, so its 15 minute countdown passes in 15 s; the wallbox's fail-safe
runs in real time.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from marstek_webasto_addon.bridge.holds import LEASE_S
from marstek_webasto_addon.devices.webasto.registers import WallboxModel

from .conftest import SimFactory, until
from .mqtt_fixtures import Broker, broker, recording
from .test_cli_run import CLI
from .webasto_fixtures import BoxFactory, make_box

__all__ = ["broker", "make_box"]
pytestmark = pytest.mark.timeout(120)
SPEED = 60.0
BASE = "marstek_webasto"


async def test_after_kill_9_the_battery_and_the_wallbox_fall_back_by_themselves(
    broker: Broker, make_sim: SimFactory, make_box: BoxFactory, tmp_path: Path
) -> None:
    sim = await make_sim(1, socs=[80.0], speed=SPEED)
    box, server = await make_box(WallboxModel.NEXT)
    box.failsafe_timeout = 10
    host, port = sim.addresses[0]
    options = {
        "batteries": [{"name": "FaseA", "host": host, "port": port}],
        "wallboxes": [{"name": "Carport", "host": "127.0.0.1", "port": server.port, "model": "next"}],
        "mqtt": {"host": broker.host, "port": broker.port},
        "marstek_bind": "127.0.0.1",
        "battery_poll_interval": 1,
        "wallbox_poll_interval": 1,
        "timing": {"request_gap": 0.01, "write_gap": 0.05, "timeout": 0.3, "verify_delay": 0.2},
    }
    path = tmp_path / "options.json"
    path.write_text(json.dumps(options))
    battery = sim.batteries[0]
    device = f"battery_{battery.ble_mac}"
    async with recording(broker) as recorder:
        process = await asyncio.create_subprocess_exec(
            *CLI,
            "run",
            "--options",
            str(path),
            *("--state-dir", str(tmp_path)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert process.stdout is not None
        output = asyncio.create_task(process.stdout.read())
        try:
            await recorder.wait_for(lambda: f"{BASE}/{device}/state" in recorder.latest, 20, "battery state")
            await recorder.wait_for(
                lambda: any(
                    t.startswith(f"{BASE}/wallbox_") and t.endswith("/state") for t in recorder.latest
                ),
                20,
                "wallbox state",
            )
            wallbox_state = next(
                t for t in recorder.latest if t.startswith(f"{BASE}/wallbox_") and t.endswith("/state")
            )
            wallbox = wallbox_state.split("/")[1]
            # a person asks for four hours of discharging, and 12 A for the car
            await recorder.publish(f"{BASE}/{device}/passive_power/set", "800")
            await recorder.publish(f"{BASE}/{device}/passive_duration/set", "240")
            await recorder.publish(f"{BASE}/{device}/discharge_now/set", "PRESS")
            await recorder.publish(f"{BASE}/{wallbox}/charging_current/set", "12")
            await until(lambda: battery.mode == "Passive" and battery.passive_power == 800, 30)
            await until(lambda: box.setpoint == 12, 30)
            assert all(
                entry.get("passive_cfg", {}).get("cd_time", 0) <= LEASE_S for entry in battery.setmode_log
            )
            saved = json.loads((tmp_path / "state.json").read_text())
            hold = saved["holds"][device]
            assert hold["until"] - hold["started"] == pytest.approx(240 * 60)  # kept by the add-on
        finally:
            process.kill()  # kill -9: no clean stop, no goodbye
            await process.wait()
            await output
    killed = time.monotonic()
    assert not box.in_failsafe
    await until(lambda: box.in_failsafe, box.failsafe_timeout + 10)
    wallbox_s = time.monotonic() - killed
    await until(lambda: battery.mode != "Passive", LEASE_S / SPEED + 10)
    battery_s = (time.monotonic() - killed) * SPEED
    assert battery_s <= LEASE_S + 10 * SPEED
    print(f"kill -9: wallbox fail-safe after {wallbox_s:.1f} s, battery free after {battery_s / 60:.1f} min")
