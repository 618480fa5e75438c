"""Simulated batteries on real UDP sockets, with a physics tick loop in simulated time."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from ..modbus.registers import Generation
from .device import Address, Quirks, SimulatedBattery, ticking_order
from .modbus_server import ModbusQuirks, VenusModbusServer
from .physics import BatteryPhysics, Household, SimClock, Site
from .profiles import DEFAULT_PROFILE, PROFILES, FirmwareProfile

_LOG = logging.getLogger(__name__)
_MAX_STEP_S = 5.0


def battery_address(bind: str, index: int, port: int) -> Address:
    """Battery i (from 1) listens on 127.0.0.(10+i):port on loopback, so several share one port as on a
    LAN; on any other bind address they share the address and take consecutive ports."""
    ip = ipaddress.ip_address(bind)
    if ip.is_loopback:
        return (str(ipaddress.ip_address("127.0.0.10") + index), port)
    return (bind, port + index - 1)


@dataclass
class _Endpoint(asyncio.DatagramProtocol):
    simulator: MarstekSimulator
    battery: SimulatedBattery
    transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector transport is a DatagramTransport in behaviour, not by inheritance.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if self.simulator.in_outage(self.battery):
            return
        replies = self.battery.handle(data, (str(addr[0]), int(addr[1])), self.simulator.clock.seconds())
        for payload, target in replies:
            if self.simulator.latency > 0:
                asyncio.get_running_loop().call_later(self.simulator.latency, self._send, payload, target)
            else:
                self._send(payload, target)

    def _send(self, payload: bytes, target: Address) -> None:
        if self.simulator.in_outage(self.battery):
            return  # a reply delayed into an outage is lost too
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(payload, target)


class MarstekSimulator:
    """Runs batteries on UDP. `await start()`, `await stop()`, or `async with`."""

    def __init__(
        self,
        batteries: Sequence[SimulatedBattery],
        addresses: Sequence[Address],
        site: Site,
        clock: SimClock,
        *,
        tick_s: float = 0.1,
        latency: float = 0.0,
    ) -> None:
        self.batteries = list(batteries)
        self.addresses = list(addresses)
        self.site = site
        self.clock = clock
        self.tick_s = tick_s
        self.latency = latency
        self._endpoints: dict[int, _Endpoint] = {}
        self._outage_until: dict[int, float] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._modbus: list[VenusModbusServer] = []
        self._last_tick = 0.0
        self.frozen = False  # physics stands still (time still passes): for exact comparisons in tests

    @classmethod
    def build(
        cls,
        count: int,
        *,
        bind: str = "127.0.0.1",
        port: int = 30000,
        profile: str | FirmwareProfile = DEFAULT_PROFILE,
        speed: float = 1.0,
        quirks: Quirks | None = None,
        socs: Sequence[float] | None = None,
        household: Household | None = None,
        latency: float = 0.0,
        start: datetime | None = None,
    ) -> MarstekSimulator:
        prof = PROFILES[profile] if isinstance(profile, str) else profile
        site = Site(household)
        batteries = []
        for i in range(count):
            address = battery_address(bind, i + 1, port)
            physics = BatteryPhysics(
                prof.capacity_wh,
                prof.max_charge_w,
                prof.max_discharge_w,
                soc=socs[i] if socs and i < len(socs) else 20.0 + (i * 37) % 70,
            )
            batteries.append(
                SimulatedBattery(
                    prof,
                    physics,
                    site,
                    ble_mac=f"02a1b2c3{0xD400 + i:04x}",
                    ip=address[0],
                    phase=i,
                    wifi_mac=f"02f0e1d2{0xC300 + i:04x}",
                    quirks=quirks or Quirks(),
                )
            )
        return cls(
            batteries,
            [battery_address(bind, i + 1, port) for i in range(count)],
            site,
            SimClock(speed, start),
            latency=latency,
        )

    async def __aenter__(self) -> MarstekSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        try:
            for index in range(len(self.batteries)):
                await self._open(index)
        except BaseException:
            for index in list(self._endpoints):
                self._close(index)
            raise
        self.site.update(self.clock.now())
        self._last_tick = self.clock.seconds()
        self._ticker = asyncio.create_task(self._tick_loop(), name="marstek-sim-tick")

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        for server in self._modbus:
            await server.stop()
        self._modbus.clear()
        for index in list(self._endpoints):
            self._close(index)

    async def serve_modbus(
        self,
        index: int = 0,
        *,
        generation: Generation | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        quirks: ModbusQuirks | None = None,
    ) -> VenusModbusServer:
        """Battery `index`'s Modbus map too, on a TCP port of its own (0: a free one), sharing its physics
        with the Local API; the generation follows the profile's model unless given. Stopped with us."""
        server = VenusModbusServer(
            self.batteries[index], generation=generation, host=host, port=port, quirks=quirks
        )
        await server.start()
        self._modbus.append(server)
        return server

    async def _open(self, index: int) -> None:
        host, port = self.addresses[index]
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setblocking(False)
        sock.bind((host, port))
        endpoint = _Endpoint(self, self.batteries[index])
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: endpoint, sock=sock)
        self._endpoints[index] = endpoint

    def _close(self, index: int) -> None:
        endpoint = self._endpoints.pop(index, None)
        if endpoint is not None and endpoint.transport is not None:
            endpoint.transport.close()

    async def move(self, index: int, host: str) -> None:
        """The battery gets a new IP (DHCP lease, subnet change) and answers only there."""
        self._close(index)
        self.addresses[index] = (host, self.addresses[index][1])
        self.batteries[index].ip = host
        await self._open(index)

    def outage(self, index: int, seconds: float) -> None:
        """Drop everything to and from this battery for `seconds` of real time (Q11)."""
        self._outage_until[index] = time.monotonic() + seconds

    def in_outage(self, battery: SimulatedBattery) -> bool:
        index = self.batteries.index(battery)
        return time.monotonic() < self._outage_until.get(index, 0.0)

    def advance(self, seconds: float) -> None:
        """Step the physics by `seconds` of simulated time (in slices, so control loops stay stable)."""
        done = 0.0
        while done < seconds:
            step = min(_MAX_STEP_S, seconds - done)
            done += step
            now_s = self._last_tick + done
            at = self.clock.now()
            self.site.update(at)
            for battery in ticking_order(self.batteries):
                battery.tick(step, now_s, at)
            self.site.integrate(step)
        self._last_tick += seconds

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            now = self.clock.seconds()
            elapsed = now - self._last_tick
            if self.frozen:
                self._last_tick = now
            elif elapsed > 0:
                try:
                    self.advance(elapsed)
                except Exception:  # a bug in the model must not silently stop the simulated world
                    _LOG.exception("simulator tick failed")
