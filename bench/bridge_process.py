"""The set-up the bridge benchmarks share: Mosquitto and the bridge as processes, the devices simulated here.

    async with (
        start_bridge(batteries, poll=1.0, prefix="bridge-bench-") as bench,
        aiomqtt.Client("127.0.0.1", bench.mqtt_port) as client,
    ): ...

starts, in a new temporary directory (kept afterwards, for the bridge log):

- `batteries` simulated Marstek batteries on one UDP port, each recording when the first ES.SetMode
  reaches it (`setmode_at`, BLE MAC -> CLOCK_MONOTONIC time, which processes share)
- a simulated NEXT wallbox with a car plugged in, recording when the first write of each value to
  register 5004, the charging current, reaches it (`current_at`, amps -> time)
- Mosquitto on a free loopback port, waited for until it accepts connections
- the bridge (`run --options ... --state-dir ...`) polling every `poll` seconds with the add-on's default
  pacing; its output goes to `log_path` with `log=True`, else nowhere

and stops all of them, bridge first, on leaving the block. A benchmark clears the two records to time
the next command.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from marstek_webasto_addon.devices.marstek.simulator import MarstekSimulator
from marstek_webasto_addon.devices.webasto.registers import WallboxModel
from marstek_webasto_addon.devices.webasto.simulator import Car, WallboxServer, WallboxSim
from marstek_webasto_addon.devices.webasto.simulator.server import build


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class BridgeBench:
    workdir: Path
    mqtt_port: int
    udp_port: int
    sim: MarstekSimulator
    box: WallboxSim
    wallbox: WallboxServer
    broker: asyncio.subprocess.Process
    bridge: asyncio.subprocess.Process
    log_path: Path | None  # the bridge's stdout and stderr, with log=True
    setmode_at: dict[str, float]  # battery BLE MAC -> when its first ES.SetMode arrived
    current_at: dict[int, float]  # amps -> when the first write of that value to register 5004 arrived


def record_setmode(sim: MarstekSimulator) -> dict[str, float]:
    setmode_at: dict[str, float] = {}
    for battery in sim.batteries:
        original = battery.handle

        def handle(
            data: bytes,
            sender: tuple[str, int],
            now_s: float,
            mac: str = battery.ble_mac,
            original: Any = original,
        ) -> Any:
            if b"ES.SetMode" in data:
                setmode_at.setdefault(mac, time.monotonic())
            return original(data, sender, now_s)

        battery.handle = handle  # type: ignore[method-assign]
    return setmode_at


def record_current(box: WallboxSim) -> dict[int, float]:
    current_at: dict[int, float] = {}
    original_write = box.write

    def write(fc: int, address: int, values: list[int]) -> None:
        if address == 5004:
            current_at.setdefault(values[0], time.monotonic())
        original_write(fc, address, values)

    box.write = write  # type: ignore[method-assign]
    return current_at


async def wait_for_broker(broker: asyncio.subprocess.Process, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if broker.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto is not listening on port {port}") from None
            await asyncio.sleep(0.01)
        else:
            writer.close()
            await writer.wait_closed()
            return


async def stop(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    await process.wait()


@contextlib.asynccontextmanager
async def start_bridge(
    batteries: int, *, poll: float, prefix: str, log: bool = False
) -> AsyncIterator[BridgeBench]:
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    mqtt_port, udp_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
    sim = MarstekSimulator.build(batteries, port=udp_port)
    box, clock = build(WallboxModel.NEXT)
    box.plug_in(Car())
    wallbox = WallboxServer(box, clock=clock)
    setmode_at, current_at = record_setmode(sim), record_current(box)
    # Leaving the stack stops what was started, in reverse: bridge, broker, wallbox, batteries.
    async with contextlib.AsyncExitStack() as stack:
        await sim.start()
        stack.push_async_callback(sim.stop)
        await wallbox.start()
        stack.push_async_callback(wallbox.stop)
        (workdir / "mosquitto.conf").write_text(f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\n")
        broker = await asyncio.create_subprocess_exec(
            shutil.which("mosquitto") or "/usr/sbin/mosquitto",
            "-c",
            str(workdir / "mosquitto.conf"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        stack.push_async_callback(stop, broker)
        await wait_for_broker(broker, mqtt_port)
        options = {
            "batteries": [
                {"name": f"B{i:02d}", "host": h, "port": p} for i, (h, p) in enumerate(sim.addresses)
            ],
            "wallboxes": [{"name": "Box", "host": "127.0.0.1", "port": wallbox.port, "model": "next"}],
            "mqtt": {"host": "127.0.0.1", "port": mqtt_port},
            "marstek_bind": "127.0.0.1",
            "battery_poll_interval": poll,
            "wallbox_poll_interval": poll,
            "log_level": "warning",
            # add-on defaults except the verify delay, which only adds a fixed wait after each write
            "timing": {"request_gap": 1.0, "write_gap": 5.0, "timeout": 3.0, "verify_delay": 0.5},
        }
        (workdir / "options.json").write_text(json.dumps(options))
        log_path = workdir / "bridge.log" if log else None
        with (log_path or Path(os.devnull)).open("wb") as output:
            bridge = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "marstek_webasto_addon",
                "run",
                "--options",
                str(workdir / "options.json"),
                *("--state-dir", str(workdir)),
                stdout=output,
                stderr=output,
            )
        stack.push_async_callback(stop, bridge)
        yield BridgeBench(
            workdir=workdir,
            mqtt_port=mqtt_port,
            udp_port=udp_port,
            sim=sim,
            box=box,
            wallbox=wallbox,
            broker=broker,
            bridge=bridge,
            log_path=log_path,
            setmode_at=setmode_at,
            current_at=current_at,
        )
