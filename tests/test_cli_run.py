"""`python -m marstek_webasto_addon run --options PATH` as a process, against a real broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from marstek_webasto_addon.addon.options import MQTT_HOST_REQUIRED
from marstek_webasto_addon.cli.run import StopOnce

from .conftest import SimFactory
from .mqtt_fixtures import Broker, broker, recording

__all__ = ["broker"]
pytestmark = pytest.mark.timeout(60)
CLI = [sys.executable, "-m", "marstek_webasto_addon"]


def outside_the_addon(state_home: Path) -> dict[str, str]:
    """This machine's environment as a user's shell has it: no Supervisor, a state folder of its own."""
    hidden = ("SUPERVISOR_TOKEN", "MWA_MQTT_HOST", "MWA_MQTT_PORT")
    return {k: v for k, v in os.environ.items() if k not in hidden} | {"XDG_STATE_HOME": str(state_home)}


async def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *CLI, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode()


@pytest.mark.parametrize(
    ("options", "messages"),
    [
        (
            {"batteries": [{"name": "A", "host": "not a host!"}]},
            [
                "batteries[0].host: must be an IP address or a host name (got 'not a host!')",
                MQTT_HOST_REQUIRED,
            ],
        ),
        (
            {
                "wallboxes": [{"name": "W", "host": "127.0.0.1", "model": "nxt"}],
                "mqtt": {"host": "127.0.0.1", "port": 0},
            },
            [
                "wallboxes[0].model: 'nxt' is not one of the choices: auto, next or unite",
                "mqtt.port: 0 is out of range: it must be between 1 and 65535",
            ],
        ),
        (
            {"batteries": [{"name": "A", "host": "127.0.0.11"}], "colour": "red"},
            ["colour: unknown option; check the spelling", MQTT_HOST_REQUIRED],
        ),
        ({"batteries": [{"name": "A", "host": "127.0.0.11"}]}, [MQTT_HOST_REQUIRED]),
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
    code, output = await run_cli("run", "--options", str(path), env=outside_the_addon(tmp_path / "state"))
    assert code == 2
    for message in messages:
        assert f"error: options: {message}\n" in output
    assert sim.batteries[0].requests == 0  # nothing was sent to any device


async def test_options_file_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "options.json"
    path.write_text("{batteries: [")
    code, output = await run_cli("run", "--options", str(path), env=outside_the_addon(tmp_path / "state"))
    assert code == 2
    assert "is not valid JSON" in output


async def test_a_state_dir_that_cannot_be_written_stops_run_before_anything_else(
    tmp_path: Path, make_sim: SimFactory
) -> None:
    sim = await make_sim(1)
    host, port = sim.addresses[0]
    options = tmp_path / "options.json"
    options.write_text(
        json.dumps({"batteries": [{"name": "A", "host": host, "port": port}], "mqtt": {"host": "127.0.0.1"}})
    )
    # Under a plain file no folder can be made, for root too (a read-only mode would not stop root).
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    code, output = await run_cli(
        "run",
        "--options",
        str(options),
        "--state-dir",
        str(blocker / "state"),
        env=outside_the_addon(tmp_path),
    )
    assert code == 1
    assert f"error: the state directory {blocker / 'state'} is not usable (" in output
    assert "choose another with --state-dir" in output
    assert sim.batteries[0].requests == 0


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
    clone = tmp_path / "clone"  # where a user keeps the options: a clone of this repository, say
    clone.mkdir()
    path = clone / "options.json"
    path.write_text(json.dumps(options))
    state_home = tmp_path / "xdg-state"  # the user's state folder; the default state dir is made in it
    async with recording(broker) as recorder:
        process = await asyncio.create_subprocess_exec(
            *CLI,
            "run",
            "--options",
            str(path),
            env=outside_the_addon(state_home),
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
    saved = json.loads((state_home / "marstek_webasto_addon" / "state.json").read_text())
    assert sim.batteries[0].ble_mac in json.dumps(saved["identities"])  # the learned identity is kept
    assert sorted(p.name for p in clone.iterdir()) == ["options.json"]  # and nothing lands beside the options


async def test_a_second_stop_signal_does_not_cut_the_first_stop_short() -> None:
    # s6 may signal again, a person may press Ctrl-C twice: the stop that puts the devices back in their
    # safe state must run to its end.
    cleaned = asyncio.Event()

    async def main() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0.2)  # the stop: Auto to the batteries, leases, Modbus released
            cleaned.set()
            raise

    task = asyncio.create_task(main())
    await asyncio.sleep(0)
    stop = StopOnce(task)
    stop()
    await asyncio.sleep(0.05)
    stop()  # during the stop
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert cleaned.is_set()


async def test_one_bad_battery_entry_is_left_out_and_the_rest_run(
    broker: Broker, make_sim: SimFactory, tmp_path: Path
) -> None:
    # A typo in one battery's entry left every device unmanaged. Now that entry is left out (said in the
    # log), the others run, and the entities Home Assistant has of the one left out stay, shown offline.
    sim = await make_sim(1, socs=[64.0])
    host, port = sim.addresses[0]
    options = {
        "batteries": [
            {"name": "FaseA", "host": host, "port": port},
            {"name": "FaseB", "host": "not a host!", "port": port},
        ],
        "mqtt": {"host": broker.host, "port": broker.port},
        "marstek_bind": "127.0.0.1",
        "battery_poll_interval": 1,
        "timing": {"request_gap": 0.01, "write_gap": 0.05, "timeout": 0.3, "verify_delay": 0.2},
    }
    path = tmp_path / "options.json"
    path.write_text(json.dumps(options))
    earlier = "battery_0a0b0c0d0e0f"  # FaseB's, from before the typo
    discovery = f"homeassistant/sensor/marstek_webasto_{earlier}/soc/config"
    async with recording(broker) as recorder:
        await recorder.publish(discovery, json.dumps({"name": "SOC"}), retain=True)
        await recorder.publish(f"marstek_webasto/{earlier}/availability", "online", retain=True)
        process = await asyncio.create_subprocess_exec(
            *CLI,
            "run",
            "--options",
            str(path),
            env=outside_the_addon(tmp_path / "state"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert process.stdout is not None
        output = asyncio.create_task(process.stdout.read())
        try:
            state = f"marstek_webasto/battery_{sim.batteries[0].ble_mac}/state"
            await recorder.wait_for(lambda: state in recorder.latest, 20, "the good battery's state")
            await recorder.wait_for(
                lambda: recorder.latest.get(f"marstek_webasto/{earlier}/availability") == b"offline",
                10,
                "the left-out battery shown offline",
            )
            await asyncio.sleep(3)  # past the discovery scan, when stale discovery is cleared
            assert recorder.latest.get(discovery)  # its entities are kept
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 15)
        text = (await output).decode()
    assert "error: options: batteries[1].host: must be an IP address or a host name" in text
    assert "left out until corrected: batteries[1]; the other devices run" in text
    assert process.returncode == 0
