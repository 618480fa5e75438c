"""`simulate webasto` and `probe webasto` as separate processes over loopback TCP."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import free_port

pytestmark = pytest.mark.timeout(60)
CLI = [sys.executable, "-m", "marstek_webasto_addon"]


@pytest.mark.parametrize(
    ("model", "expected_keys"),
    [
        ("next", {"charge_point_state", "ev_max_current", "failsafe_timeout", "energy_total"}),
        ("unite", {"serial_number", "firmware", "phases_installed", "voltage_l1", "session_energy"}),
    ],
)
def test_simulate_and_probe(model: str, expected_keys: set[str]) -> None:
    import socket

    port = free_port(socket.SOCK_STREAM)
    sim = subprocess.Popen(
        [*CLI, "simulate", "webasto", "--model", model, "--port", str(port), "--car"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert sim.stdout is not None
        assert f"on 127.0.0.1:{port}" in sim.stdout.readline()
        result = subprocess.run(
            [*CLI, "probe", "webasto", f"127.0.0.1:{port}", "--model", model, "--json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        assert expected_keys <= set(doc["values"])
        assert doc["values"]["charge_point_state"] == "charging"
        assert doc["values"]["power"] == 11040
        assert doc["problems"] == []
        other = "unite" if model == "next" else "next"
        assert other not in json.dumps(doc["model"])
    finally:
        sim.terminate()
        sim.wait(10)


def test_probe_without_a_box_fails_clearly() -> None:
    import socket

    port = free_port(socket.SOCK_STREAM)
    result = subprocess.run(
        [*CLI, "probe", "webasto", f"127.0.0.1:{port}", "--model", "next", "--timeout", "0.3"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "one Modbus client at a time" in result.stderr
