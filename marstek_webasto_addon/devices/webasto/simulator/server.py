"""The simulated wallbox on a real Modbus TCP server (pymodbus SimDevice API, not the deprecated contexts)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler  # the only internal import; see notes below
from pymodbus.simulator import DataType, SimData, SimDevice

from ...marstek.simulator.physics import SimClock
from ..registers import WallboxModel
from .model import ModbusRefusal, WallboxSim

_LOG = logging.getLogger(__name__)

# The UNITE reads zeros across gaps inside these blocks (firmware 3.187); the NEXT defines single registers.
_UNITE_BLOCKS = (
    (100, 296),
    (400, 406),
    (1000, 1038),
    (1100, 1107),
    (1500, 1531),
    (2000, 2003),
    (5004, 5005),
    (6000, 6001),
)


def _address_ranges(sim: WallboxSim) -> Sequence[tuple[int, int]]:
    if sim.is_unite and sim.profile.gap_reads:
        return _UNITE_BLOCKS
    return [(r.address, r.end) for r in sim.rules.registers]


def make_device(sim: WallboxSim, unit_id: int) -> SimDevice:
    """Every read is rendered from the model; writes go to the model. Undefined addresses: exception 2."""

    async def action(
        fc: int,
        start: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        # Never await here: pymodbus 3.16 would answer with the wrong transaction id (a race).
        try:
            if set_values is None:
                if fc == 6:
                    return None  # FC6 reads back what was just written
                for a in range(address, address + count):
                    registers[a - start] = sim.read(fc, a)
                return None
            sim.write(fc, address, [int(v) for v in set_values])
        except ModbusRefusal as refusal:
            return ExcCodes(refusal.code)
        return None

    blocks = [
        SimData(lo, count=hi - lo, values=0, datatype=DataType.REGISTERS) for lo, hi in _address_ranges(sim)
    ]
    return SimDevice(id=unit_id, simdata=blocks, action=action)


class _Handler(ServerRequestHandler):
    peer: tuple[str, int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.peer = transport.get_extra_info("peername")
        owner = self.server
        assert isinstance(owner, WallboxServer)
        owner.client_event(self, up=True)

    def callback_disconnected(self, exc: Exception | None) -> None:
        super().callback_disconnected(exc)
        owner = self.server
        assert isinstance(owner, WallboxServer)
        owner.client_event(self, up=False)


class WallboxServer(ModbusTcpServer):
    """One client at a time (a second one is accepted and reset at once, as the box refuses it)."""

    def __init__(
        self,
        sim: WallboxSim,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        unit_id: int = 255,
        clock: SimClock | None = None,
        tick_s: float = 0.1,
    ) -> None:
        def only_our_unit(sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
            return pdu if sending or pdu.dev_id == unit_id else None  # other unit ids get no reply

        # pymodbus types trace_pdu as never returning None, but None is how a request is dropped.
        tracer = cast(Callable[[bool, ModbusPDU], ModbusPDU], only_our_unit)
        super().__init__(make_device(sim, unit_id), address=(host, port), trace_pdu=tracer)
        self.sim = sim
        self.clock = clock or SimClock()
        self.tick_s = tick_s
        self.current: _Handler | None = None
        self.refused = 0
        self.connections = 0
        self._refuse_until = 0.0
        self._ticker: asyncio.Task[None] | None = None
        if sim.is_unite:
            # On fail-safe the UNITE restarts the socket if it is still open (UNITE PDF).
            sim.on_failsafe = self.drop_client

    def callback_new_connection(self) -> _Handler:
        return _Handler(self, self.trace_packet, self.trace_pdu, self.trace_connect)  # type: ignore[no-untyped-call]

    def client_event(self, handler: _Handler, *, up: bool) -> None:
        if up:
            busy = self.current is not None
            locked_out = time.monotonic() < self._refuse_until
            if busy or locked_out:
                self.refused += 1
                _LOG.info(
                    "refusing a Modbus client from %s (%s)", handler.peer, "busy" if busy else "locked out"
                )
                if handler.transport is not None:
                    cast(asyncio.Transport, handler.transport).abort()
                return
            self.current = handler
            self.connections += 1
            return
        if handler is self.current:
            self.current = None
            self.sim.client_left()
            if self.sim.quirks.refuse_reconnect_until_timeout:
                self._refuse_until = time.monotonic() + (self.sim.failsafe_timeout or 20)

    def drop_client(self) -> None:
        if self.current is not None and self.current.transport is not None:
            self.current.transport.close()

    @property
    def port(self) -> int:
        server = cast(asyncio.Server | None, self.transport)
        sockets: list[Any] = list(server.sockets) if server is not None else []
        return int(sockets[0].getsockname()[1]) if sockets else 0

    async def start(self) -> int:
        await self.serve_forever(background=True)
        self._ticker = asyncio.create_task(self._tick_loop(), name="wallbox-sim-tick")
        return self.port

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        await self.shutdown()  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> WallboxServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _tick_loop(self) -> None:
        last = self.clock.seconds()
        while True:
            await asyncio.sleep(self.tick_s)
            now = self.clock.seconds()
            try:
                self.sim.tick(now - last)
            except Exception:  # a model bug must not silently freeze the simulated box
                _LOG.exception("wallbox simulator tick failed")
            last = now


def build(model: WallboxModel, *, speed: float = 1.0, **profile: object) -> tuple[WallboxSim, SimClock]:
    """A simulator and its clock with default settings, for the CLI and the demo."""
    from .model import WallboxProfile

    clock = SimClock(speed)
    sim = WallboxSim(WallboxProfile.for_model(model, **profile), sim_now=clock.now)
    return sim, clock
