"""Benchmark: a flood of invalid commands, and what it costs everything else.

Mosquitto and the bridge (`run --options`) run as their own processes; three simulated batteries and a
wallbox run in this process and timestamp the writes that reach them (CLOCK_MONOTONIC is shared by
processes). The flood is N bad payloads, round robin over every command topic the bridge announced,
published at QoS 0 as fast as one client can (what a runaway automation does). Then, at once:

- a valid battery command (mode) and a valid wallbox command (charging current): arrival -> the write at
  the device (ES.SetMode over UDP, Modbus register 5004); these include the device pacing (1 s between
  requests to a battery, which is busy with its poll)
- a valid command that touches no device (a battery's stored passive power): arrival -> the new value in
  its MQTT state, the bridge's own path
- Home Assistant's birth message: arrival -> the first discovery config published again (this includes the
  bridge's deliberate random 0.5-2 s birth delay)
- drain: the last flood message -> every device has reported on its own last flood payload
- the bridge process's memory (VmRSS before, after; VmHWM peak), the state messages and the warnings the
  flood caused

    .venv/bin/python -m bench.command_flood [--messages 16000] [--batteries 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import aiomqtt

from .bridge_process import start_bridge

BASE, PREFIX = "marstek_webasto", "homeassistant"


def memory_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def wait_until(condition: Any, timeout: float) -> bool:
    """Poll a condition that other tasks and simulator hooks make true."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:  # noqa: ASYNC110 - set by plain callbacks
        await asyncio.sleep(0.005)
    return bool(condition())


