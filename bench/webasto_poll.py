"""Benchmark: one full poll of each wallbox model, read plan versus register-by-register.

The existing integrations read one data point per request. The read plan merges what each model allows.
The simulator runs in its own process on loopback; figures are requests and wall time per full poll.

    .venv/bin/python -m bench.webasto_poll [--polls 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import time

from marstek_webasto_addon.devices.webasto.client import WallboxConfig, WebastoClient
from marstek_webasto_addon.devices.webasto.registers import Cadence, WallboxModel


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def measure(model: WallboxModel, polls: int) -> dict[str, float]:
    port = free_tcp_port()
    sim = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "marstek_webasto_addon",
        "simulate",
        "webasto",
        "--model",
        model.value,
        "--port",
        str(port),
        "--car",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert sim.stdout is not None
        await sim.stdout.readline()
        client = WebastoClient(WallboxConfig("127.0.0.1", model, port=port))
        await client.connect()
        # exactly the registers the plan reads (after firmware gates), one request each
        keys = [r.key for request in client.plan(Cadence.SLOW).requests for r in request.registers]
        plan_times, single_times = [], []
        for _ in range(polls):
            started = time.perf_counter()
            await client.poll(include_slow=True)
            plan_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            for key in keys:
                await client.read_key(key)
            single_times.append(time.perf_counter() - started)
        await client.close()
    finally:
        sim.terminate()
        await sim.wait()
    plan_requests = len(client.plan(Cadence.SLOW))
    return {
        "registers_read": len(keys),
        "plan_requests": plan_requests,
        "baseline_requests": len(keys),
        "request_ratio": round(len(keys) / plan_requests, 2),
        "plan_ms": round(1000 * statistics.median(plan_times), 2),
        "baseline_ms": round(1000 * statistics.median(single_times), 2),
        "time_ratio": round(statistics.median(single_times) / statistics.median(plan_times), 2),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--polls", type=int, default=50)
    args = parser.parse_args()
    results = {model.value: await measure(model, args.polls) for model in WallboxModel}
    print(
        f"full poll (fast + slow registers), median of {args.polls}, simulator in its own process on loopback"
    )
    print(
        f"{'model':>6} {'registers':>10} {'plan req':>9} {'1-by-1 req':>11} {'req ratio':>10} "
        f"{'plan ms':>8} {'1-by-1 ms':>10} {'time ratio':>11}"
    )
    for model, r in results.items():
        print(
            f"{model:>6} {r['registers_read']:>10} {r['plan_requests']:>9} {r['baseline_requests']:>11} "
            f"{r['request_ratio']:>10} {r['plan_ms']:>8} {r['baseline_ms']:>10} {r['time_ratio']:>11}"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    asyncio.run(main())
