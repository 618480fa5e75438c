"""Several batteries polled concurrently, each at its own pace, sharing one socket per API port."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ...tasks import cancel_all
from .client import DEFAULT_PORT, MarstekClient, Pacing
from .link import BatteryLink, LinkSettings
from .transport import UdpEndpoint


@dataclass(frozen=True)
class BatteryConfig:
    name: str
    host: str
    port: int = DEFAULT_PORT
    ble_mac: str | None = None


class BatteryFleet:
    """`async with BatteryFleet(...) as fleet: await fleet.run()`."""

    def __init__(
        self,
        batteries: Sequence[BatteryConfig],
        *,
        local_host: str = "0.0.0.0",
        pacing: Pacing | None = None,
        settings: LinkSettings | None = None,
        on_update: Callable[[BatteryLink], None] | None = None,
    ) -> None:
        self.configs = list(batteries)
        self.local_host = local_host
        self.pacing = pacing
        self.settings = settings
        self.on_update = on_update
        self.endpoints: dict[int, UdpEndpoint] = {}
        self.links: list[BatteryLink] = []

    async def __aenter__(self) -> BatteryFleet:
        try:
            await self._open()
        except BaseException:  # close the sockets opened so far
            await self.__aexit__()
            raise
        return self

    async def _open(self) -> None:
        for config in self.configs:
            if config.port not in self.endpoints:
                self.endpoints[config.port] = await UdpEndpoint.open(self.local_host, config.port)
            client = MarstekClient(
                config.host,
                config.port,
                endpoint=self.endpoints[config.port],
                pacing=self.pacing,
                ble_mac=config.ble_mac,
            )
            self.links.append(BatteryLink(config.name, client, self.settings, self.on_update))

    async def __aexit__(self, *exc: object) -> None:
        for endpoint in self.endpoints.values():
            endpoint.close()

    async def run(self) -> None:
        """Poll every battery until cancelled."""
        tasks = [asyncio.create_task(link.run(), name=f"poll-{link.name}") for link in self.links]
        try:
            await asyncio.gather(*tasks)
        finally:
            await cancel_all(tasks)