def seconds(value: float | None) -> str:
    return "not within the timeout" if value is None else f"{value:8.2f} s"


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=16000, help="invalid payloads in the flood")
    parser.add_argument("--batteries", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=900.0, help="how long to wait for the drain (s)")
    args = parser.parse_args()
    configs: dict[str, dict[str, Any]] = {}
    states: set[str] = set()
    outcomes: dict[str, list[tuple[float, dict[str, Any]]]] = {}  # device id -> (time, last_command)
    state_times: list[float] = []
    config_times: list[tuple[float, bool]] = []  # (time, retained)
    setting_at: list[float] = []  # when the stored passive power sent after the flood shows in the state
    peak_rss = 0.0
    async with (
        start_bridge(args.batteries, poll=2, prefix="flood-bench-", log=True) as bench,
        aiomqtt.Client("127.0.0.1", bench.mqtt_port, identifier="bench-recorder") as recorder,
        aiomqtt.Client("127.0.0.1", bench.mqtt_port, identifier="bench-flooder") as flooder,
    ):
        sim, bridge, setmode_at, current_at = bench.sim, bench.bridge, bench.setmode_at, bench.current_at
        assert bench.log_path is not None
        log_path = bench.log_path
        await recorder.subscribe(f"{BASE}/#")
        await recorder.subscribe(f"{PREFIX}/#")

        async def pump() -> None:
            async for message in recorder.messages:
                topic, now = message.topic.value, time.monotonic()
                payload = message.payload if isinstance(message.payload, bytes) else b""
                if topic.endswith("/config") and payload:
                    configs[topic] = json.loads(payload)
                    config_times.append((now, message.retain))
                elif topic.endswith("/state") and topic.startswith(f"{BASE}/"):
                    states.add(topic.split("/")[1])
                    state_times.append(now)
                    if payload and json.loads(payload).get("passive_power") == 650:
                        setting_at.append(now)
                elif topic.endswith("/last_command/attributes") and payload:
                    outcomes.setdefault(topic.split("/")[1], []).append((now, json.loads(payload)))

        async def sample_memory() -> None:
            nonlocal peak_rss
            while True:
                with contextlib.suppress(OSError):
                    peak_rss = max(peak_rss, memory_mb(bridge.pid))
                await asyncio.sleep(0.1)

        pumper = asyncio.create_task(pump())
        batteries = {f"battery_{b.ble_mac}" for b in sim.batteries}
        ready = await wait_until(
            lambda: (
                batteries <= states
                and any(s.startswith("wallbox_") for s in states)
                and "optimiser" in states
                and len(configs) > 50 * args.batteries
            ),
            120,
        )
        if not ready:
            raise SystemExit(f"the bridge did not come up; see {log_path}")
        await asyncio.sleep(3)  # let the first full reads settle
        commands = sorted(c["command_topic"] for c in configs.values() if "command_topic" in c)
        devices = sorted({topic.split("/")[1] for topic in commands})
        rss_before = memory_mb(bridge.pid)
        log_before = log_path.read_bytes().count(b"\n")
        states_before = len(state_times)
        sampler = asyncio.create_task(sample_memory())

        final: dict[str, int] = {}  # device id -> number of its last flood payload
        flood_start = time.monotonic()
        for n in range(args.messages):
            topic = commands[n % len(commands)]
            final[topic.split("/")[1]] = n
            await flooder.publish(topic, f"bad-{n}", qos=0)
            if n % 200 == 0:
                await asyncio.sleep(0)  # let the client's network loop write
        # A QoS 1 message is acknowledged after every message sent before it on this connection.
        await flooder.publish("bench/flood-done", "1", qos=1)
        flood_end = time.monotonic()

        battery = sim.batteries[0]
        box_id = next(d for d in devices if d.startswith("wallbox_"))
        setmode_at.clear()
        current_at.clear()
        sent = time.monotonic()
        await flooder.publish(f"{BASE}/battery_{battery.ble_mac}/mode/set", "AI", qos=0)
        await flooder.publish(f"{BASE}/{box_id}/charging_current/set", "11", qos=0)
        # on another battery: the first one's worker is busy with the mode write (one command at a time)
        other = sim.batteries[1 % len(sim.batteries)].ble_mac
        await flooder.publish(f"{BASE}/battery_{other}/passive_power/set", "650", qos=0)
        await flooder.publish(f"{PREFIX}/status", "online", qos=0)

        def drained(device: str) -> bool:
            for at, outcome in outcomes.get(device, []):
                if at < flood_start:
                    continue
                if f"'bad-{final[device]}'" in str(outcome.get("command")):
                    return True
                if at > flood_end and outcome.get("status") != "rejected":
                    return True  # a valid command's outcome took the last flood payload's place
            return False

        def birth_answered() -> bool:
            return any(at > sent and not retained for at, retained in config_times)

        def battery_applied() -> bool:
            return battery.ble_mac in setmode_at

        def wallbox_applied() -> bool:
            return 11 in current_at

        def all_drained() -> bool:
            return all(drained(d) for d in final)

        waits = {
            "setting": lambda: bool(setting_at),
            "battery": battery_applied,
            "wallbox": wallbox_applied,
            "birth": birth_answered,
            "drain": all_drained,
        }
        done_at: dict[str, float] = {}
        deadline = time.monotonic() + args.timeout
        while len(done_at) < len(waits) and time.monotonic() < deadline:
            for name, check in waits.items():
                if name not in done_at and check():
                    done_at[name] = time.monotonic()
            await asyncio.sleep(0.01)
        birth_at = min((at for at, retained in config_times if at > sent and not retained), default=None)
        await asyncio.sleep(2)
        rss_after = memory_mb(bridge.pid)
        peak_hwm = memory_mb(bridge.pid, "VmHWM")
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        flood_states = len(state_times) - states_before
        pumper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pumper
    log_lines = log_path.read_text(errors="replace").splitlines()[log_before:]
    warnings = [line for line in log_lines if "WARNING" in line]
    battery_latency = setmode_at[battery.ble_mac] - sent if battery.ble_mac in setmode_at else None
    wallbox_latency = current_at[11] - sent if 11 in current_at else None
    birth_latency = birth_at - sent if birth_at is not None else None
    setting_latency = setting_at[0] - sent if setting_at else None
    drain = done_at["drain"] - flood_end if "drain" in done_at else None
    print(
        f"flood: {args.messages} invalid payloads over {len(commands)} command topics of {len(devices)} "
        f"devices, sent in {flood_end - flood_start:.2f} s ({args.batteries} batteries, 1 NEXT wallbox)"
    )
    print(f"drain after the last flood message           {seconds(drain)}")
    print(f"valid stored setting -> MQTT state           {seconds(setting_latency)}")
    print(f"valid battery command -> ES.SetMode          {seconds(battery_latency)}")
    print(f"valid wallbox command -> Modbus 5004 write   {seconds(wallbox_latency)}")
    print(f"HA birth -> discovery again (0.5-2 s delay)  {seconds(birth_latency)}")
    print(
        f"bridge memory: VmRSS {rss_before:.0f} MB before, {rss_after:.0f} MB after; "
        f"peak {max(peak_rss, peak_hwm):.0f} MB"
    )
    print(f"state messages published during flood+drain  {flood_states}")
    print(f"warnings logged during flood+drain           {len(warnings)}")
    for line in warnings[-3:]:
        print(f"    {line[:160]}")
    print(
        json.dumps(
            {
                "messages": args.messages,
                "command_topics": len(commands),
                "drain_s": None if drain is None else round(drain, 2),
                "setting_s": None if setting_latency is None else round(setting_latency, 2),
                "battery_command_s": None if battery_latency is None else round(battery_latency, 2),
                "wallbox_command_s": None if wallbox_latency is None else round(wallbox_latency, 2),
                "birth_s": None if birth_latency is None else round(birth_latency, 2),
                "rss_before_mb": round(rss_before, 1),
                "rss_after_mb": round(rss_after, 1),
                "rss_peak_mb": round(max(peak_rss, peak_hwm), 1),
                "state_messages": flood_states,
                "warnings": len(warnings),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
