"""Options the Supervisor's schema lets through, and what the bridge then does with them.

Each case is an option a user can save on the options tab: the bridge must either use it as written or
refuse it with a sentence that names it, never crash on it or quietly do something else.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from marstek_webasto_addon.addon.options import OptionsError, load_options_sparing, parse_options

from .conftest import SimFactory
from .mqtt_fixtures import Broker, broker, password_broker, recording
from .test_cli_options import run_until_online

__all__ = ["broker"]
pytestmark = pytest.mark.timeout(90)
CLI = [sys.executable, "-m", "marstek_webasto_addon"]
PREFIX = "error: options: "


def outside_the_addon(state_home: Path) -> dict[str, str]:
    hidden = ("SUPERVISOR_TOKEN", "MWA_MQTT_HOST", "MWA_MQTT_PORT", "MWA_MQTT_USERNAME", "MWA_MQTT_PASSWORD")
    return {k: v for k, v in os.environ.items() if k not in hidden} | {"XDG_STATE_HOME": str(state_home)}


async def run_cli(*args: str, env: dict[str, str], timeout: float = 30) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *CLI, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"`{' '.join(args[:1])}` did not end within {timeout:g} s") from None
    assert process.returncode is not None
    return process.returncode, out.decode()


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(OptionsError) as caught:
        parse_options(data)
    return caught.value.problems


# --- a reading topic with an MQTT wildcard -----------------------------------------------------------


async def test_a_wildcard_in_the_meter_topic_is_refused_instead_of_crashing_the_bridge(
    broker: Broker, tmp_path: Path
) -> None:
    """`topic: str` in the schema: the Supervisor saves `p1/#/power`, and subscribing to it raised in the
    MQTT session, which ended the bridge with a traceback (in the add-on: the container halted)."""
    options = {
        "mqtt": {"host": broker.host, "port": broker.port},
        "marstek_bind": "127.0.0.1",
        "grid_source": {"type": "mqtt", "topic": "p1/#/power"},
    }
    path = tmp_path / "options.json"
    path.write_text(json.dumps(options))
    env = outside_the_addon(tmp_path / "state")
    async with recording(broker) as recorder:
        code, output = await run_cli("run", "--options", str(path), "--panel-port", "0", env=env)
        assert "marstek_webasto/status" not in recorder.latest  # the bridge never came up
    assert code == 2, output
    assert f"{PREFIX}grid_source.topic: must be one topic, without the wildcards + and #" in output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("section", "topic"),
    [("grid_source", "p1/+/power"), ("grid_source", "p1/#"), ("pv_power", "inverter/+/ac_power")],
)
def test_a_wildcard_reading_topic_is_one_clear_problem(section: str, topic: str) -> None:
    # "+" subscribed fine, but readings are matched to the topic by name: none ever arrived, silently.
    data = {"mqtt": {"host": "127.0.0.1"}, section: {"type": "mqtt", "topic": topic}}
    assert problems_of(data) == [
        f"{section}.topic: must be one topic, without the wildcards + and # (got {topic!r})"
    ]
    plain = parse_options(data | {section: {"type": "mqtt", "topic": "p1/meter power"}})
    assert getattr(plain, section).topic == "p1/meter power"  # spaces and levels are fine


# --- MQTT credentials -----------------------------------------------------------------------------------

PASSWORD = "correct horse "  # a trailing space is part of it


@pytest.fixture
def secured_broker() -> Iterator[Broker]:
    with password_broker(PASSWORD) as broker:
        yield broker


async def test_the_mqtt_password_is_used_as_written(secured_broker: Broker, tmp_path: Path) -> None:
    """The options trimmed every text, the password too: a broker whose password ends in a space refused
    the bridge at every attempt, and nothing the user could type got it through."""
    options = {
        "mqtt": {
            "host": secured_broker.host,
            "port": secured_broker.port,
            "username": "addons",
            "password": PASSWORD,
        },
        "marstek_bind": "127.0.0.1",
    }
    path = tmp_path / "options.json"
    path.write_text(json.dumps(options))
    text = await run_until_online(
        secured_broker, path, outside_the_addon(tmp_path / "state"), tmp_path / "data"
    )
    assert "not authori" not in text.lower()
    assert "mqtt.password begins or ends with a space and is used as typed" in text  # said, in case


# --- two entries for one battery ------------------------------------------------------------------------


async def test_one_battery_under_two_spellings_of_its_host_name_is_refused(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    """Host names are case-insensitive: both entries reached the same battery, which would have been polled
    and commanded twice (its setpoints from two places) under one identity."""
    sim = await make_sim(1)
    _, port = sim.addresses[0]
    options = {
        "batteries": [
            {"name": "Zolder", "host": "localhost", "port": port},
            {"name": "Kelder", "host": "LocalHost", "port": port},
        ],
        "mqtt": {"host": "127.0.0.1"},
    }
    path = tmp_path / "options.json"
    path.write_text(json.dumps(options))
    code, output = await run_cli("check-options", "--options", str(path), env=outside_the_addon(tmp_path))
    assert code == 2, output
    assert f"{PREFIX}batteries: two entries point at the same host and port" in output
    assert sim.batteries[0].requests == 0


def test_one_ble_mac_in_two_battery_entries_is_refused() -> None:
    data: dict[str, Any] = {
        "batteries": [
            {"name": "Zolder", "host": "127.0.0.11", "ble_mac": "009c17aabbcc"},
            {"name": "Kelder", "host": "127.0.0.12", "ble_mac": "009C17AABBCC"},
        ],
        "mqtt": {"host": "127.0.0.1"},
    }
    assert problems_of(data) == ["batteries: each ble_mac belongs to one battery; repeated: 009c17aabbcc"]
    data["batteries"][1]["ble_mac"] = "009c17aabbcd"
    assert [b.name for b in parse_options(data).batteries] == ["Zolder", "Kelder"]


# --- one bad device entry -----------------------------------------------------------------------------


def spared(tmp_path: Path, data: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    path = tmp_path / "options.json"
    path.write_text(json.dumps(data))
    options, problems = load_options_sparing(path)
    return [b.name for b in options.batteries], [w.name for w in options.wallboxes], problems


def test_device_entries_invalid_on_their_own_are_left_out_and_named(tmp_path: Path) -> None:
    data = {
        "batteries": [
            {"name": "A", "host": "127.0.0.11"},
            {"name": "B", "host": "127.0.0.12", "port": 70000},
            {"name": "C", "host": "127.0.0.13"},
        ],
        "wallboxes": [{"name": "W", "host": "127.0.0.21", "model": "nxt"}],
    }
    batteries, wallboxes, problems = spared(tmp_path, data)
    assert (batteries, wallboxes) == (["A", "C"], [])
    assert problems[-1] == "left out until corrected: batteries[1], wallboxes[0]; the other devices run"
    assert "batteries[1].port: 70000 is out of range: it must be between 1 and 65535" in problems


@pytest.mark.parametrize(
    "data",
    [
        # a rule across entries, an option elsewhere, or nothing left: nothing runs, as before
        {"batteries": [{"name": "A", "host": "127.0.0.11"}, {"name": "A", "host": "127.0.0.12"}]},
        {"batteries": [{"name": "A", "host": "127.0.0.11"}, {"name": "B", "host": "x!"}], "colour": "red"},
        {"batteries": [{"name": "B", "host": "x!"}]},
        # the grid meter is the first battery's CT: another battery's would steer everything unseen
        {
            "batteries": [{"name": "A", "host": "x!"}, {"name": "B", "host": "127.0.0.12"}],
            "grid_source": {"type": "battery"},
        },
        {"batteries": [{"name": "A", "host": "x!"}, {"name": "B", "host": "127.0.0.12"}]},  # by default
    ],
)
def test_other_problems_still_stop_everything(tmp_path: Path, data: dict[str, Any]) -> None:
    with pytest.raises(OptionsError):
        spared(tmp_path, data)
