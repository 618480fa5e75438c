"""Bad options in, sentences out: `check-options` and `run` give the same answer for the same file.

Each message names the option, the value given and what is allowed (with the unit where there is one),
in words a user reads without knowing pydantic or regular expressions.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from marstek_webasto_addon.addon.options import MQTT_HOST_REQUIRED, OptionsError, parse_options

from .mqtt_fixtures import Broker, broker, recording

__all__ = ["broker"]
pytestmark = pytest.mark.timeout(60)
CLI = [sys.executable, "-m", "marstek_webasto_addon"]
PREFIX = "error: options: "

# Valid outside the add-on; every case below spoils one value of it.
BASE: dict[str, Any] = {
    "batteries": [{"name": "FaseA", "host": "127.0.0.11"}],
    "wallboxes": [{"name": "Garage", "host": "127.0.0.1", "model": "next"}],
    "mqtt": {"host": "127.0.0.1"},
    "tariff": {
        "periods": [{"name": "peak", "price": 0.279, "days": "mon-fri", "start": "07:00", "end": "22:00"}]
    },
}

ONE_BAD_VALUE: list[tuple[tuple[str | int, ...], Any, str]] = [
    (
        ("batteries", 0, "port"),
        "abc",
        "batteries[0].port: 'abc' is not a whole number; it must be between 1 and 65535",
    ),
    (
        ("batteries", 0, "name"),
        "Fase/A",
        "batteries[0].name: 'Fase/A' is not a usable name; use 1 to 40 characters without /, # or +",
    ),
    (
        ("batteries", 0, "ble_mac"),
        "02:a1:b2:c3:d4",
        "batteries[0].ble_mac: '02:a1:b2:c3:d4' is not a BLE MAC; use its 12 hexadecimal digits, e.g. "
        "02a1b2c3d400 or 02:A1:B2:C3:D4:00",
    ),
    (("batteries", 0, "hots"), "127.0.0.12", "batteries[0].hots: unknown option; did you mean host?"),
    (
        ("wallboxes", 0, "max_current"),
        80,
        "wallboxes[0].max_current: 80 is out of range: it must be between 6 and 63 A",
    ),
    (
        ("wallboxes", 0, "model"),
        "NEXT 22",
        "wallboxes[0].model: 'NEXT 22' is not one of the choices: auto, next or unite",
    ),
    (
        ("wallboxes", 0, "unit_id"),
        2.5,
        "wallboxes[0].unit_id: 2.5 is not a whole number; it must be between 0 and 255",
    ),
    (("mqtt", "port"), 0, "mqtt.port: 0 is out of range: it must be between 1 and 65535"),
    (("mqtt", "host"), 1883, "mqtt.host: must be text (in quotes), not 1883"),
    (("optimiser", "day_start"), "7h", "optimiser.day_start: '7h' is not a time; use HH:MM, e.g. 07:00"),
    (("optimiser", "enabled"), "maybe", "optimiser.enabled: 'maybe' is not true or false"),
    (
        ("optimiser", "peak_target"),
        60,
        "optimiser.peak_target: 60 is out of range: it must be between 0 and 50 kW",
    ),
    (
        ("optimiser", "overflow_max_soc"),
        "lots",
        "optimiser.overflow_max_soc: 'lots' is not a number; it must be between 10 and 100 %",
    ),
    (
        ("timing", "timeout"),
        0,
        "timing.timeout: 0 is out of range: it must be between 0.1 and 30 s",
    ),
    (
        ("tariff", "periods", 0, "days"),
        "weekdays",
        "tariff.periods[0].days: 'weekdays' is not a set of days; use e.g. mon-fri, sat,sun or all",
    ),
    (
        ("tariff", "periods", 0, "name"),
        "Peak",
        "tariff.periods[0].name: 'Peak' is not a usable name; start with a lower-case letter, then letters, "
        "digits or _, e.g. peak",
    ),
    (
        ("tariff", "periods", 0, "price"),
        -2,
        "tariff.periods[0].price: -2 is out of range: it must be between -1 and 5 EUR/kWh",
    ),
    (
        ("log_level",),
        "loud",
        "log_level: 'loud' is not one of the choices: debug, info, warning or error",
    ),
    (("colour",), "red", "colour: unknown option; check the spelling"),
    (
        ("rediscovery_targets",),
        "127.0.0.11",
        "rediscovery_targets: must be a list ([...]), not '127.0.0.11'",
    ),
    (
        ("marstek_bind",),
        "eth0",
        "marstek_bind: must be an IPv4 address of this host (0.0.0.0: all of them), e.g. 192.168.1.10 "
        "(got 'eth0')",
    ),
    (("grid_source",), None, "grid_source: must be a group of options ({...}), not null"),
    (
        ("battery_poll_interval",),
        0.5,
        "battery_poll_interval: 0.5 is out of range: it must be between 1 and 3600 s",
    ),
    (
        ("discovery_prefix",),
        "home assistant",
        "discovery_prefix: 'home assistant' is not a usable MQTT topic; use letters, digits, _ and -, with / "
        "between levels",
    ),
]

# Whole files: the file's shape, a missing option, and the rules across options.
WHOLE_FILES: list[tuple[Any, list[str]]] = [
    ([], ["options: the file must hold one JSON object ({...}), not a list"]),
    ("batteries", ["options: the file must hold one JSON object ({...}), not 'batteries'"]),
    (
        {**BASE, "batteries": [{"host": "127.0.0.11"}]},
        ["batteries[0].name: missing; this option is required"],
    ),
    (
        {**BASE, "grid_source": {"type": "mqtt"}},
        ["grid_source.topic is required when grid_source.type is mqtt"],
    ),
    (
        {**BASE, "batteries": [{"name": "A", "host": "127.0.0.11"}, {"name": "A", "host": "127.0.0.12"}]},
        ["batteries: names must be unique; repeated: A"],
    ),
    (
        {
            **BASE,
            "tariff": {
                "periods": [
                    {"name": "peak", "price": 0.28, "days": "mon-fri", "start": "07:00", "end": "12:00"},
                    {"name": "peak", "price": 0.30, "days": "mon-fri", "start": "12:00", "end": "22:00"},
                ]
            },
        },
        ["tariff.periods: the period 'peak' has two different prices"],
    ),
    (
        {**BASE, "rediscovery_targets": ["127.0.0.12", "garbage"]},
        [
            "rediscovery_targets: 'garbage' is not an address, ADDRESS:PORT or a block such as "
            "192.168.1.0/24 ('garbage' does not appear to be an IPv4 or IPv6 address)"
        ],
    ),
    (
        {**BASE, "rediscovery_targets": ["127.0.0.12:70000"]},
        [
            "rediscovery_targets: '127.0.0.12:70000' is not an address, ADDRESS:PORT or a block such as "
            "192.168.1.0/24 (IPv4 addresses and ports 1-65535 only)"
        ],
    ),
    (
        {**BASE, "rediscovery_targets": ["::1"]},
        [
            "rediscovery_targets: '::1' is not an address, ADDRESS:PORT or a block such as "
            "192.168.1.0/24 (IPv4 addresses and ports 1-65535 only)"
        ],
    ),
    (
        {**BASE, "rediscovery_targets": ["10.0.0.0/8"]},
        [
            "rediscovery_targets: '10.0.0.0/8' is not an address, ADDRESS:PORT or a block such as "
            "192.168.1.0/24 (10.0.0.0/8 has 16777216 addresses; at most 1024)"
        ],
    ),
    (
        {**BASE, "control_interval": 61, "optimiser": {"passive_countdown": 2}},
        [
            "control_interval (61 s) must be at most half of the optimiser's passive_countdown (2 min), "
            "or the countdown runs out between two control steps"
        ],
    ),
    ({}, [MQTT_HOST_REQUIRED]),
    ({"batteries": [{"name": "FaseA", "host": "127.0.0.11"}], "mqtt": {"host": " "}}, [MQTT_HOST_REQUIRED]),
]


def spoiled(path: tuple[str | int, ...], value: Any, options: dict[str, Any] = BASE) -> dict[str, Any]:
    options = copy.deepcopy(options)
    target: Any = options
    for part in path[:-1]:
        target = target.setdefault(part, {}) if isinstance(part, str) else target[part]
    target[path[-1]] = value
    return options


def problems_of(data: Any) -> list[str]:
    with pytest.raises(OptionsError) as caught:
        parse_options(data, broker_elsewhere=False)
    return caught.value.problems


@pytest.mark.parametrize(
    ("path", "value", "message"), ONE_BAD_VALUE, ids=[".".join(map(str, m[0])) for m in ONE_BAD_VALUE]
)
def test_a_bad_value_is_one_sentence_with_what_is_allowed(
    path: tuple[str | int, ...], value: Any, message: str
) -> None:
    assert problems_of(spoiled(path, value)) == [message]


@pytest.mark.parametrize(("data", "messages"), WHOLE_FILES)
def test_a_bad_file_is_explained_in_sentences(data: Any, messages: list[str]) -> None:
    assert problems_of(data) == messages


def test_in_the_add_on_the_broker_may_come_from_the_supervisor() -> None:
    assert parse_options({}, broker_elsewhere=True).mqtt.host == ""
    assert problems_of({"mqtt": {"host": "127.0.0.1"}, "colour": "red"}) == [
        "colour: unknown option; check the spelling"
    ]


# The same files through the two commands, as processes -------------------------------------------------


def outside_the_addon(tmp_path: Path) -> dict[str, str]:
    hidden = ("SUPERVISOR_TOKEN", "MWA_MQTT_HOST", "MWA_MQTT_PORT")
    return {k: v for k, v in os.environ.items() if k not in hidden} | {"XDG_STATE_HOME": str(tmp_path)}


async def cli(*args: str, env: dict[str, str]) -> tuple[int, list[str], str]:
    process = await asyncio.create_subprocess_exec(
        *CLI, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    text = out.decode()
    return (
        process.returncode,
        [line.removeprefix(PREFIX) for line in text.splitlines() if PREFIX in line],
        text,
    )


async def both(path: Path, env: dict[str, str]) -> tuple[list[str], list[str]]:
    """The problems `check-options` and `run` list for one file; both must refuse it with exit code 2."""
    checked, check_lines, check_text = await cli("check-options", "--options", str(path), env=env)
    ran, run_lines, run_text = await cli("run", "--options", str(path), "--panel-port", "0", env=env)
    assert checked == 2, check_text
    assert ran == 2, run_text
    assert "nothing was sent to any device" in run_text
    return check_lines, run_lines


async def test_check_options_and_run_list_the_same_problems(tmp_path: Path) -> None:
    options = BASE
    for path, value, _ in ONE_BAD_VALUE:  # every bad value at once: every problem at once
        options = spoiled(path, value, options)
    file = tmp_path / "options.json"
    file.write_text(json.dumps(options))
    checked, ran = await both(file, outside_the_addon(tmp_path))
    assert checked == ran
    assert sorted(checked) == sorted(message for _, _, message in ONE_BAD_VALUE)


@pytest.mark.parametrize(
    ("document", "messages"),
    [
        ("{}", [MQTT_HOST_REQUIRED]),  # issue 12: check-options used to accept what run refused
        ("[]", ["options: the file must hold one JSON object ({...}), not a list"]),
        ('{"mqtt": null}', ["mqtt: must be a group of options ({...}), not null"]),
    ],
)
async def test_outside_the_add_on_both_commands_refuse_the_same_way(
    tmp_path: Path, document: str, messages: list[str]
) -> None:
    file = tmp_path / "options.json"
    file.write_text(document)
    assert await both(file, outside_the_addon(tmp_path)) == (messages, messages)


async def run_until_online(broker: Broker, file: Path, env: dict[str, str], state_dir: Path) -> str:
    """`run` as a process until the bridge is online on `broker`, then a stop: its output (a clean exit)."""
    async with recording(broker) as recorder:
        process = await asyncio.create_subprocess_exec(
            *CLI,
            *("run", "--options", str(file), "--state-dir", str(state_dir), "--panel-port", "0"),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert process.stdout is not None
        output = asyncio.create_task(process.stdout.read())
        try:
            await recorder.wait_for(
                lambda: recorder.latest.get("marstek_webasto/status") == b"online", 20, "the bridge online"
            )
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 15)
        text = (await output).decode()
    assert process.returncode == 0, text
    return text


async def test_in_the_add_on_both_commands_accept_an_empty_file(broker: Broker, tmp_path: Path) -> None:
    """The Supervisor provides the broker (handed over by the s6 run script, as in the add-on)."""
    file = tmp_path / "options.json"
    file.write_text("{}")
    env = outside_the_addon(tmp_path) | {
        "SUPERVISOR_TOKEN": "not-a-real-token",
        "MWA_MQTT_HOST": broker.host,
        "MWA_MQTT_PORT": str(broker.port),
    }
    code, problems, text = await cli("check-options", "--options", str(file), env=env)
    assert (code, problems) == (0, []), text
    assert "options OK: 0 batteries, 0 wallboxes" in text
    text = await run_until_online(broker, file, env, tmp_path / "data")
    assert PREFIX not in text
