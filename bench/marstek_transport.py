"""Benchmark: the two Venus transports side by side, and `transport: auto`'s switch-over.

For 1 and for 32 simulated batteries (each on its own loopback address, UDP and Modbus TCP served by the same
simulated battery), with the add-on's real pacing (UDP: 1 s between requests; Modbus: the v3 map's 150 ms):

* the wall time of one poll of every battery at once, and the requests it took per battery, per transport
  (UDP: a regular poll, ES.GetMode + ES.GetStatus, and a full read of every method; Modbus: the first poll,
  which connects and reads the identity, and a regular one);
* `auto`'s switch-over: the time from the moment the Local API goes silent until the battery's first answer
  over Modbus, with the links polling at `--poll-interval` (the add-on's 10 s by default).

The simulator runs in this process (its work is small next to the pacing). Figures only: nothing is asserted.

    .venv/bin/python -m bench.marstek_transport [--counts 1 32] [--poll-interval 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import statistics
import time
from collections.abc import Sequence

from marstek_webasto_addon.devices.marstek.client import MarstekClient, Pacing
from marstek_webasto_addon.devices.marstek.datapoints import READ_METHODS
from marstek_webasto_addon.devices.marstek.fallback import FallbackBattery, silence_before_switch
from marstek_webasto_addon.devices.marstek.link import FAST, BatteryLink, LinkSettings
from marstek_webasto_addon.devices.marstek.modbus.battery import ModbusBattery
from marstek_webasto_addon.devices.marstek.simulator import MarstekSimulator
from marstek_webasto_addon.devices.marstek.transport import UdpEndpoint


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _site(count: int) -> tuple[MarstekSimulator, UdpEndpoint, list[MarstekClient], list[ModbusBattery]]:
    port = free_udp_port()
    sim = MarstekSimulator.build(count, port=port)
    await sim.start()
    endpoint = await UdpEndpoint.open("127.0.0.1", port)
    udp = [MarstekClient(host, p, endpoint=endpoint, pacing=Pacing()) for host, p in sim.addresses]
    modbus = []
    for index, (host, _) in enumerate(sim.addresses):
        server = await sim.serve_modbus(index, host=host)
        modbus.append(ModbusBattery(host, server.port))
    return sim, endpoint, udp, modbus


def _row(label: str, elapsed: float, requests: float, answered: int, count: int) -> str:
    return f"  {label:<32} {elapsed:6.2f} s {requests:5.1f} requests a battery, {answered}/{count} answered"


async def polls(count: int) -> None:
    sim, endpoint, udp, modbus = await _site(count)
    try:
        print(f"{count} batter{'y' if count == 1 else 'ies'}, all polled at once")
        for method_set, label in ((READ_METHODS, "udp: full read"), (FAST, "udp: regular poll (2 methods)")):
            before = sum(b.requests for b in sim.batteries)
            reads = [client.read(method_set) for client in udp]
            started = time.perf_counter()
            reports = await asyncio.gather(*reads)
            elapsed = time.perf_counter() - started
            sent = sum(b.requests for b in sim.batteries) - before
            answered = sum(1 for report in reports if report.any_answer)
            print(_row(label, elapsed, sent / count, answered, count))
        for label in ("modbus: first poll (connects)", "modbus: regular poll"):
            before = sum(client.requests for client in modbus)
            started = time.perf_counter()
            reports = await asyncio.gather(*(client.read() for client in modbus))
            elapsed = time.perf_counter() - started
            sent = sum(client.requests for client in modbus) - before
            answered = sum(1 for report in reports if report.any_answer)
            print(_row(label, elapsed, sent / count, answered, count))
    finally:
        for client in modbus:
            await client.close()
        endpoint.close()
        await sim.stop()


async def switch_over(count: int, poll_interval: float) -> None:
    sim, endpoint, udp, modbus = await _site(count)
    settings = LinkSettings(poll_interval=poll_interval)
    silent_for = silence_before_switch(settings.poll_interval, settings.offline_window)
    batteries = [
        FallbackBattery(u, m, name=u.host, silent_for=silent_for) for u, m in zip(udp, modbus, strict=True)
    ]
    links = [BatteryLink(b.name, b, settings) for b in batteries]
    tasks = [asyncio.create_task(link.run()) for link in links]
    try:
        deadline = time.monotonic() + 60
        while not all(link.online for link in links) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await asyncio.sleep(poll_interval / 2)  # mid-cadence, as an outage comes
        silent_at = time.monotonic()
        for index in range(count):
            sim.outage(index, 1e9)
        offline_seen = False
        deadline = silent_at + 6 * poll_interval + 30
        while time.monotonic() < deadline:
            offline_seen = offline_seen or not all(link.online for link in links)
            if all(b.transport == "modbus" and (b.modbus.last_answer_at or 0) > silent_at for b in batteries):
                break
            await asyncio.sleep(0.05)
        times = [(b.modbus.last_answer_at or float("nan")) - silent_at for b in batteries]
        print(
            f"  auto, {count:>2} batter{'y' if count == 1 else 'ies'}: UDP silent -> first Modbus answer "
            f"median {statistics.median(times):.1f} s, max {max(times):.1f} s "
            f"(polls every {poll_interval:g} s; switch after {silent_for:g} s of silence; offline after "
            f"{settings.offline_window:.1f} s; "
            f"{'a battery went offline meanwhile' if offline_seen else 'none went offline'})"
        )
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for battery in batteries:
            await battery.close()
        endpoint.close()
        await sim.stop()


async def main(counts: Sequence[int], poll_interval: float) -> None:
    for count in counts:
        await polls(count)
    print("switch-over when the Local API stops answering")
    for count in counts:
        await switch_over(count, poll_interval)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--poll-interval", type=float, default=10.0)
    args = parser.parse_args()
    asyncio.run(main(args.counts, args.poll_interval))
