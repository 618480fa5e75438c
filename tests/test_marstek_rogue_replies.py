"""The Local API bridge against batteries that vanish, move, answer late, wrongly or implausibly.

Real UDP on 127.0.0.x against the project's simulator; no mocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import pytest

from marstek_webasto_addon.devices.marstek.client import MarstekClient
from marstek_webasto_addon.devices.marstek.commands import PassiveMode
from marstek_webasto_addon.devices.marstek.datapoints import Method
from marstek_webasto_addon.devices.marstek.discovery import discover, expand_targets
from marstek_webasto_addon.devices.marstek.link import BatteryLink
from marstek_webasto_addon.devices.marstek.simulator import Quirks
from marstek_webasto_addon.devices.marstek.transport import UdpEndpoint
from marstek_webasto_addon.devices.outcome import WriteStatus

from .conftest import FAST, SimFactory, client_for, until
from .test_marstek_link import settings

pytestmark = pytest.mark.timeout(60)


# write verification must not rest on implausible readings --------------------------------------------


async def test_a_passive_charge_is_not_verified_by_an_implausible_soc(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    # The battery takes Passive but its power stays at 0 W (frozen physics: it does not follow). Reading
    # SOC 250 % must not excuse the missing charge power ("full, cannot charge"): 250 % is screened out of
    # the snapshot, and the verdict must not rest on it either.
    sim = await make_sim(1, socs=[40.0])
    sim.frozen = True
    client = client_for(sim, endpoint)
    await client.read()
    assert client.snapshot.soc == 40
    sim.batteries[0].quirks.rogue_values.update(bat_soc=250)
    outcome = await client.set_mode(PassiveMode(-1000, 600))
    assert client.snapshot.soc == 40  # the snapshot screened it out...
    assert sim.batteries[0].physics.ac_power == 0  # ...and the battery does not charge
    assert outcome.status is not WriteStatus.APPLIED, outcome  # ...yet the write counts as verified


async def test_a_passive_charge_is_not_verified_by_an_implausible_power(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    # ES.GetMode reporting -1 MW (a 2.5 kW battery) is implausible; the write's verdict takes it as the
    # charge it asked for, and the Last command sensor shows the 1 MW.
    sim = await make_sim(1, socs=[40.0])
    sim.frozen = True
    client = client_for(sim, endpoint)
    await client.read()
    sim.batteries[0].quirks.rogue_values.update(ongrid_power=-1_000_000)
    outcome = await client.set_mode(PassiveMode(-1000, 600))
    assert client.snapshot.ac_power == 0  # screened out of the snapshot
    assert outcome.status is not WriteStatus.APPLIED, outcome
    assert "1000000" not in outcome.detail


async def test_a_passive_discharge_is_not_verified_by_a_non_finite_power(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    # "nan" (a string where a number belongs: valid JSON of the wrong shape) passes the reply model as
    # float('nan'); every comparison with NaN is False, so any Passive looks applied.
    sim = await make_sim(1, socs=[60.0])
    sim.frozen = True
    client = client_for(sim, endpoint)
    await client.read()
    sim.batteries[0].quirks.rogue_values.update(ongrid_power="nan")
    outcome = await client.set_mode(PassiveMode(1000, 600))
    assert sim.batteries[0].physics.ac_power == 0
    assert outcome.status is not WriteStatus.APPLIED, outcome


# discovery and address changes -------------------------------------------------------------------------


async def test_a_battery_whose_getdevice_leaves_the_mac_out_is_found_again_after_moving(
    make_sim: SimFactory, endpoint: UdpEndpoint, udp_port: int
) -> None:
    # Some HMG-50 builds send no ble_mac in Marstek.GetDevice; the client then takes its identity from the
    # reply's `src` (client.read). Rediscovery must match on the same identity.
    sim = await make_sim(2, quirks=Quirks(rogue_values={"ble_mac": ""}))
    link = BatteryLink("FaseA", client_for(sim, endpoint, 0), settings(udp_port))
    assert await link.poll_once()
    assert link.client.identity == sim.batteries[0].ble_mac  # learned from src
    await sim.move(0, "127.0.0.21")
    runner = asyncio.create_task(link.run())
    try:
        await until(lambda: link.client.host == "127.0.0.21" and link.online, timeout=10)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


async def test_discovery_survives_a_non_finite_firmware_version(
    make_sim: SimFactory, endpoint: UdpEndpoint, udp_port: int
) -> None:
    # `ver` "nan" (wrong type, accepted by the model as float nan) makes discovery's int(ver) raise inside
    # the datagram callback: the battery is never found, and every reply is an "Exception in callback".
    sim = await make_sim(1, quirks=Quirks(rogue_values={"ver": "nan"}))
    errors: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        found = await discover(endpoint, expand_targets(["127.0.0.11"], udp_port), timeout=0.5, repeat=0.2)
    finally:
        loop.set_exception_handler(previous)
    assert [b.ble_mac for b in found] == [sim.batteries[0].ble_mac], errors
    assert not errors


# late replies ------------------------------------------------------------------------------------------


async def test_a_write_whose_ack_comes_after_the_retry_is_not_reported_as_failed(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    # Every reply takes 0.4 s. Reads cope (a retry reuses the id, the first copy's reply completes it);
    # a write waits 0.3 s per send and takes a new id for each, so every ack is thrown away as late. The
    # battery took the command: what ES.GetMode shows decides, and the command is not sent over again.
    pacing = replace(FAST, timeout=0.3, read_timeout=0.15)
    sim = await make_sim(1, socs=[60.0], latency=0.4)
    client = client_for(sim, endpoint, 0, pacing)
    report = await client.read([Method.GET_DEVICE, Method.ES_MODE])
    assert not report.errors  # reads survive the latency
    outcome = await client.set_mode(PassiveMode(800, 600))
    battery = sim.batteries[0]
    assert battery.mode == "Passive"
    sends = len(battery.setmode_log)
    assert outcome.status is WriteStatus.APPLIED, (outcome, sends)
    assert "no acknowledgement in time" in outcome.detail
    assert sends <= pacing.attempts, sends  # one call's sends, no second attempt


# devices that answer, but not as a battery should ---------------------------------------------------------

SRC = "VenusE 3.0-02a1b2c3ffff"


@contextlib.asynccontextmanager
async def responder(host: str, port: int, answer: Callable[[int], dict[str, Any]]) -> AsyncIterator[None]:
    """A device at host:port that answers every request with `answer(request id)`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, port))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()

    async def serve() -> None:
        while True:
            data, addr = await loop.sock_recvfrom(sock, 4096)
            await loop.sock_sendto(sock, json.dumps(answer(json.loads(data)["id"])).encode(), addr)

    server = asyncio.create_task(serve())
    try:
        yield
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
        sock.close()


