"""Small things a new user meets in the first hour: a simulator on a port someone else holds, "1 batteries",
a BLE MAC copied with its colons, and a battery configured by host name that a previous version pinned to
an IP address."""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any

import pytest
import yaml

from marstek_webasto_addon.addon import manifest
from marstek_webasto_addon.addon.options import OptionsError, parse_options
from marstek_webasto_addon.cli.words import counted
from marstek_webasto_addon.devices.marstek.client import MarstekClient
from marstek_webasto_addon.devices.marstek.datapoints import Method
from marstek_webasto_addon.devices.marstek.transport import UdpEndpoint

from .conftest import FAST, SimFactory, client_for, free_port
from .test_addon_manifest import check_options
from .test_first_hour import run_cli

pytestmark = pytest.mark.timeout(90)
CLI = [sys.executable, "-m", "marstek_webasto_addon"]


# 1. `simulate marstek` on a taken port ------------------------------------------------------------------


def assert_refused(code: int, out: str, err: str, host: str, port: int) -> None:
    assert code == 1, out + err
    assert "Traceback" not in err, err
    assert err.strip().splitlines() == [
        f"error: UDP port {port} is in use on {host} (another `simulate marstek`, a demo or `run`?):"
        " choose another --port"
    ], err
    assert "running" not in out, out


async def test_simulate_marstek_refuses_a_port_another_simulator_holds(
    make_sim: SimFactory, endpoint: UdpEndpoint, udp_port: int
) -> None:
    """A second `simulate marstek` on the same --port bound too (SO_REUSEADDR) and took part of the first
    one's requests: the first one's batteries stopped answering some of them, without a word."""
    first = await make_sim(2)
    code, out, err = await run_cli("simulate", "marstek", "--count", "3", "--port", str(udp_port), timeout=20)
    assert_refused(code, out, err, "127.0.0.11", udp_port)
    # the batteries already running lost nothing
    for index in range(2):
        report = await client_for(first, endpoint, index).read([Method.GET_DEVICE])
        assert Method.GET_DEVICE in report.results, report.errors


async def test_simulate_marstek_refuses_a_port_a_listener_holds() -> None:
    """A listener bound as the add-on binds (with address reuse) at one battery's address."""
    port = free_port()
    listener = await UdpEndpoint.open("127.0.0.12", port)
    try:
        assert listener.local_address == ("127.0.0.12", port)
        code, out, err = await run_cli("simulate", "marstek", "--count", "2", "--port", str(port), timeout=20)
    finally:
        listener.close()
    assert_refused(code, out, err, "127.0.0.12", port)


# 2. counts in words ---------------------------------------------------------------------------------------


async def first_lines(*args: str, count: int) -> list[str]:
    """The first lines a long-running command prints; it is stopped then."""
    process = await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    try:
        return [(await asyncio.wait_for(process.stdout.readline(), 30)).decode() for _ in range(count)]
    finally:
        process.terminate()
        await process.wait()


async def test_one_simulated_battery_is_one_battery() -> None:
    lines = await first_lines("simulate", "marstek", "--count", "1", "--port", str(free_port()), count=2)
    assert lines[1].startswith("1 battery running at"), lines


def test_counts_are_said_in_words() -> None:
    assert counted(1, "battery", "batteries") == "1 battery"
    assert counted(2, "battery", "batteries") == "2 batteries"
    assert counted(0, "wallbox", "wallboxes") == "0 wallboxes"
    assert counted(1, "wallbox", "wallboxes") == "1 wallbox"


# 3. a BLE MAC as people write it ------------------------------------------------------------------------


def with_mac(*macs: str) -> dict[str, Any]:
    return {
        "batteries": [
            {"name": f"Fase{n}", "host": f"127.0.0.{11 + i}", "ble_mac": mac}
            for i, (n, mac) in enumerate(zip("ABC", macs, strict=False))
        ]
    }


