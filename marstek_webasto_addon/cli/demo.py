"""`demo`: the whole product with simulated hardware, a broker and the panel, all on 127.0.0.1."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from ..addon.car_control import store_key
from ..addon.options import parse_options
from ..addon.runtime import Runtime
from ..addon.state import StateStore
from ..bridge.mqtt import BrokerSettings
from ..demo.broker import BrokerError, DemoBroker
from ..demo.world import ADDON_BIND, DEMO_BATTERIES, P1_TOPIC, PV_TOPIC, DemoWorld, PortInUseError
from ..tasks import cancel_all
from ..web.server import Panel
from .marstek import port_number, positive_float

_LOG = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("demo", help="run everything with simulated hardware, and the panel")
    parser.add_argument("--port", type=int, default=8099, help="the panel's port on 127.0.0.1 (default 8099)")
    parser.add_argument(
        "--speed", type=positive_float, default=30.0, help="simulated time speed-up (default 30)"
    )
    parser.add_argument(
        "--start", type=datetime.fromisoformat, help="simulated start, e.g. 2026-06-21T09:00 (default: now)"
    )
    parser.add_argument(
        "--sim-port",
        type=port_number,
        default=30000,
        help="UDP port of the simulated batteries (default 30000)",
    )
    parser.add_argument(
        "--broker",
        choices=["auto", "mosquitto", "embedded"],
        default="auto",
        help="default: Mosquitto if installed",
    )
    parser.add_argument(
        "--transport",
        choices=["udp", "modbus", "auto"],
        default="udp",
        help="how the add-on reaches the simulated batteries: udp (the Local API, default), modbus (Modbus"
        " TCP, each battery's map on 127.0.0.1 at a port of its own) or auto (the Local API, Modbus while it"
        " is silent)",
    )
    parser.add_argument("--duration", type=positive_float, help="stop after this many seconds")
    parser.add_argument(
        "--state-dir", type=Path, help="keep the demo's state here (default: a temporary folder)"
    )
    parser.set_defaults(handler=run_demo)


def demo_options(
    world: DemoWorld, broker_host: str, broker_port: int, transport: str = "udp"
) -> dict[str, Any]:
    """The options a user with this home would set in the add-on's options tab."""
    return {
        "batteries": [
            battery_options(name, index, world, transport) for index, (name, _) in enumerate(DEMO_BATTERIES)
        ],
        "wallboxes": [
            {
                "name": "Wallbox",
                "host": "127.0.0.1",
                "port": world.wallbox_port,
                "model": "next",
                "max_current": 16,
            }
        ],
        "mqtt": {"host": broker_host, "port": broker_port},
        "marstek_bind": ADDON_BIND,
        "rediscovery_targets": [host for host, _ in world.battery_addresses],  # never the LAN
        # a Modbus poll of the v3 map is 13 requests 150 ms apart: about 2 s
        "battery_poll_interval": 2 if transport == "udp" else 3,
        "wallbox_poll_interval": 2,
        "timing": {"request_gap": 0.05, "write_gap": 0.5, "timeout": 1.0, "verify_delay": 0.5},
        "grid_source": {"type": "mqtt", "topic": P1_TOPIC},
        "pv_power": {"type": "mqtt", "topic": PV_TOPIC},
        "control_interval": 1,
        # Simulated minutes pass in seconds: give the meter as many simulated seconds to arrive.
        "optimiser": {"enabled": True, "input_stale_after": 300},
    }


def battery_options(name: str, index: int, world: DemoWorld, transport: str) -> dict[str, Any]:
    """One battery's entry: its Local API address, and with Modbus its gateway's address too."""
    host, port = world.battery_addresses[index]
    if transport == "udp":
        return {"name": name, "host": host, "port": port}
    modbus_host, modbus_port = world.modbus_addresses[index]
    modbus = {"transport": transport, "modbus_host": modbus_host, "modbus_port": modbus_port}
    if transport == "modbus":
        return {"name": name, **modbus}
    return {"name": name, "host": host, "port": port, **modbus}


def transport_line(world: DemoWorld, transport: str) -> str:
    if transport == "udp":
        return ""
    gateways = ", ".join(f"{host}:{port}" for host, port in world.modbus_addresses)
    what = "over Modbus TCP" if transport == "modbus" else "over the Local API, Modbus TCP while it is silent"
    return f"  the batteries {what} (transport {transport}); their Modbus maps at {gateways}\n"


async def run_demo(args: argparse.Namespace) -> int:
    logging.getLogger("marstek_webasto_addon").setLevel(min(logging.INFO, logging.getLogger().level))
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, main.cancel)
    with tempfile.TemporaryDirectory(prefix="mwa-demo-") as scratch:
        state_dir = args.state_dir or Path(scratch)
        state_dir.mkdir(parents=True, exist_ok=True)
        try:
            await _demo(args, state_dir)
        except (BrokerError, PortInUseError) as exc:
            print(f"error: {exc}", flush=True)
            return 1
        except OSError as exc:
            print(f"error: {exc} (is another demo running? try --port and --sim-port)", flush=True)
            return 1
        except asyncio.CancelledError:
            pass
    print("Demo stopped.", flush=True)
    return 0


async def _demo(args: argparse.Namespace, state_dir: Path) -> None:
    async with (
        DemoBroker(args.broker) as broker,
        DemoWorld(
            speed=args.speed, start=args.start, sim_port=args.sim_port, modbus=args.transport != "udp"
        ) as world,
    ):
        options = parse_options(demo_options(world, broker.host, broker.port, args.transport))
        store = StateStore(state_dir / "state.json")
        optimiser_state = store.section("optimiser")
        if "history" not in optimiser_state:
            optimiser_state["history"] = world.past_weeks()
        box = options.wallboxes[0]
        # the car's evenings as the add-on would have logged them: in `plan` mode it is expected tonight
        store.section("charge_modes").setdefault(
            store_key(box.host, box.port, box.unit_id), {"stays": world.past_stays()}
        )
        store.save()
        async with Runtime(
            options,
            store,
            BrokerSettings(broker.host, broker.port),
            clock=world.clock,
        ) as runtime:
            panel = Panel(
                runtime,
                clock=world.clock,
                history_path=state_dir / "history.json",
                report_path=state_dir / "report.json",
            )
            port = await panel.start("127.0.0.1", args.port)
            kwp = world.marstek.site.household.pv_kwp
            print(
                f"Demo running: panel at http://127.0.0.1:{port}/\n"
                f"  MQTT: {broker.describe()} (try: mosquitto_sub -p {broker.port} -t '#' -v)\n"
                f"  3 simulated batteries, a NEXT wallbox and a home with {kwp:g} kWp PV;"
                f" simulated time x{args.speed:g}, starting {world.clock.now():%Y-%m-%d %H:%M}\n"
                f"{transport_line(world, args.transport)}"
                "  Ctrl-C stops.",
                flush=True,
            )
            tasks = [
                asyncio.create_task(runtime.run(), name="runtime"),
                asyncio.create_task(world.publish_meters(broker.host, broker.port), name="meters"),
            ]
            try:
                if args.duration is not None:
                    await asyncio.sleep(args.duration)
                else:
                    await asyncio.gather(*tasks)
            finally:
                await cancel_all(tasks)
                await panel.stop()
