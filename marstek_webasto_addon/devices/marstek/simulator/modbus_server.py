"""A simulated battery's Modbus map on a real Modbus TCP server (pymodbus SimDevice API).

The physics is ticked by the `MarstekSimulator` that owns the battery; this server only reads and steers
it. Quirk switches (docs/marstek-modbus.md §4.3, §6): one client at a time (a second is accepted and
reset at once), every connection refused, replies held back, and control lost as soon as it is taken.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler  # as the wallbox simulator does
from pymodbus.simulator import DataType, SimData, SimDevice

from ..modbus.registers import Generation
from .device import SimulatedBattery
from .modbus_map import ModbusRefusal, VenusRegisterMap

_LOG = logging.getLogger(__name__)


@dataclass
class ModbusQuirks:
    """Each as seen on real units; change them while running."""

    single_client: bool = True  # the v3's LAN port and most gateways serve one client at a time
    refuse_connections: bool = False  # e.g. v3 EMS 147 once after RS485 control was enabled
    reply_delay: float = 0.0  # seconds; firmware 150 stalls 4-7 s at each cloud upload
    lose_control: bool = False  # RS485 control reads off again at once, the write acknowledged (§4.3)


def make_device(registers: VenusRegisterMap, quirks: ModbusQuirks) -> SimDevice:
    """Every read is rendered from the battery; writes go to its control. Unused addresses: exception 2."""

    async def action(
        fc: int,
        start: int,
        address: int,
        count: int,
        values: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        # Never await here: pymodbus 3.16 would answer with the wrong transaction id (a race).
        try:
            if set_values is None:
                if fc == 6:
                    return None  # FC6 echoes what was just written
                values[address - start : address - start + count] = registers.read(address, count)
                return None
            for offset, value in enumerate(set_values):
                registers.write(address + offset, int(value))
            if quirks.lose_control:
                registers.battery.rs485_control = False
        except ModbusRefusal as refusal:
            return ExcCodes(refusal.code)
        return None

    blocks = [
        SimData(lo, count=hi - lo, values=0, datatype=DataType.REGISTERS) for lo, hi in registers.blocks()
    ]
    # The v3's LAN port ignores the unit id (id 0 answers all); a gateway on the RS485 port passes unit 1.
    unit = 0 if registers.generation is Generation.V3 else registers.unit_id
    return SimDevice(id=unit, simdata=blocks, action=action)


SLOT_SETTLE_S = 0.05  # how long a newcomer waits for the slot's holder to be seen gone


class _Handler(ServerRequestHandler):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        owner = self.server
        assert isinstance(owner, VenusModbusServer)
        owner.client_event(self, up=True)

    def callback_disconnected(self, exc: Exception | None) -> None:
        super().callback_disconnected(exc)
        owner = self.server
        assert isinstance(owner, VenusModbusServer)
        owner.client_event(self, up=False)

    def server_send(self, pdu: ModbusPDU | None, addr: Any) -> None:
        owner = self.server
        assert isinstance(owner, VenusModbusServer)
        delay = owner.quirks.reply_delay
        send = cast(Callable[[ModbusPDU | None, Any], None], super().server_send)  # untyped in pymodbus
        if delay <= 0:
            send(pdu, addr)
            return

        def late() -> None:
            if self.transport is not None and not self.transport.is_closing():
                send(pdu, addr)

        self.loop.call_later(delay, late)


class VenusModbusServer(ModbusTcpServer):
    """One battery's map on `host:port` (port 0: a free one, see `port` after `start()`)."""

    def __init__(
        self,
        battery: SimulatedBattery,
        *,
        generation: Generation | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        quirks: ModbusQuirks | None = None,
    ) -> None:
        self.registers = VenusRegisterMap(battery, generation)

        def record(sending: bool, pdu: ModbusPDU) -> ModbusPDU:
            if not sending:
                self.request_times.append(time.monotonic())
            return pdu

        # pymodbus types trace_pdu loosely; ours only records arrivals.
        tracer = cast(Callable[[bool, ModbusPDU], ModbusPDU], record)
        self.quirks = quirks or ModbusQuirks()
        super().__init__(make_device(self.registers, self.quirks), address=(host, port), trace_pdu=tracer)
        self.battery = battery
        self.current: _Handler | None = None
        self.request_times: list[float] = []  # monotonic arrival of every request
        self.connections = 0
        self.refused = 0

    @property
    def generation(self) -> Generation:
        return self.registers.generation

    def callback_new_connection(self) -> _Handler:
        return _Handler(self, self.trace_packet, self.trace_pdu, self.trace_connect)  # type: ignore[no-untyped-call]

    def client_event(self, handler: _Handler, *, up: bool) -> None:
        if up:
            transport = cast(asyncio.Transport | None, handler.transport)
            if self.quirks.single_client and self.current is not None and transport is not None:
                # A client that closed and connects again at once: the event loop may see the new
                # connection before the old one's end (Python 3.13 does). The slot is decided once the
                # loop has caught up, reading nothing from the newcomer meanwhile.
                transport.pause_reading()
                handler.loop.call_later(SLOT_SETTLE_S, self._admit, handler)
                return
            self._admit(handler)
            return
        if handler is self.current:
            self.current = None

    def _admit(self, handler: _Handler) -> None:
        transport = cast(asyncio.Transport | None, handler.transport)
        if transport is None or transport.is_closing():
            return
        busy = self.quirks.single_client and self.current is not None
        if busy or self.quirks.refuse_connections:
            self.refused += 1
            _LOG.info("refusing a Modbus client (%s)", "busy" if busy else "refusing all")
            transport.abort()
            return
        self.current = handler
        self.connections += 1
        if not transport.is_reading():
            transport.resume_reading()

    @property
    def port(self) -> int:
        server = cast(asyncio.Server | None, self.transport)
        sockets: list[Any] = list(server.sockets) if server is not None else []
        return int(sockets[0].getsockname()[1]) if sockets else 0

    def gaps(self) -> list[float]:
        """Seconds between consecutive requests, as the battery saw them arrive."""
        return [later - earlier for earlier, later in itertools.pairwise(self.request_times)]

    async def start(self) -> int:
        await self.serve_forever(background=True)
        return self.port

    async def stop(self) -> None:
        await self.shutdown()  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> VenusModbusServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
