"""A new user's first hour with the command line: the demo, the simulators, probes and replays as the
README shows them, and the mistakes a person makes typing them."""

from __future__ import annotations

import asyncio
import os
import socket
import sys

import pytest

from marstek_webasto_addon.devices.marstek.simulator import MarstekSimulator

from .conftest import free_port

pytestmark = pytest.mark.timeout(120)
CLI = [sys.executable, "-m", "marstek_webasto_addon"]


async def run_cli(*args: str, timeout: float = 30) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
        pytest.fail(f"{' '.join(args)} still ran after {timeout} s:\n{out.decode()}{err.decode()}")
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_a_demo_refuses_battery_ports_another_demo_holds() -> None:
    """Two demos on one --sim-port shared the batteries' UDP port without a word: the second one's
    batteries and add-on took the first one's traffic, and the first demo's batteries went offline."""
    sim_port = free_port()
    first = MarstekSimulator.build(3, port=sim_port)  # a running demo's (or `simulate marstek`'s) batteries
    await first.start()
    try:
        code, out, err = await run_cli(
            "demo",
            "--port",
            str(free_port(socket.SOCK_STREAM)),
            "--sim-port",
            str(sim_port),
            "--duration",
            "5",
        )
    finally:
        await first.stop()
    output = out + err
    assert code == 1, output
    assert f"UDP port {sim_port} is in use" in output, output
    assert "--sim-port" in output, output
    assert "Demo running" not in output, output
    assert "Traceback" not in output, output


BAD_COMMAND_LINES = [
    pytest.param(["probe", "marstek", "127.0.0.11:abc"], "abc", id="probe-marstek-port-not-a-number"),
    pytest.param(["probe", "marstek", "127.0.0.11:70000"], "70000", id="probe-marstek-port-out-of-range"),
    pytest.param(["probe", "webasto", "127.0.0.1:502x"], "502x", id="probe-webasto-port-not-a-number"),
    pytest.param(
        ["discover", "marstek", "--target", "300.1.2.0/24", "--timeout", "0.2"],
        "300.1.2.0/24",
        id="discover-bad-target",
    ),
    pytest.param(["demo", "--speed", "0"], "--speed", id="demo-speed-zero"),
    pytest.param(["demo", "--speed", "-30"], "--speed", id="demo-speed-negative"),
    pytest.param(["simulate", "marstek", "--count", "0"], "--count", id="simulate-no-batteries"),
    pytest.param(["replay", "--days", "0"], "--days", id="replay-no-days"),
    pytest.param(["replay", "--days", "-3"], "--days", id="replay-negative-days"),
    pytest.param(
        ["replay", "--days", "1", "--scenarios", "optimiser", "--batteries", "-2"],
        "--batteries",
        id="replay-negative-batteries",
    ),
    pytest.param(
        ["replay", "--days", "1", "--scenarios", "no_battery", "--kwp", "-5"],
        "--kwp",
        id="replay-negative-kwp",
    ),
]


@pytest.mark.parametrize(("args", "named"), BAD_COMMAND_LINES)
async def test_a_mistyped_command_line_is_a_usage_error_not_a_traceback(args: list[str], named: str) -> None:
    code, out, err = await run_cli(*args, timeout=20)
    assert code == 2, out + err
    assert "Traceback" not in err, err
    assert "error:" in err, err
    assert named in err, err


async def test_a_reader_that_stops_early_is_no_traceback(udp_port: int) -> None:
    """`scripts/mwa probe ... | head`: the reader goes away before the probe has printed everything."""
    sim = MarstekSimulator.build(1, port=udp_port)
    await sim.start()
    try:
        read_end, write_end = os.pipe()
        os.close(read_end)  # `head` has read its lines and exited
        try:
            process = await asyncio.create_subprocess_exec(
                *CLI,
                "probe",
                "marstek",
                f"127.0.0.11:{udp_port}",
                "--bind",
                "127.0.0.1",
                "--gap",
                "0.05",
                stdout=write_end,
                stderr=asyncio.subprocess.PIPE,
            )
        finally:
            os.close(write_end)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        await sim.stop()
    assert "Traceback" not in err.decode(), err.decode()
    assert "BrokenPipeError" not in err.decode(), err.decode()


async def test_a_replay_past_the_data_years_end_says_how_many_days_it_replayed() -> None:
    """The data year ends on 31 December: five days from then are one day, and the title said five."""
    code, out, err = await run_cli(
        "replay", "--start", "2021-12-31", "--days", "5", "--scenarios", "no_battery", timeout=60
    )
    assert code == 0, err
    assert "from 2021-12-31 for 1 day;" in out, out
