"""Benchmark: latency through the bridge, and the message rate it sustains with 32 batteries.

Mosquitto and the bridge (`run --options`) run as their own processes; the simulated batteries and
wallbox run in this process and timestamp what reaches them (CLOCK_MONOTONIC is shared by processes).

- command latency: a command published on MQTT -> the UDP (ES.SetMode) / Modbus (5004) write at the device
- state latency: a change inside the simulated battery -> the new value in the MQTT state
- message rate: MQTT messages per second the bridge publishes while polling 32 batteries

    .venv/bin/python -m bench.bridge_latency [--batteries 32] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import time
from typing import Any

import aiomqtt

from .bridge_process import start_bridge


async def wait_until(condition: Any, timeout: float) -> bool:
    """Poll a condition that other tasks and simulator hooks make true."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:  # noqa: ASYNC110 - set by plain callbacks
        await asyncio.sleep(0.002)
    return bool(condition())


def percentiles(samples: list[float]) -> str:
    if not samples:
        return "no samples"
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"p50 {1000 * statistics.median(ordered):7.1f} ms   p99 {1000 * p99:7.1f} ms   (n={len(ordered)})"


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batteries", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the message-rate window")
    parser.add_argument("--poll", type=float, default=1.0, help="battery poll interval (s)")
    args = parser.parse_args()
    states: dict[str, dict[str, Any]] = {}
    seen_at: dict[tuple[str, int], float] = {}
    received = 0
    async with (
        start_bridge(args.batteries, poll=args.poll, prefix="bridge-bench-") as bench,
        aiomqtt.Client("127.0.0.1", bench.mqtt_port) as client,
    ):
        sim, setmode_at, current_at = bench.sim, bench.setmode_at, bench.current_at
        await client.subscribe("marstek_webasto/#")

        async def pump() -> None:
            nonlocal received
            async for message in client.messages:
                received += 1
                topic = message.topic.value
                if topic.endswith("/state") and isinstance(message.payload, bytes) and message.payload:
                    state = json.loads(message.payload)
                    states[topic] = state
                    if isinstance(state.get("soc"), int):
                        seen_at.setdefault((topic, state["soc"]), time.monotonic())

        pumper = asyncio.create_task(pump())
        wanted = {f"marstek_webasto/battery_{b.ble_mac}/state" for b in sim.batteries}
        await wait_until(lambda: wanted <= set(states), 120)
        # steady state: the simulated households keep every value moving
        start, count0 = time.monotonic(), received
        await asyncio.sleep(args.seconds)
        rate = (received - count0) / (time.monotonic() - start)
        # burst: commands that touch no device (a stored setting), to see the command path's own capacity
        first = sim.batteries[0].ble_mac
        outcomes_before = received
        burst_start = time.monotonic()
        for n in range(500):
            await client.publish(
                f"marstek_webasto/battery_{first}/passive_power/set", str(100 + 50 * (n % 40))
            )
        await wait_until(
            lambda: (
                states.get(f"marstek_webasto/battery_{first}/state", {}).get("passive_power")
                == 100 + 50 * (499 % 40)
            ),
            60,
        )
        burst = 500 / (time.monotonic() - burst_start)
        burst_messages = (received - outcomes_before) / (time.monotonic() - burst_start)
        sim.frozen = True  # from here on, values change only when this benchmark changes them
        # state latency: change one battery's SOC, wait for the MQTT state to show it
        state_latency: list[float] = []
        for n in range(20):
            battery = random.choice(sim.batteries)
            soc = (round(battery.physics.soc) + 7 + n) % 70 + 15  # a value this battery did not have
            key = (f"marstek_webasto/battery_{battery.ble_mac}/state", soc)
            seen_at.pop(key, None)
            battery.physics.soc = soc
            changed = time.monotonic()
            if await wait_until(lambda key=key: key in seen_at, 30):
                state_latency.append(seen_at[key] - changed)
        # command latency, batteries: alternate modes so every command is a real change
        battery_latency: list[float] = []
        for n, battery in enumerate(random.sample(sim.batteries, min(20, len(sim.batteries)))):
            setmode_at.pop(battery.ble_mac, None)
            sent = time.monotonic()
            await client.publish(
                f"marstek_webasto/battery_{battery.ble_mac}/mode/set", "AI" if n % 2 else "Auto"
            )
            if await wait_until(lambda mac=battery.ble_mac: mac in setmode_at, 30):
                battery_latency.append(setmode_at[battery.ble_mac] - sent)
        box_id = next(t.split("/")[1] for t in states if "/wallbox_" in t)
        wallbox_latency: list[float] = []
        for amps in range(6, 17):
            sent = time.monotonic()
            await client.publish(f"marstek_webasto/{box_id}/charging_current/set", str(amps))
            if await wait_until(lambda amps=amps: amps in current_at, 10):
                wallbox_latency.append(current_at[amps] - sent)
            await asyncio.sleep(0.3)
        pumper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pumper
    print(
        f"{args.batteries} batteries + 1 NEXT wallbox, poll every {args.poll:g} s, add-on default pacing "
        f"(1 s between requests, 5 s between writes per battery)"
    )
    print(f"command -> UDP ES.SetMode at the battery     {percentiles(battery_latency)}")
    print(f"command -> Modbus 5004 write at the wallbox  {percentiles(wallbox_latency)}")
    print(f"battery change -> MQTT state                 {percentiles(state_latency)}")
    print(f"MQTT messages published by the bridge        {rate:7.1f} / s  (steady state, every value moving)")
    print(
        f"command burst, no device I/O: {burst:.0f} commands / s accepted (queued ones coalesce), "
        f"{burst_messages:.0f} MQTT messages / s"
    )
    print(
        json.dumps(
            {
                "command_battery_ms": [round(1000 * x, 1) for x in sorted(battery_latency)],
                "command_wallbox_ms": [round(1000 * x, 1) for x in sorted(wallbox_latency)],
                "state_ms": [round(1000 * x, 1) for x in sorted(state_latency)],
                "messages_per_s": round(rate, 1),
                "burst_commands_per_s": round(burst, 1),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
