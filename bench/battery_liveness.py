"""Benchmark: how quickly a dead battery is seen, and how fresh the state stays on a lossy network.

The add-on's real defaults (10 s polls, `offline_after` 3, 3 s timeouts, 1 s request gap, 5 s between writes,
5 s verify delay) with every duration divided by `--speed`, and the simulated battery's clock and reply
latency (0.15 s, the middle of the observed 0.1-0.25 s) sped up by the same factor. Every figure printed is
converted back to real seconds, so it reads as it would on a real installation.

Cases:
  * the battery stops answering right after a poll got its answers (the worst moment: the state is as
    fresh as it gets, so the whole offline window has to pass), alone and with a mode write started at the
    same moment (a write to a silent battery retries for longest); then it answers again;
  * 30 % request loss for `--polls` poll intervals: the state's age (now - time of the last answer),
    sampled 20 times per interval, and the polls completed as a share of the nominal rate.

    .venv/bin/python -m bench.battery_liveness [--speed 10] [--polls 60] [--seed 11]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import socket
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from marstek_webasto_addon.devices.marstek.client import MarstekClient, Pacing
from marstek_webasto_addon.devices.marstek.commands import PassiveMode
from marstek_webasto_addon.devices.marstek.link import BatteryLink, LinkSettings
from marstek_webasto_addon.devices.marstek.simulator import MarstekSimulator, Quirks
from marstek_webasto_addon.devices.marstek.transport import UdpEndpoint

LATENCY_S = 0.15
Settings = TypeVar("Settings", Pacing, LinkSettings)


NOT_DURATIONS = frozenset({"offline_grace"})  # a share of a poll interval


def scaled(settings: Settings, speed: float) -> Settings:
    """Every duration (float fields and tuples of them) divided by `speed`; counts stay as they are."""
    changes: dict[str, Any] = {}
    for item in dataclasses.fields(settings):
        value = getattr(settings, item.name)
        if item.name in NOT_DURATIONS:
            continue
        if isinstance(value, float):
            changes[item.name] = value / speed
        elif isinstance(value, tuple) and value and all(isinstance(v, float) for v in value):
            changes[item.name] = tuple(v / speed for v in value)
    return dataclasses.replace(settings, **changes)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Watch:
    """What the link publishes: every on_update, with the time it came."""

    polls: list[float] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, link: BatteryLink) -> None:
        self.polls.append(time.monotonic())
        self.changed.set()

    async def until(self, link: BatteryLink, online: bool, limit: float) -> float:
        """Wall seconds until the link reports `online`; `limit` when it never does."""
        started = time.monotonic()
        while link.online is not online:
            self.changed.clear()
            left = limit - (time.monotonic() - started)
            if left <= 0:
                return limit
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)
        return time.monotonic() - started


@contextlib.asynccontextmanager
async def running_link(
    speed: float, quirks: Quirks
) -> AsyncIterator[tuple[MarstekSimulator, BatteryLink, Watch]]:
    port = free_udp_port()
    sim = MarstekSimulator.build(1, port=port, speed=speed, quirks=quirks, latency=LATENCY_S / speed)
    await sim.start()
    endpoint = await UdpEndpoint.open("127.0.0.1", port)
    host, _ = sim.addresses[0]
    client = MarstekClient(host, port, endpoint=endpoint, pacing=scaled(Pacing(), speed))
    watch = Watch()
    link = BatteryLink("bench", client, scaled(LinkSettings(), speed), watch)
    runner = asyncio.create_task(link.run())
    try:
        yield sim, link, watch
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        endpoint.close()
        await sim.stop()


async def dead_battery(speed: float, pending_write: bool) -> dict[str, float]:
    interval = LinkSettings().poll_interval
    limit = 40 * interval / speed
    async with running_link(speed, Quirks()) as (sim, link, watch):
        await watch.until(link, True, limit)
        while len(watch.polls) < 3:  # past the first, longer poll
            watch.changed.clear()
            await watch.changed.wait()
        watch.changed.clear()
        await watch.changed.wait()  # the moment a poll has just got its answers
        sim.outage(0, 1e6)
        writer = asyncio.create_task(link.client.set_mode(PassiveMode(-1000, 600))) if pending_write else None
        offline = await watch.until(link, False, limit) * speed
        sim.outage(0, 0)
        online = await watch.until(link, True, limit) * speed
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
    return {"offline_s": round(offline, 1), "online_again_s": round(online, 1)}


async def lossy(speed: float, polls: int, seed: int) -> dict[str, float]:
    interval = LinkSettings().poll_interval
    ages: list[float] = []
    async with running_link(speed, Quirks(loss_percent=30, seed=seed)) as (_, link, watch):
        await watch.until(link, True, 10 * interval / speed)
        first = len(watch.polls)
        started = time.monotonic()
        while time.monotonic() - started < polls * interval / speed:
            await asyncio.sleep(interval / speed / 20)
            ages.append((time.monotonic() - link.snapshot.updated_at) * speed)
        done = [t for t in watch.polls[first:] if t >= started]
    gaps = [(b - a) * speed for a, b in itertools.pairwise(done)]
    ages.sort()
    return {
        "age_p50_s": round(statistics.median(ages), 1),
        "age_p95_s": round(ages[int(0.95 * (len(ages) - 1))], 1),
        "age_max_s": round(ages[-1], 1),
        "poll_rate_percent": round(100 * len(done) / polls, 1),
        "longest_gap_between_polls_s": round(max(gaps), 1) if gaps else float("nan"),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--speed", type=float, default=10.0, help="time shrink factor (default 10)")
    parser.add_argument("--polls", type=int, default=60, help="poll intervals at 30 %% loss (default 60)")
    parser.add_argument("--seed", type=int, default=11, help="seed of the simulated loss")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # the client's warnings about the outage are expected here
    alone = await dead_battery(args.speed, pending_write=False)
    writing = await dead_battery(args.speed, pending_write=True)
    loss = await lossy(args.speed, args.polls, args.seed)
    settings, pacing = LinkSettings(), Pacing()
    print(
        f"defaults: {settings.poll_interval:g} s polls, offline_after {settings.offline_after}, "
        f"{pacing.timeout:g} s timeout; time shrunk {args.speed:g}x, figures in real seconds"
    )
    print(f"battery stops answering -> offline:                 {alone['offline_s']:6.1f} s")
    print(f"battery stops answering, write pending -> offline:  {writing['offline_s']:6.1f} s")
    print(
        f"answers again -> online (no write / write pending): {alone['online_again_s']:6.1f} s / "
        f"{writing['online_again_s']:.1f} s"
    )
    print(
        f"30 % loss, {args.polls} poll intervals: state age p50 {loss['age_p50_s']} s, "
        f"p95 {loss['age_p95_s']} s, max {loss['age_max_s']} s; "
        f"polls at {loss['poll_rate_percent']} % of nominal; longest gap between poll ends "
        f"{loss['longest_gap_between_polls_s']} s"
    )
    print(json.dumps({"dead": alone, "dead_with_write": writing, "loss_30": loss, "speed": args.speed}))


if __name__ == "__main__":
    asyncio.run(main())
