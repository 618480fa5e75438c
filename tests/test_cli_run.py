"""`python -m marstek_webasto_addon run --options PATH` as a process, against a real broker."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import SimFactory
from .mqtt_fixtures import Broker, broker, recording

__all__ = ["broker"]
pytestmark = pytest.mark.timeout(60)
CLI = [sys.executable, "-m", "marstek_webasto_addon"]


async def run_cli(*args: str, timeout: float = 30) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode()


@pytest.mark.parametrize(
    ("options", "messages"),
    [
        (
            {"batteries": [{"name": "A", "host": "not a host!"}]},
            ["batteries[0].host: must be an IP address or a host name"],
        ),
        (
            {
                "wallboxes": [{"name": "W", "host": "127.0.0.1", "model": "nxt"}],
                "mqtt": {"host": "127.0.0.1", "port": 0},
            },
            ["wallboxes[0].model: must be one of 'next' or 'unite'", "mqtt.port: must be >= 1"],
        ),
        ({"batteries": [{"name": "A", "host": "127.0.0.11"}], "colour": "red"}, ["colour: unknown option"]),
        (
            {"batteries": [{"name": "A", "host": "127.0.0.11"}]},
            ["mqtt.host: required when not running as a Home Assistant add-on"],
        ),
    ],
)
async def test_bad_options_stop_before_any_device_is_contacted(
    tmp_path: Path, make_sim: SimFactory, udp_port: int, options: dict[str, Any], messages: list[str]
) -> None:
    sim = await make_sim(1)
    for battery in options.get("batteries", []):
        battery["port"] = udp_port
    path = tmp_path / "options.json"
    path.write_text(json.dumps(options))
    code, output = await run_cli("run", "--options", str(path))
    assert code == 2
    for message in messages:
        assert message in output
    assert sim.batteries[0].requests == 0  # nothing was sent to any device


async def test_options_file_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "options.json"
    path.write_text("{batteries: [")
    code, output = await run_cli("run", "--options", str(path))
    assert code == 2
    assert "is not valid JSON" in output


async def test_run_bridges_devices_and_stops_cleanly_on_sigterm(
    broker: Broker, make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(1, socs=[64.0])
    host, port = sim.addresses[0]
    # exactly the shape the Supervisor writes from the options tab
    options = {
        "batteries": [{"name": "FaseA", "host": host, "port": port}],
        "wallboxes": [],
        "mqtt": {"host": broker.host, "port": broker.port, "username": "", "password": ""},
        "discovery_prefix": "homeassistant",
        "base_topic": "marstek_webasto",
        "marstek_bind": "127.0.0.1",
        "battery_poll_interval": 1,
        "log_level": "info",
        "timing": {"request_gap": 0.01, "write_gap": 0.05, "timeout": 0.3, "verify_delay": 0.2},
    }
    path = tmp_path / "options.json"
    path.write_text(json.dumps(options))
    async with recording(broker) as recorder:
        process = await asyncio.create_subprocess_exec(
            *CLI,
            "run",
            "--options",
            str(path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        # Drain its output as it comes: a full pipe would block the process's logging, and so its exit.
        assert process.stdout is not None
        output = asyncio.create_task(process.stdout.read())
        state = f"marstek_webasto/battery_{sim.batteries[0].ble_mac}/state"
        await recorder.wait_for(lambda: state in recorder.latest, 20, "the battery's state")
        soc = recorder.json(state)
        assert isinstance(soc, dict)
        assert soc["soc"] == 64
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            raise AssertionError(f"no exit 15 s after SIGTERM:\n{(await output).decode()}") from None
        await output
        await recorder.wait_for(
            lambda: recorder.latest.get("marstek_webasto/status") == b"offline", 5, "offline on a clean stop"
        )
    assert process.returncode == 0
    saved = json.loads((tmp_path / "state.json").read_text())
    assert sim.batteries[0].ble_mac in json.dumps(saved["identities"])  # learned identity kept under /data
