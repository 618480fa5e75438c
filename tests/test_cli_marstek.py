"""The command line as a user runs it: separate processes talking over loopback UDP."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from .conftest import free_port

pytestmark = pytest.mark.timeout(90)
CLI = [sys.executable, "-m", "marstek_webasto_addon"]


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def simulated_batteries() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [
            *CLI,
            "simulate",
            "marstek",
            "--count",
            "3",
            "--port",
            str(port),
            "--profile",
            "venus_e3_v150",
            "--soc",
            "100",
            "--soc",
            "22",
            "--soc",
            "97",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines = [proc.stdout.readline() for _ in range(4)]
    assert "3 batteries running" in lines[-1], lines
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_discover_finds_the_simulated_batteries(simulated_batteries: int) -> None:
    port = simulated_batteries
    result = run_cli(
        "discover",
        "marstek",
        "--target",
        "127.0.0.0/27",
        "--port",
        str(port),
        "--timeout",
        "1.5",
        "--bind",
        "127.0.0.1",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert [b["host"] for b in found] == ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
    assert len({b["ble_mac"] for b in found}) == 3
    text = run_cli(
        "discover",
        "marstek",
        "--target",
        "127.0.0.12",
        "--port",
        str(port),
        "--timeout",
        "1",
        "--bind",
        "127.0.0.1",
    )
    assert "1 battery found" in text.stdout


def test_probe_prints_every_section_as_json(simulated_batteries: int) -> None:
    port = simulated_batteries
    result = run_cli(
        "probe", "marstek", f"127.0.0.12:{port}", "--json", "--bind", "127.0.0.1", "--gap", "0.05"
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["model"] == "Venus E 3.0"
    for section in ("device", "status", "mode", "battery", "meter", "wifi", "ble"):
        assert doc[section], section
    assert doc["status"]["soc"] == 22
    assert doc["mode"]["mode"] == "Auto"
    assert doc["device"]["firmware"] == 150
    assert doc["unsupported"] == ["PV.GetStatus"]  # Venus E 3.0 v150 answers -32601 for PV
    human = run_cli("probe", "marstek", f"127.0.0.11:{port}", "--bind", "127.0.0.1", "--gap", "0.05")
    assert "soc" in human.stdout
    assert "100 %" in human.stdout


def test_probe_of_nothing_fails_clearly() -> None:
    port = free_port()
    started = time.monotonic()
    result = run_cli(
        "probe", "marstek", f"127.0.0.99:{port}", "--bind", "127.0.0.1", "--timeout", "0.1", "--gap", "0"
    )
    assert result.returncode == 1
    assert f"no answer from 127.0.0.99:{port}" in result.stderr
    assert time.monotonic() - started < 20


def test_demo_reaches_every_battery_and_stops_by_itself() -> None:
    panel = free_port(socket.SOCK_STREAM)
    sims = free_port()
    result = run_cli("demo", "--duration", "6", "--port", str(panel), "--sim-port", str(sims), timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"panel at http://127.0.0.1:{panel}/" in result.stdout
    for index, name in enumerate(("FaseA", "FaseB", "FaseC"), start=11):
        assert f"{name}: online at 127.0.0.{index}" in result.stderr
    assert result.stdout.rstrip().endswith("Demo stopped.")
