"""The add-on's s6 scripts run for real, with a stand-in bashio (tests/s6/bin/bashio) on PATH.

The run script gets the broker credentials the way the Supervisor hands them over (`bashio::services mqtt`),
starts the bridge against a real Mosquitto that insists on those credentials, and the bridge publishes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from marstek_webasto_addon.addon.manifest import SHOWN_DEFAULTS

from .conftest import SimFactory, free_port
from .mqtt_fixtures import Broker, password_broker, recording

pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).resolve().parent.parent
S6 = ROOT / "rootfs" / "etc" / "s6-overlay"
RUN = S6 / "s6-rc.d" / "marstek-webasto" / "run"
FINISH = S6 / "s6-rc.d" / "marstek-webasto" / "finish"
INIT = S6 / "scripts" / "init-marstek-webasto"
SHIM = ROOT / "tests" / "s6" / "bin"
PASSWORD = "Zq8" * 21 + "x"  # 64 characters, like the Mosquitto add-on's generated one


async def start(env: dict[str, str]) -> tuple[asyncio.subprocess.Process, asyncio.Task[bytes]]:
    """The run script as s6 starts it; its output is drained as it comes (a full pipe would stall it)."""
    process = await asyncio.create_subprocess_exec(
        "bashio", str(RUN), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    assert process.stdout is not None
    return process, asyncio.create_task(process.stdout.read())


async def stop(process: asyncio.subprocess.Process, output: asyncio.Task[bytes]) -> str:
    process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(process.wait(), 30)
    return (await output).decode()


@pytest.fixture
def secured_broker() -> Iterator[Broker]:
    with password_broker(PASSWORD) as broker:
        yield broker


def environment(tmp_path: Path, options: dict[str, Any], services: dict[str, Any] | None) -> dict[str, str]:
    (tmp_path / "options.json").write_text(json.dumps(options))
    service_dir = tmp_path / "services"
    service_dir.mkdir(exist_ok=True)
    if services is not None:
        (service_dir / "mqtt.json").write_text(json.dumps(services))
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    return {
        **os.environ,
        "PATH": f"{SHIM}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "MWA_OPTIONS": str(tmp_path / "options.json"),
        "MWA_DATA": str(data),
        "BASHIO_SERVICES": str(service_dir),
        "MWA_PANEL_PORT": str(free_port(socket.SOCK_STREAM)),
        "MWA_PANEL_BIND": "127.0.0.1",
        "SUPERVISOR_TOKEN": "not-a-real-token",  # add-on mode: the panel admits only the ingress proxy
    }


def supervisor_options(sim: Any, **extra: Any) -> dict[str, Any]:
    """What the Supervisor writes: the manifest's defaults plus what the user filled in."""
    host, port = sim.addresses[0]
    return {
        **json.loads(json.dumps(SHOWN_DEFAULTS)),
        "batteries": [{"name": "FaseA", "host": host, "port": port}],
        "marstek_bind": "127.0.0.1",
        "rediscovery_targets": [host],
        "battery_poll_interval": 1,
        "timing": {"request_gap": 0.01, "write_gap": 0.05, "timeout": 0.3, "verify_delay": 0.2},
        **extra,
    }


async def test_the_run_script_starts_the_bridge_with_the_supervisors_credentials(
    secured_broker: Broker, make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(1, socs=[71.0])
    services = {
        "host": "127.0.0.1",
        "port": secured_broker.port,
        "ssl": False,
        "protocol": "3.1.1",
        "username": "addons",
        "password": PASSWORD,
        "addon": "core_mosquitto",
    }
    env = environment(tmp_path, supervisor_options(sim), services)
    process, output = await start(env)
    secured_broker.username, secured_broker.password = "addons", PASSWORD
    try:
        async with recording(secured_broker) as recorder:
            state = f"marstek_webasto/battery_{sim.batteries[0].ble_mac}/state"
            await recorder.wait_for(lambda: state in recorder.latest, 30, "the battery's state")
            assert json.loads(recorder.latest[state])["soc"] == 71
        panel = f"http://127.0.0.1:{env['MWA_PANEL_PORT']}/"
        async with aiohttp.ClientSession() as http:
            async with http.get(panel) as response:
                assert response.status == 403  # loopback is not the ingress proxy
            async with asyncio.timeout(10):  # connected once the first discovery round is out
                while True:
                    async with http.get(panel + "api/health") as response:
                        assert response.status == 200  # ... but the HEALTHCHECK may ask
                        if (await response.json())["mqtt"] is True:
                            break
                    await asyncio.sleep(0.2)
    finally:
        log = await stop(process, output)
    assert process.returncode == 0, log
    assert f"MQTT broker from the Supervisor: 127.0.0.1:{secured_broker.port} as addons" in log
    assert PASSWORD not in log
    assert sim.batteries[0].ble_mac in (tmp_path / "data" / "state.json").read_text()  # kept in /data


async def panel_problems(env: dict[str, str]) -> list[dict[str, str]]:
    """The problems the panel lists, once it answers and lists any (outside the add-on: loopback)."""
    url = f"http://127.0.0.1:{env['MWA_PANEL_PORT']}/api/state"
    async with aiohttp.ClientSession() as http, asyncio.timeout(30):
        while True:
            try:
                async with http.get(url) as response:
                    problems: list[dict[str, str]] = (await response.json())["problems"]
                    if problems:
                        return problems
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.2)


