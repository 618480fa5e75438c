"""Shared fixtures: free loopback ports, fast pacing, simulators on real sockets."""

from __future__ import annotations

import asyncio
import io
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import pytest

from marstek_webasto_addon.devices.marstek.client import MarstekClient, Pacing
from marstek_webasto_addon.devices.marstek.simulator import MarstekSimulator
from marstek_webasto_addon.devices.marstek.transport import UdpEndpoint

# Real timing shrunk ~100x so the whole protocol runs in test time; every rule still applies.
FAST = Pacing(
    request_gap=0.005,
    write_gap=0.01,
    timeout=0.3,
    attempts=3,
    backoff=(0.02, 0.05),
    verify_delay=0.15,
    write_attempts=3,
    clear_attempts=3,
    silences_before_unsupported=2,
)


def free_port(kind: int = socket.SOCK_DGRAM, host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def udp_port() -> int:
    return free_port()


SimFactory = Callable[..., Awaitable[MarstekSimulator]]
QUIET_NIGHT = datetime(2026, 3, 10, 3, 0)  # base load only, no PV, no appliance spikes


@pytest.fixture
async def make_sim(udp_port: int) -> AsyncIterator[SimFactory]:
    """Start simulators on the test's port; all are stopped afterwards."""
    started: list[MarstekSimulator] = []

    async def factory(count: int = 1, **kwargs: Any) -> MarstekSimulator:
        kwargs.setdefault("port", udp_port)
        # The simulated home's load and PV follow the simulator's clock: a fixed start makes a test behave
        # the same whatever the hour CI runs it (an evening run once saw the rules' load support step in).
        kwargs.setdefault("start", QUIET_NIGHT)
        sim = MarstekSimulator.build(count, **kwargs)
        await sim.start()
        started.append(sim)
        return sim

    yield factory
    for sim in started:
        await sim.stop()


@pytest.fixture
async def endpoint(udp_port: int) -> AsyncIterator[UdpEndpoint]:
    """The client side, bound to the API port on 127.0.0.1 as the add-on binds it on the LAN."""
    ep = await UdpEndpoint.open("127.0.0.1", udp_port)
    yield ep
    ep.close()


def client_for(
    sim: MarstekSimulator, endpoint: UdpEndpoint, index: int = 0, pacing: Pacing = FAST
) -> MarstekClient:
    host, port = sim.addresses[index]
    return MarstekClient(host, port, endpoint=endpoint, pacing=pacing)


async def until(predicate: Callable[[], object], timeout: float = 15.0, every: float = 0.02) -> None:
    """Wait for a condition that has no event to wait on from outside (a flag, a log line, a page)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s")
        await asyncio.sleep(every)


async def bounded(awaitable: Awaitable[Any], seconds: float, what: str) -> None:
    """Await with a limit; past it, fail with the stack of every task, which shows what was stuck."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if task in done:
        task.result()
        return
    stacks = io.StringIO()
    for other in asyncio.all_tasks():
        print(f"--- {other.get_name()}", file=stacks)
        other.print_stack(limit=6, file=stacks)
    task.cancel()
    raise AssertionError(f"{what}: still running after {seconds:g} s; the tasks:\n{stacks.getvalue()}")