def link_to(host: str, port: int, endpoint: UdpEndpoint) -> BatteryLink:
    return BatteryLink("X", MarstekClient(host, port, endpoint=endpoint, pacing=FAST), settings(port))


async def test_replies_with_the_wrong_id_count_as_silence_and_the_battery_goes_offline(
    endpoint: UdpEndpoint, udp_port: int
) -> None:
    # A device that answers every request with another id (off by one) is as good as silent.
    def off_by_one(request_id: int) -> dict[str, Any]:
        result = {"id": 0, "mode": "Auto", "ongrid_power": 0, "bat_soc": 50}
        return {"id": request_id % 65535 + 1, "src": SRC, "result": result}

    async with responder("127.0.0.31", udp_port, off_by_one):
        link = link_to("127.0.0.31", udp_port, endpoint)
        for _ in range(3):
            assert not await link.poll_once()
        assert link.client.last_answer_at is None
        assert link.snapshot.soc is None
        assert endpoint.stats["unsolicited"] + endpoint.stats["late_or_duplicate"] > 0


async def test_a_reply_of_the_wrong_shape_is_an_invalid_reply_not_an_answer(
    endpoint: UdpEndpoint, udp_port: int
) -> None:
    # `result` a list, not an object: valid JSON, wrong shape. No answer, and the error says why.
    async with responder("127.0.0.32", udp_port, lambda i: {"id": i, "src": SRC, "result": [1, 2, 3]}):
        link = link_to("127.0.0.32", udp_port, endpoint)
        assert not await link.poll_once()
        assert "invalid reply" in link.last_error
        assert link.client.last_answer_at is None


async def test_a_battery_that_answers_every_request_with_an_error_is_reported(
    endpoint: UdpEndpoint, udp_port: int
) -> None:
    # Every method answered with -32603 Internal error: nothing is read, ever. Any reply counts as an
    # answer (the device is there), but the link keeps the errors as its last error: the panel does not
    # show the battery as fine while all its readings age out.
    def internal_error(request_id: int) -> dict[str, Any]:
        return {"id": request_id, "src": SRC, "error": {"code": -32603, "message": "Internal error"}}

    async with responder("127.0.0.33", udp_port, internal_error):
        link = link_to("127.0.0.33", udp_port, endpoint)
        for _ in range(3):
            await link.poll_once()
        assert link.snapshot.values == {}
        assert "answers with errors only" in link.last_error, (link.online, link.last_error)
