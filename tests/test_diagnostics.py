"""Diagnostics: what a maintainer needs, from a running bridge, and never a secret."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from marstek_webasto_addon.addon.diagnostics import REDACTED, redact
from marstek_webasto_addon.addon.options import MqttOptions

from .conftest import SimFactory, free_port, until
from .mqtt_fixtures import Broker, broker
from .test_cli_run import run_cli
from .test_panel_api import panel_setup
from .webasto_fixtures import BoxFactory, make_box

__all__ = ["broker", "make_box"]
pytestmark = pytest.mark.timeout(90)


def test_secrets_are_redacted_at_any_depth_and_empty_ones_stay_visible() -> None:
    options: dict[str, Any] = {
        "mqtt": {"host": "core-mosquitto", "username": "addons", "password": "hunter2"},
        "entries": [{"token": "abc", "name": "x"}],
        "empty": {"password": ""},
    }
    redacted = redact(options)
    assert redacted["mqtt"] == {"host": "core-mosquitto", "username": REDACTED, "password": REDACTED}
    assert redacted["entries"] == [{"token": REDACTED, "name": "x"}]
    assert redacted["empty"] == {"password": ""}  # "no password set" is worth knowing
    assert options["mqtt"]["password"] == "hunter2"  # a copy: the options in force are untouched


async def test_the_panel_serves_a_diagnostics_file_without_secrets(
    broker: Broker, make_sim: SimFactory, make_box: BoxFactory, tmp_path: Path
) -> None:
    async with panel_setup(broker, make_sim, make_box, tmp_path) as s:
        mqtt = MqttOptions(host="127.0.0.1", port=broker.port, username="addons", password="s3cr3t-pw")
        s.runtime.options = s.runtime.options.model_copy(update={"mqtt": mqtt})
        await until(lambda: s.runtime.wallboxes[0].available)
        async with s.http.get(s.url + "api/diagnostics") as response:
            assert response.status == 200
            assert "attachment" in response.headers["Content-Disposition"]
            text = await response.text()
    assert "s3cr3t-pw" not in text
    report = json.loads(text)
    assert report["versions"]["add-on"]
    assert report["versions"]["pymodbus"] != "not installed"
    assert report["options"]["mqtt"]["password"] == REDACTED
    names = [b["name"] for b in report["batteries"]]
    assert names == ["FaseA", "FaseB"]
    first = report["batteries"][0]
    assert first["profile"]["firmware"] == s.sim.batteries[0].profile.ver
    assert first["online"] is True
    assert "soc" in first["values"]
    assert "bat_soc" in first["last_replies"]["ES.GetStatus"]["result"]  # the device's own words
    assert any(len(words) > 0 for words in report["wallboxes"][0]["last_registers"].values())
    assert report["wallboxes"][0]["model"] == "next"
    assert isinstance(report["optimiser"]["decisions"], list)


async def test_the_diagnostics_command_saves_the_file_or_says_why_not(
    broker: Broker, make_sim: SimFactory, make_box: BoxFactory, tmp_path: Path
) -> None:
    saved = tmp_path / "diagnostics.json"
    async with panel_setup(broker, make_sim, make_box, tmp_path) as s:
        code, output = await run_cli("diagnostics", "--panel", s.url, "--output", str(saved))
        assert code == 0, output
    assert [b["name"] for b in json.loads(saved.read_text())["batteries"]] == ["FaseA", "FaseB"]
    code, output = await run_cli(
        "diagnostics", "--panel", f"http://127.0.0.1:{free_port(socket.SOCK_STREAM)}/"
    )
    assert code == 1
    assert "is the bridge running?" in output
