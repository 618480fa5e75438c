"""`demo`: the product with simulated hardware. For now: three simulated batteries, polled live."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time

from ..devices.marstek.client import Pacing
from ..devices.marstek.fleet import BatteryConfig, BatteryFleet
from ..devices.marstek.link import BatteryLink, LinkSettings
from ..devices.marstek.simulator import MarstekSimulator

# The seed's three batteries, one per phase, with the charge levels its user saw on 2025-11-16.
DEMO_BATTERIES = (("FaseA", 100.0), ("FaseB", 22.0), ("FaseC", 97.0))


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("demo", help="run everything with simulated hardware")
    parser.add_argument("--speed", type=float, default=30.0, help="simulated time speed-up (default 30)")
    parser.add_argument("--sim-port", type=int, default=30000, help="UDP port of the simulated batteries")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.set_defaults(handler=run_demo)


async def run_demo(args: argparse.Namespace) -> int:
    simulator = MarstekSimulator.build(
        len(DEMO_BATTERIES), port=args.sim_port, speed=args.speed, socs=[soc for _, soc in DEMO_BATTERIES]
    )
    configs = [
        BatteryConfig(name, host, port)
        for (name, _), (host, port) in zip(DEMO_BATTERIES, simulator.addresses, strict=True)
    ]
    started = time.monotonic()

    def show(link: BatteryLink) -> None:
        s = link.snapshot
        state = "online " if link.online else "OFFLINE"
        mode = s.mode.value if s.mode else "?"
        print(
            f"[{time.monotonic() - started:6.1f}s] {link.name} {state} {link.client.host:<11} "
            f"SOC {s.soc or 0:5.1f}%  {mode:<7} AC {s.ac_power or 0:+6.0f} W  "
            f"meter {s.number('meter_power') or 0:+6.0f} W",
            flush=True,
        )

    async with (
        simulator,
        BatteryFleet(
            configs,
            local_host="127.0.0.1",
            pacing=Pacing(request_gap=0.2, timeout=1.0, backoff=(0.3, 0.6)),
            settings=LinkSettings(poll_interval=2.0, slow_every=3),
            on_update=show,
        ) as fleet,
    ):
        print(f"Demo: {len(configs)} simulated batteries at {args.speed:g}x speed; Ctrl-C stops.", flush=True)
        runner = asyncio.create_task(fleet.run())
        try:
            if args.duration is not None:
                await asyncio.sleep(args.duration)
            else:
                await runner
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
    return 0
