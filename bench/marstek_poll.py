"""Benchmark: many batteries polled concurrently, with and without request loss.

The simulator runs in its own process, so CPU time and peak RSS are the client's alone. Time is scaled:
the simulator runs `--speed` times faster and every pacing figure is divided by the same factor, so
`--sim-seconds` of device time pass in sim-seconds / speed of wall time with the add-on's real defaults.

    .venv/bin/python -m bench.marstek_poll [--batteries 32] [--sim-seconds 60] [--speed 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import socket
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from marstek_webasto_addon.devices.marstek.client import MarstekClient, Pacing
from marstek_webasto_addon.devices.marstek.link import BatteryLink, LinkSettings
from marstek_webasto_addon.devices.marstek.protocol import Reply, RequestTimeout
from marstek_webasto_addon.devices.marstek.simulator.server import battery_address
from marstek_webasto_addon.devices.marstek.transport import UdpEndpoint


class TimedEndpoint(UdpEndpoint):
    """Records the round trip of every answered request."""

    def __init__(self) -> None:
        super().__init__()
        self.round_trips: list[float] = []

    async def request(
        self, address: tuple[str, int], request_id: int, method: str, params: dict[str, Any], timeout: float
    ) -> Reply:
        started = time.perf_counter()
        reply = await super().request(address, request_id, method, params, timeout)
        self.round_trips.append(time.perf_counter() - started)
        return reply


@dataclass
class Tally:
    polls: int = 0
    incomplete: int = 0  # at least one method got no reply after every retry (lost data)
    silent: int = 0  # nothing answered at all
    per_battery: dict[str, int] = field(default_factory=dict)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def run_case(batteries: int, sim_seconds: float, speed: float, loss: float) -> dict[str, float]:
    port = free_udp_port()
    sim = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "marstek_webasto_addon",
        "simulate",
        "marstek",
        "--count",
        str(batteries),
        "--port",
        str(port),
        "--speed",
        str(speed),
        "--loss",
        str(loss),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert sim.stdout is not None
        while b"batteries running" not in await sim.stdout.readline():
            pass
        defaults = Pacing()
        pacing = Pacing(
            request_gap=defaults.request_gap / speed,
            write_gap=defaults.write_gap / speed,
            timeout=defaults.timeout / speed,
            backoff=tuple(b / speed for b in defaults.backoff),
        )
        settings = LinkSettings(poll_interval=LinkSettings().poll_interval / speed)
        endpoint = await TimedEndpoint.open("127.0.0.1", port)
        tally = Tally()

        def count(link: BatteryLink) -> None:
            tally.polls += 1
            tally.per_battery[link.name] = tally.per_battery.get(link.name, 0) + 1

        links = []
        for i in range(batteries):
            host, _ = battery_address("127.0.0.1", i + 1, port)
            links.append(
                BatteryLink(
                    f"b{i}", MarstekClient(host, port, endpoint=endpoint, pacing=pacing), settings, count
                )
            )

        async def poll_forever(link: BatteryLink) -> None:
            while True:
                report = await link.client.read(link.methods_for(link._polls))
                link._polls += 1
                count(link)
                tally.incomplete += any(isinstance(e, RequestTimeout) for e in report.errors.values())
                tally.silent += not report.any_answer
                await asyncio.sleep(settings.poll_interval)

        cpu0, wall0 = time.process_time(), time.perf_counter()
        tasks = [asyncio.create_task(poll_forever(link)) for link in links]
        await asyncio.sleep(sim_seconds / speed)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        endpoint.close()
        rtts = sorted(endpoint.round_trips)
        return {
            "loss_percent": loss,
            "batteries": batteries,
            "wall_s": round(wall, 2),
            "polls": tally.polls,
            "requests_answered": len(rtts),
            "cpu_ms_per_battery_poll": round(1000 * cpu / max(tally.polls, 1), 3),
            "rtt_p50_ms": round(1000 * statistics.median(rtts), 3) if rtts else float("nan"),
            "rtt_p99_ms": round(1000 * rtts[int(0.99 * (len(rtts) - 1))], 3) if rtts else float("nan"),
            "polls_incomplete_percent": round(100 * tally.incomplete / max(tally.polls, 1), 2),
            "polls_lost_percent": round(100 * tally.silent / max(tally.polls, 1), 2),
        }
    finally:
        sim.terminate()
        await sim.wait()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batteries", type=int, default=32)
    parser.add_argument("--sim-seconds", type=float, default=60.0)
    parser.add_argument("--speed", type=float, default=10.0)
    args = parser.parse_args()
    results = [await run_case(args.batteries, args.sim_seconds, args.speed, loss) for loss in (0.0, 20.0)]
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{args.batteries} batteries, {args.sim_seconds:g} s of device time at {args.speed:g}x, "
        f"add-on default pacing scaled by the same factor"
    )
    header = ("loss", "polls", "CPU ms/poll", "RTT p50 ms", "RTT p99 ms", "incomplete %", "lost %")
    print("  ".join(f"{h:>12}" for h in header))
    for r in results:
        row = (
            f"{r['loss_percent']:g} %",
            r["polls"],
            r["cpu_ms_per_battery_poll"],
            r["rtt_p50_ms"],
            r["rtt_p99_ms"],
            r["polls_incomplete_percent"],
            r["polls_lost_percent"],
        )
        print("  ".join(f"{v!s:>12}" for v in row))
    print(f"peak RSS of the polling process: {peak_rss_mb:.1f} MB")
    print(json.dumps({"cases": results, "peak_rss_mb": round(peak_rss_mb, 1)}))


if __name__ == "__main__":
    asyncio.run(main())