async def test_invalid_options_keep_the_add_on_up_with_the_problems_in_the_panel(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(1)
    options = supervisor_options(sim, batteries=[{"name": "FaseA", "host": "not a host!"}])
    env = environment(tmp_path, options, None)
    init = await asyncio.to_thread(
        subprocess.run, ["bashio", str(INIT)], env=env, capture_output=True, text=True, timeout=60
    )
    assert init.returncode == 0, init.stderr  # reported, not fatal
    assert "batteries[0].host: must be an IP address or a host name" in init.stderr
    assert "fix them in the Configuration tab" in init.stderr

    env["SUPERVISOR_TOKEN"] = ""  # outside the add-on the panel admits loopback
    env["MWA_PANEL_BIND"] = "127.0.0.1"
    process, output = await start(env)
    try:
        problems = await panel_problems(env)
        assert {p["source"] for p in problems} == {"Options"}
        assert problems[0]["text"].startswith("batteries[0].host: must be an IP address or a host name")
        assert process.returncode is None  # still up
        assert sim.batteries[0].requests == 0
    finally:
        log = await stop(process, output)
    assert process.returncode == 0, log


async def test_a_bridge_that_cannot_start_keeps_the_add_on_up_with_the_reason_in_the_panel(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(1)
    # valid options, but not an address of this host: the bind fails in the kernel, nothing is sent
    mqtt = {"host": "127.0.0.1", "port": free_port(socket.SOCK_STREAM)}  # no broker: not needed to fail
    env = environment(tmp_path, supervisor_options(sim, marstek_bind="192.0.2.1", mqtt=mqtt), None)
    env["SUPERVISOR_TOKEN"] = ""  # outside the add-on the panel admits loopback
    env["MWA_PANEL_BIND"] = "127.0.0.1"
    process, output = await start(env)
    try:
        problems = await panel_problems(env)
        assert [p["source"] for p in problems] == ["Bridge"], problems
        assert "assign requested address" in problems[0]["text"]
        assert problems[0]["text"].startswith("could not start:")
        assert "nothing is sent to any device" in problems[0]["text"]
        assert process.returncode is None  # still up
        assert sim.batteries[0].requests == 0
    finally:
        log = await stop(process, output)
    assert process.returncode == 0, log
    assert "the bridge could not start" in log


def test_the_init_script_stops_the_add_on_when_data_is_not_writable(tmp_path: Path) -> None:
    env = environment(tmp_path, {"batteries": []}, None)
    env["MWA_DATA"] = str(tmp_path / "missing")
    init = subprocess.run(["bashio", str(INIT)], env=env, capture_output=True, text=True, timeout=60)
    assert init.returncode != 0
    assert "is not writable" in init.stderr


@pytest.mark.parametrize(
    ("exit_code", "signal_number", "halts", "recorded"),
    [("0", "0", False, None), ("256", "15", False, None), ("1", "0", True, "1"), ("256", "9", True, "137")],
)
def test_the_finish_script_halts_the_container_when_the_bridge_fails(
    tmp_path: Path, exit_code: str, signal_number: str, halts: bool, recorded: str | None
) -> None:
    env = environment(tmp_path, {}, None)
    halted = tmp_path / "halted"
    halt = tmp_path / "halt"
    halt.write_text(f"#!/bin/sh\ntouch {halted}\n")
    halt.chmod(0o755)
    env.update({"MWA_S6_RESULTS": str(tmp_path), "MWA_S6_HALT": str(halt)})
    result = subprocess.run(
        ["bashio", str(FINISH), exit_code, signal_number], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert halted.exists() == halts
    exit_file = tmp_path / "exitcode"
    assert (exit_file.read_text().strip() if exit_file.exists() else None) == recorded
