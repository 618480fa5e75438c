"""One client face for a Venus battery, whichever transport carries it.

The link (polling, availability), the bridge (entities, commands) and the optimiser's controller talk to a
`BatteryClient`: `MarstekClient` (the Local API over UDP), `ModbusBattery` (Modbus TCP) or `FallbackBattery`
(the Local API, with Modbus while it is silent). All fill the same `BatterySnapshot` from the same
data-point table and take the same mode commands.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal, Protocol

from ..outcome import WriteOutcome
from .client import ReadReport
from .commands import ManualSlot, ModeCommand
from .datapoints import Method
from .decode import BatterySnapshot
from .firmware import PowerLimits
from .transport import UdpEndpoint

Transport = Literal["udp", "modbus"]
TRANSPORTS: tuple[Transport, ...] = ("udp", "modbus")


class BatteryClient(Protocol):
    snapshot: BatterySnapshot
    soc_floor: float  # the lowest SOC the add-on discharges to (the DOD it set, else the firmware's 12 %)
    schedule: dict[int, ManualSlot]  # the Local API's manual slots written by the add-on

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def identity(self) -> str | None:
        """The BLE MAC, lower case."""
        ...

    @property
    def last_answer_at(self) -> float | None:
        """time.monotonic() of the last answer."""
        ...

    @property
    def last_src(self) -> str | None: ...

    @property
    def last_round_trip(self) -> float | None: ...

    @property
    def transport(self) -> Transport:
        """The transport the battery is reached over now."""
        ...

    @property
    def transports(self) -> tuple[Transport, ...]:
        """Every transport it may be reached over (its `transport` option): what it can ever offer."""
        ...

    @property
    def endpoint(self) -> UdpEndpoint | None:
        """The UDP socket, for searching a battery that moved (None: not reached over UDP)."""
        ...

    @property
    def limits(self) -> PowerLimits: ...

    @property
    def unsupported_methods(self) -> list[Method]: ...

    @property
    def last_replies(self) -> dict[Method, dict[str, object]]: ...

    def is_unsupported(self, method: Method) -> bool: ...

    def move_to(self, host: str) -> None: ...

    async def read(
        self,
        methods: Iterable[Method] = ...,
        *,
        deadline: float | None = None,
        persist: bool = False,
        give_up_after: int = 2,
        on_first_answer: Callable[[], None] | None = None,
    ) -> ReadReport: ...

    async def set_mode(self, command: ModeCommand) -> WriteOutcome: ...

    async def clear_schedules(self, *, restore: bool = True) -> WriteOutcome: ...

    async def set_dod(self, depth_percent: int) -> WriteOutcome: ...

    async def set_led(self, on: bool) -> WriteOutcome: ...

    async def set_ble_advertising(self, on: bool) -> WriteOutcome: ...

    async def close(self) -> None:
        """The add-on stops: hand back anything this transport holds (Modbus: RS485 control)."""
        ...
