"""Finding and following Venus batteries: discovery replies that cannot be trusted, and `auto`'s
return from Modbus to a Local API on a marginal Wi-Fi link."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from marstek_webasto_addon.devices.marstek.commands import PassiveMode
from marstek_webasto_addon.devices.marstek.discovery import discover, expand_targets
from marstek_webasto_addon.devices.marstek.fallback import FallbackBattery
from marstek_webasto_addon.devices.marstek.link import BatteryLink, LinkSettings
from marstek_webasto_addon.devices.marstek.transport import UdpEndpoint

from .conftest import SimFactory, client_for, until
from .test_venus_transport import auto_battery, running

pytestmark = pytest.mark.timeout(90)


class _Stranger(asyncio.DatagramProtocol):
    """Some other device on the LAN that answers a GetDevice broadcast claiming a battery's BLE MAC in its
    result, while its `src` (what every reply of a real battery carries) names another MAC."""

    def __init__(self, claimed_mac: str) -> None:
        self.claimed_mac = claimed_mac
        self.transport: asyncio.DatagramTransport | None = None
        self.asked = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        request = json.loads(data)
        if request.get("method") != "Marstek.GetDevice" or self.transport is None:
            return
        self.asked += 1
        reply = {
            "id": request["id"],
            "src": "VenusE 3.0-0affeeaffe01",
            "result": {"device": "VenusE 3.0", "ver": 150, "ble_mac": self.claimed_mac, "ip": "127.0.0.5"},
        }
        self.transport.sendto(json.dumps(reply).encode(), addr)


async def test_a_stranger_claiming_a_batterys_mac_does_not_lure_the_link_away_from_it(
    make_sim: SimFactory, endpoint: UdpEndpoint, udp_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    # The stranger answers first (the battery takes 50 ms): a search that trusts the result's ble_mac over
    # the reply's src follows it, polls it in vain, and never finds the battery.
    sim = await make_sim(1, latency=0.05)
    mac = sim.batteries[0].ble_mac
    stranger = _Stranger(mac)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: stranger, local_addr=("127.0.0.5", udp_port)
    )
    try:
        targets = tuple(expand_targets(["127.0.0.0/27"], udp_port))
        settings = LinkSettings(
            poll_interval=0.1,
            offline_after=2,
            rediscovery_timeout=0.5,
            rediscovery_interval=0.1,
            rediscovery_targets=targets,
        )
        link = BatteryLink("FaseA", client_for(sim, endpoint, 0), settings)
        assert await link.poll_once()
        await sim.move(0, "127.0.0.21")  # a new DHCP lease
        async with running(link):
            await until(lambda: link.client.host == "127.0.0.21" and link.online, 10)
        assert link.snapshot.ble_mac == mac
        assert stranger.asked
        assert "0affeeaffe01" in caplog.text  # what was ignored, and why, is in the log
        found = await discover(endpoint, targets, timeout=0.5, repeat=0.2)
        assert [(b.host, b.ble_mac) for b in found] == [("127.0.0.21", mac)]
    finally:
        transport.close()


async def test_discovery_logs_an_untrustworthy_reply_once_per_search(
    make_sim: SimFactory, endpoint: UdpEndpoint, udp_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    sim = await make_sim(1)
    stranger = _Stranger(sim.batteries[0].ble_mac)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: stranger, local_addr=("127.0.0.5", udp_port)
    )
    try:
        await discover(endpoint, [("127.0.0.5", udp_port)], timeout=0.5, repeat=0.1)
    finally:
        transport.close()
    assert stranger.asked >= 3
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "127.0.0.5" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


# transport auto on a marginal link -----------------------------------------------------------------------


def _answered_after(battery: FallbackBattery, heard: float | None) -> Callable[[], bool]:
    return lambda: (battery.udp.last_answer_at or 0.0) > (heard or 0.0)


async def test_auto_does_not_leave_a_working_modbus_for_a_local_api_that_answered_once(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    # A marginal Wi-Fi: the Local API answers one probe now and then, and is silent again. Each return to it
    # released RS485 control (the forced charge stopped, the battery fell back to Auto), sent the Passive
    # over the link that had just failed, and 1.5 poll intervals later went back to Modbus: the battery
    # flapped between the optimiser's set-point and its own Auto mode every few minutes.
    sim = await make_sim(1, socs=[55.0])
    venus = sim.batteries[0]
    server = await sim.serve_modbus()
    battery, link = auto_battery(sim, endpoint, server, poll_interval=0.5, probe_every=1.0)
    in_force: list[bool] = []

    async def watch() -> None:
        while True:
            in_force.append(venus.rs485_control or venus.mode == "Passive")
            await asyncio.sleep(0.005)

    try:
        async with running(link):
            await until(lambda: link.online and battery.transport == "udp", 10)
            sim.outage(0, 1e6)
            await until(lambda: battery.transport == "modbus" and battery.modbus.last_answer_at, 15)
            assert (await battery.set_mode(PassiveMode(-600, 300))).ok  # the optimiser's charge
            assert venus.rs485_control
            assert venus.mode == "Auto"
            watcher = asyncio.create_task(watch())
            try:
                for _ in range(2):
                    sim.outage(0, 0)  # one probe gets through ...
                    await until(_answered_after(battery, battery.udp.last_answer_at), 10, every=0.001)
                    sim.outage(0, 1e6)  # ... and the link is gone again
                    await asyncio.sleep(2.0)  # longer than the silence that sends it back to Modbus
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            assert all(in_force), "the optimiser's charge was dropped"
            assert [s.to for s in battery.switches] == ["modbus"]
            assert link.online

            # A Local API that answers for good is taken back, and the charge carried over to it.
            sim.outage(0, 0)
            started = time.monotonic()
            await until(lambda: battery.transport == "udp", 15)
            assert time.monotonic() - started < 10 * link.settings.poll_interval
            await until(lambda: venus.mode == "Passive" and not venus.rs485_control, 5)
            assert venus.passive_power == -600
    finally:
        await battery.close()