@pytest.mark.parametrize(
    "written",
    ["AC:D9:29:12:34:56", "ac-d9-29-12-34-56", "acd9-2912-3456", "acd9.2912.3456", "ACD929123456"],
)
def test_a_ble_mac_is_taken_in_the_spelling_the_battery_reports(written: str) -> None:
    options = parse_options(with_mac(written))
    assert options.batteries[0].ble_mac == "acd929123456"  # as in a reply's src: `VenusE 3.0-acd929123456`
    # the Supervisor's schema, generated from the same declaration, lets the options tab save it too
    battery_schema = yaml.safe_load(manifest.render())["schema"]["batteries"][0]
    check_options(with_mac(written)["batteries"][0], battery_schema)


def test_one_ble_mac_in_two_spellings_is_still_one_battery() -> None:
    with pytest.raises(OptionsError) as caught:
        parse_options(with_mac("AC:D9:29:12:34:56", "acd929123456"))
    assert caught.value.problems == ["batteries: each ble_mac belongs to one battery; repeated: acd929123456"]
    # what is no BLE MAC is still refused, in one sentence that says what would be one
    with pytest.raises(OptionsError) as caught:
        parse_options(with_mac("AC:D9:29:12:34"))
    assert caught.value.problems == [
        "batteries[0].ble_mac: 'AC:D9:29:12:34' is not a BLE MAC; use its 12 hexadecimal digits, e.g. "
        "02a1b2c3d400 or 02:A1:B2:C3:D4:00"
    ]


async def test_a_ble_mac_written_with_colons_pins_the_battery_that_answers(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    sim = await make_sim(1)
    mac = sim.batteries[0].ble_mac  # 02a1b2c3d400
    written = ":".join(mac[i : i + 2] for i in range(0, 12, 2)).upper()
    configured = parse_options(with_mac(written)).batteries[0].ble_mac
    host, port = sim.addresses[0]
    client = MarstekClient(host, port, endpoint=endpoint, pacing=FAST, ble_mac=configured)
    report = await client.read([Method.GET_DEVICE, Method.ES_MODE])
    assert set(report.results) == {Method.GET_DEVICE, Method.ES_MODE}, report.errors
    assert client.stranger is None
    assert client.identity == mac


# 4. a host name and an address a previous version learned ---------------------------------------------------


async def test_a_host_name_is_asked_before_the_address_a_previous_version_learned(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    """A previous version replaced the host name with the IP it found the battery at and kept that IP
    under /data; the battery has a new lease since, which the name follows."""
    port = free_port()  # 127.0.0.1 on the test's port is the add-on's own socket
    sim = await make_sim(1, port=port)
    await sim.move(0, "127.0.0.1")  # where `localhost` leads
    client = MarstekClient("localhost", port, endpoint=endpoint, pacing=FAST, learned="127.0.0.99")
    report = await client.read([Method.GET_DEVICE])
    assert Method.GET_DEVICE in report.results, report.errors
    assert client.address == ("127.0.0.1", port)
    assert client.host == "localhost"  # kept: the add-on stores no address for it any more


async def test_the_learned_address_stands_in_while_the_name_cannot_be_looked_up(
    make_sim: SimFactory, endpoint: UdpEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = await make_sim(1)
    host, port = sim.addresses[0]

    async def no_name_service(*args: object, **kwargs: object) -> list[Any]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", no_name_service)
    client = MarstekClient("venus.lan", port, endpoint=endpoint, pacing=FAST, learned=host)
    report = await client.read([Method.GET_DEVICE])
    assert Method.GET_DEVICE in report.results, report.errors
    assert client.address == (host, port)
    assert client.host == "venus.lan"


def test_a_configured_ip_starts_at_the_learned_one_and_a_damaged_entry_is_ignored() -> None:
    endpoint = UdpEndpoint()  # never opened: nothing is sent
    moved = MarstekClient("127.0.0.11", endpoint=endpoint, learned="127.0.0.21")
    assert moved.host == "127.0.0.21"  # as before: an IP configured is stale once the battery moved
    kept = MarstekClient("127.0.0.11", endpoint=endpoint, learned="not an address")
    assert kept.address[0] == "127.0.0.11"
    named = MarstekClient("venus.lan", endpoint=endpoint, learned="")
    assert named.host == "venus.lan"
