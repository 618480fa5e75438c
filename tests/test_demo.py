"""`python -m marstek_webasto_addon demo` as a user runs it: a process, its panel, Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import sys
from typing import Any

import aiohttp
import aiomqtt
import pytest

from .conftest import free_port

pytestmark = pytest.mark.timeout(120)
CLI = [sys.executable, "-m", "marstek_webasto_addon"]


async def start_demo(*extra: str) -> tuple[asyncio.subprocess.Process, int, list[str]]:
    port = free_port(socket.SOCK_STREAM)
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "demo",
        "--port",
        str(port),
        "--sim-port",
        str(free_port()),
        "--start",
        "2026-06-21T11:00",
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(60):
        while not any("panel at http://" in line for line in lines):
            line = (await process.stdout.readline()).decode()
            assert line, "the demo exited early:\n" + "".join(lines)
            lines.append(line)
    asyncio.get_running_loop().create_task(_drain(process, lines))
    return process, port, lines


async def _drain(process: asyncio.subprocess.Process, lines: list[str]) -> None:
    assert process.stdout is not None
    async for raw in process.stdout:
        lines.append(raw.decode())


async def wait_for_state(port: int, predicate: Any, timeout: float = 45) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, asyncio.timeout(timeout):
        while True:
            async with http.get(f"http://127.0.0.1:{port}/api/state") as response:
                state: dict[str, Any] = await response.json()
            if predicate(state):
                return state
            await asyncio.sleep(0.5)


async def stop(process: asyncio.subprocess.Process) -> int:
    process.send_signal(signal.SIGINT)
    return await asyncio.wait_for(process.wait(), 30)


def running(state: dict[str, Any]) -> bool:
    optimiser = state.get("optimiser") or {}
    return (
        len(state["batteries"]) == 3
        and all(isinstance(b.get("soc"), int | float) for b in state["batteries"])
        and len(state["wallboxes"]) == 1
        and optimiser.get("strategy") not in (None, "hold")
        and state["site"].get("grid_power") is not None
    )


async def test_the_demo_runs_the_whole_product_and_stops_cleanly() -> None:
    process, port, lines = await start_demo()
    try:
        state = await wait_for_state(port, running)
        assert [b["name"] for b in state["batteries"]] == ["FaseA", "FaseB", "FaseC"]
        assert state["optimiser"]["enabled"] == "ON"
        assert state["site"]["pv_power"] > 0  # 11:00 on midsummer's day
        assert state["problems"] == []
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/") as response:
            assert response.status == 200
            assert "static/app.js" in await response.text()
    finally:
        code = await stop(process)
    output = "".join(lines)
    assert code == 0, output
    assert "Demo stopped." in output
    assert "Traceback" not in output
    with pytest.raises(ConnectionRefusedError):  # the panel is gone with the process
        socket.create_connection(("127.0.0.1", port), 0.5).close()


async def test_the_demo_runs_its_batteries_over_modbus() -> None:
    process, port, lines = await start_demo("--transport", "modbus")
    try:
        # with `transport: modbus` the add-on has no Local API client: every value came over Modbus
        # (the planner's first plan may predate the first Modbus poll: its "no battery online" then clears)
        state = await wait_for_state(
            port,
            lambda s: (
                running(s)
                and all(b.get("transport") == "modbus" for b in s["batteries"])
                and s["problems"] == []
            ),
        )
        assert all(b["available"] and b["mode"] in ("Auto", "Passive") for b in state["batteries"])
        gateways = re.search(
            r"their Modbus maps at (127\.0\.0\.1:\d+), (127\.0\.0\.1:\d+), (127\.0\.0\.1:\d+)", "".join(lines)
        )
        assert gateways, "".join(lines)
    finally:
        code = await stop(process)
    output = "".join(lines)
    assert code == 0, output
    assert "Traceback" not in output


async def test_without_mosquitto_the_demo_brings_its_own_broker() -> None:
    process, port, lines = await start_demo("--broker", "embedded")
    try:
        await wait_for_state(port, running)
        found = re.search(r"embedded amqtt broker on 127\.0\.0\.1:(\d+)", "".join(lines))
        assert found, "".join(lines)
        async with aiomqtt.Client("127.0.0.1", int(found.group(1))) as client:
            await client.subscribe("homeassistant/#")
            async with asyncio.timeout(10):
                async for message in client.messages:
                    config = json.loads(bytes(message.payload))
                    if "device" in config:
                        break
    finally:
        code = await stop(process)
    assert code == 0, "".join(lines)


async def test_the_demo_runs_the_planner_and_shows_its_plan() -> None:
    process, port, lines = await start_demo()
    try:
        state = await wait_for_state(
            port, lambda s: running(s) and s["optimiser"]["strategy"].startswith("plan:")
        )
        assert state["optimiser"]["plan_action"] in (
            "self_consumption",
            "charge",
            "hold",
            "limit_charge",
            "discharge",
        )
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/api/plan") as response:
            assert response.status == 200
            plan = await response.json()
        # The demo's car comes home every evening (two weeks of it in the stay log): in `plan` mode it is
        # expected tonight before it is there, and the wallbox says so.
        box = state["wallboxes"][0]["id"]
        async with aiohttp.ClientSession() as http:
            command = {"device": box, "key": "charge_mode", "value": "plan"}
            async with http.post(f"http://127.0.0.1:{port}/api/command", json=command) as response:
                assert response.status == 200, await response.text()
        expecting = await wait_for_state(
            port, lambda s: "expected about 18:00" in str(s["wallboxes"][0].get("charge_control"))
        )
        assert "12.0 kWh" in expecting["wallboxes"][0]["charge_control"]  # every day: the whole stay
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/api/plan") as response:
            notes = (await response.json())["notes"]
        assert any(note.startswith("the car is expected 18:00-07:30 for 12.0 kWh") for note in notes), notes
    finally:
        code = await stop(process)
    assert code == 0, "".join(lines)
    assert plan["status"] == "optimal"
    steps = plan["steps"]
    assert steps[0]["start"].startswith("2026-06-21T11:")
    assert steps[-1]["start"].startswith("2026-06-22T23:45")  # the rest of today and all of tomorrow
    assert all(len(step["soc"]) == 3 for step in steps)
    # the learned evening of the demo's home comes from the batteries, the noon sun goes into them
    evening = [s for s in steps if "T19:" in s["start"] or "T20:" in s["start"]]
    assert sum(s["battery_kw"] for s in evening) > 0
    noon = [s for s in steps if s["start"].startswith("2026-06-22T13:")]
    assert all(s["pv_kw"] > 1.0 for s in noon)
