"""Wallbox simulators on real TCP sockets for the tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from marstek_webasto_addon.devices.marstek.simulator.physics import SimClock
from marstek_webasto_addon.devices.webasto.client import WallboxConfig, WebastoClient
from marstek_webasto_addon.devices.webasto.registers import WallboxModel
from marstek_webasto_addon.devices.webasto.simulator import (
    WallboxProfile,
    WallboxQuirks,
    WallboxServer,
    WallboxSim,
)

BoxFactory = Callable[..., Awaitable[tuple[WallboxSim, WallboxServer]]]


@pytest.fixture
async def make_box() -> AsyncIterator[BoxFactory]:
    servers: list[WallboxServer] = []

    async def factory(
        model: WallboxModel,
        *,
        quirks: WallboxQuirks | None = None,
        port: int = 0,
        sim: WallboxSim | None = None,
        life_bit_period_scale: float = 1.0,
        **profile: Any,
    ) -> tuple[WallboxSim, WallboxServer]:
        clock = SimClock()
        if sim is None:
            sim = WallboxSim(
                WallboxProfile.for_model(model, **profile),
                quirks or WallboxQuirks(),
                sim_now=clock.now,
                life_bit_period_scale=life_bit_period_scale,
            )
        server = WallboxServer(sim, port=port, clock=clock)
        await server.start()
        servers.append(server)
        return sim, server

    yield factory
    for server in servers:
        await server.stop()


def client_for(server: WallboxServer, model: WallboxModel, **config: Any) -> WebastoClient:
    config.setdefault("timeout", 0.5)
    return WebastoClient(WallboxConfig("127.0.0.1", model, port=server.port, **config))
