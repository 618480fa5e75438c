"""Discovery, availability, identity by ble_mac and following a battery that changes IP address."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable

import pytest

from marstek_webasto_addon.devices.marstek.client import MarstekClient
from marstek_webasto_addon.devices.marstek.datapoints import Method
from marstek_webasto_addon.devices.marstek.discovery import discover, expand_targets
from marstek_webasto_addon.devices.marstek.fleet import BatteryConfig, BatteryFleet
from marstek_webasto_addon.devices.marstek.link import BatteryLink, LinkSettings
from marstek_webasto_addon.devices.marstek.protocol import IdentityMismatch
from marstek_webasto_addon.devices.marstek.transport import UdpEndpoint

from .conftest import FAST, SimFactory, client_for, until

pytestmark = pytest.mark.timeout(60)


def settings(port: int, **overrides: float) -> LinkSettings:
    values: dict[str, float] = {
        "poll_interval": 0.05,
        "offline_after": 2,
        "rediscovery_timeout": 1.0,
        "rediscovery_interval": 0.1,
        **overrides,
    }
    return LinkSettings(rediscovery_targets=tuple(expand_targets(["127.0.0.0/27"], port)), **values)  # type: ignore[arg-type]


async def test_discovery_finds_three_batteries_once_each(
    make_sim: SimFactory, endpoint: UdpEndpoint, udp_port: int
) -> None:
    sim = await make_sim(3)
    found = await discover(endpoint, expand_targets(["127.0.0.0/27"], udp_port), timeout=1.0, repeat=0.3)
    assert [b.host for b in found] == ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
    assert {b.ble_mac for b in found} == {b.ble_mac for b in sim.batteries}
    assert all(b.model == "VenusE 3.0" and b.firmware == 150 for b in found)
    # the batteries share one WiFi MAC prefix but each has its own ble_mac: deduplication is by ble_mac
    assert len({b.key for b in found}) == 3


async def test_discovery_stops_early_when_the_wanted_battery_answers(
    make_sim: SimFactory, endpoint: UdpEndpoint, udp_port: int
) -> None:
    sim = await make_sim(3)
    wanted = sim.batteries[1].ble_mac
    loop = asyncio.get_running_loop()
    started = loop.time()
    found = await discover(
        endpoint,
        expand_targets(["127.0.0.12"], udp_port),
        timeout=5.0,
        stop_when=lambda b: b.ble_mac == wanted,
    )
    assert loop.time() - started < 2.5  # well before the 5 s timeout
    assert [b.ble_mac for b in found] == [wanted]


def test_targets_accept_addresses_ports_and_blocks() -> None:
    assert expand_targets(["127.0.0.5", "127.0.0.6:40000"], 30000) == [
        ("127.0.0.5", 30000),
        ("127.0.0.6", 40000),
    ]
    assert len(expand_targets(["127.0.0.0/30"], 1)) == 2
    with pytest.raises(ValueError, match="at most"):
        expand_targets(["10.0.0.0/8"], 1)


async def test_battery_that_changes_ip_is_found_again_by_ble_mac(
    make_sim: SimFactory, endpoint: UdpEndpoint, udp_port: int
) -> None:
    sim = await make_sim(2)
    link = BatteryLink("FaseA", client_for(sim, endpoint, 0), settings(udp_port))
    assert await link.poll_once()
    mac = link.client.identity
    assert mac == sim.batteries[0].ble_mac

    await sim.move(0, "127.0.0.21")  # the LAN moved subnet, as it did for the seed's user
    states = [await link.poll_once() for _ in range(4)]
    assert states[0] is True  # one failed poll is not yet "offline"
    assert False in states
    assert link.client.host == "127.0.0.21"
    assert await link.poll_once()
    assert link.online
    assert link.snapshot.ble_mac == mac


async def test_another_battery_at_our_address_is_not_mistaken_for_ours(
    make_sim: SimFactory, endpoint: UdpEndpoint, udp_port: int
) -> None:
    sim = await make_sim(2)
    link = BatteryLink("FaseA", client_for(sim, endpoint, 0), settings(udp_port))
    assert await link.poll_once()
    soc_a = link.snapshot.soc
    # battery A moves away and battery B takes over A's old address
    await sim.move(0, "127.0.0.21")
    await sim.move(1, "127.0.0.11")
    report = await link.client.read([Method.ES_STATUS])
    assert isinstance(report.errors[Method.ES_STATUS], IdentityMismatch)
    assert link.snapshot.soc == soc_a  # B's values never land in A's snapshot
    runner = asyncio.create_task(link.run())
    try:
        # offline after 2 intervals without an answer from A, then searched for by ble_mac and found
        await until(lambda: link.client.host == "127.0.0.21" and link.online, timeout=20)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    assert link.snapshot.ble_mac == sim.batteries[0].ble_mac


async def test_battery_goes_offline_and_comes_back_by_itself(
    make_sim: SimFactory, endpoint: UdpEndpoint, udp_port: int
) -> None:
    sim = await make_sim(1)
    updates: list[bool] = []
    link = BatteryLink(
        "FaseA", client_for(sim, endpoint, 0), settings(udp_port), lambda lk: updates.append(lk.online)
    )
    assert await link.poll_once()
    sim.outage(0, 60)
    failed_but_online = 0
    while await link.poll_once():
        failed_but_online += 1
    # offline after 2.25 poll intervals without an answer (offline_after 2, plus the grace)
    assert 1 <= failed_but_online <= 2  # one failed poll is tolerated (WiFi loses packets)
    assert "no reply" in link.last_error
    sim.outage(0, 0)  # the network is back
    for _ in range(10):
        if await link.poll_once():
            break
    assert link.online
    assert updates[0] is True
    assert False in updates
    assert updates[-1] is True


async def test_an_unexpected_error_does_not_stop_polling(
    make_sim: SimFactory, endpoint: UdpEndpoint, udp_port: int
) -> None:
    sim = await make_sim(1)
    polls = 0

    def explode(link: BatteryLink) -> None:
        nonlocal polls
        polls += 1
        raise RuntimeError("a bug in a callback")

    link = BatteryLink("FaseA", client_for(sim, endpoint, 0), settings(udp_port), explode)
    runner = asyncio.create_task(link.run())
    for _ in range(100):
        if polls >= 3:
            break
        await asyncio.sleep(0.05)
    assert not runner.done()
    runner.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await runner
    assert polls >= 3
    assert "internal error" in link.last_error


async def test_fleet_polls_every_battery_concurrently(make_sim: SimFactory, udp_port: int) -> None:
    sim = await make_sim(3, socs=[100.0, 22.0, 97.0])
    configs = [
        BatteryConfig(f"Fase{c}", host, port) for c, (host, port) in zip("ABC", sim.addresses, strict=True)
    ]
    seen: set[str] = set()
    async with BatteryFleet(
        configs,
        local_host="127.0.0.1",
        pacing=FAST,
        settings=LinkSettings(poll_interval=0.2),
        on_update=lambda link: seen.add(link.name),
    ) as fleet:
        task = asyncio.create_task(fleet.run())
        for _ in range(100):
            if seen == {"FaseA", "FaseB", "FaseC"}:
                break
            await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert seen == {"FaseA", "FaseB", "FaseC"}
    assert [round(link.snapshot.soc or 0) for link in fleet.links] == [100, 22, 97]


# A misbehaving device: answers every request with whatever the test chooses.


@contextlib.asynccontextmanager
async def rogue_device(port: int, answer: Callable[[dict[str, object]], bytes]) -> AsyncIterator[str]:
    host = "127.0.0.31"

    class Rogue(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            reply = answer(json.loads(data))
            if reply:
                self.transport.sendto(reply, addr)  # type: ignore[attr-defined]

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(Rogue, sock=sock)
    try:
        yield host
    finally:
        transport.close()


async def test_replies_from_another_source_port_of_the_device_are_accepted(
    endpoint: UdpEndpoint, udp_port: int
) -> None:
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.31", 0))  # the device answers from an ephemeral port, not the API port

    def answer(request: dict[str, object]) -> bytes:
        sender.sendto(
            envelope(request, {"id": 0, "mode": "Auto", "ongrid_power": 5}), ("127.0.0.1", udp_port)
        )
        return b""

    try:
        async with rogue_device(udp_port, answer) as host:
            result = await MarstekClient(host, udp_port, endpoint=endpoint, pacing=FAST).call(Method.ES_MODE)
    finally:
        sender.close()
    assert result["mode"] == "Auto"


def envelope(request: dict[str, object], result: object) -> bytes:
    return json.dumps({"id": request["id"], "src": "VenusE 3.0-02a1b2c3d4ff", "result": result}).encode()


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (lambda r: envelope(r, {"bat_soc": 50})[:-9], "not JSON"),
        (lambda r: b"x" * 60_000, "exceeds"),
        (lambda r: json.dumps({"id": r["id"], "src": "VenusE 3.0-02a1b2c3d4ff"}).encode(), "exactly one"),
        (lambda r: envelope(r, "not an object"), "valid dictionary"),
        (lambda r: b"[1, 2]", "JSON list"),
    ],
    ids=["truncated", "huge", "missing-result", "result-not-object", "not-an-object"],
)
async def test_garbage_replies_give_clear_errors_and_the_poll_loop_survives(
    endpoint: UdpEndpoint, udp_port: int, answer: Callable[[dict[str, object]], bytes], reason: str
) -> None:
    quick = FAST.__class__(request_gap=0.001, timeout=0.05, attempts=2, backoff=(0.01,))
    async with rogue_device(udp_port, answer) as host:
        link = BatteryLink(
            "Rogue",
            MarstekClient(host, udp_port, endpoint=endpoint, pacing=quick),
            LinkSettings(poll_interval=0.01, offline_after=1),
        )
        polls = 0

        def count(_: BatteryLink) -> None:
            nonlocal polls
            polls += 1

        link.on_update = count
        runner = asyncio.create_task(link.run())
        for _ in range(200):
            if polls >= 3:
                break
            await asyncio.sleep(0.02)
        assert not runner.done()  # the loop keeps polling
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    assert polls >= 3
    assert not link.online
    assert "invalid reply" in link.last_error
    assert reason in link.last_error


async def test_wrong_types_and_unknown_fields_lose_only_the_bad_values(
    endpoint: UdpEndpoint, udp_port: int
) -> None:
    def answer(request: dict[str, object]) -> bytes:
        if request["method"] == "Marstek.GetDevice":
            return envelope(request, {"device": "VenusE 3.0", "ver": 150, "ble_mac": "02a1b2c3d4ff"})
        return envelope(
            request,
            {
                "id": 0,
                "bat_soc": "fifty",
                "ongrid_power": -300,
                "surprise": [1, 2],
                "total_grid_input_energy": {"nested": True},
            },
        )

    async with rogue_device(udp_port, answer) as host:
        client = MarstekClient(host, udp_port, endpoint=endpoint, pacing=FAST)
        report = await client.read([Method.GET_DEVICE, Method.ES_STATUS])
    assert client.snapshot.ac_power == -300
    assert "soc" not in client.snapshot.values
    assert "ac_input_energy" not in client.snapshot.values
    assert len(report.problems) == 2
    assert any("bat_soc" in p and "'fifty'" in p for p in report.problems)
