"""`simulate webasto` and `probe webasto`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from ..devices.webasto.client import DEFAULT_UNIT, WallboxConfig, WallboxError, WebastoClient
from ..devices.webasto.registers import RULES, WallboxModel
from ..devices.webasto.simulator import Car, WallboxQuirks, WallboxServer
from ..devices.webasto.simulator.server import build
from .marstek import positive_float, split_host_port


def register(devices: dict[str, argparse._SubParsersAction[argparse.ArgumentParser]]) -> None:
    sim = devices["simulate"].add_parser("webasto", help="a simulated Webasto/Ampure wallbox on Modbus TCP")
    sim.add_argument("--model", required=True, choices=[m.value for m in WallboxModel])
    sim.add_argument("--bind", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=5020, help="0: a free port (printed)")
    sim.add_argument("--unit-id", type=int, default=DEFAULT_UNIT)
    sim.add_argument(
        "--speed", type=positive_float, default=1.0, help="simulated time (energy, sessions) runs faster"
    )
    sim.add_argument("--car", action="store_true", help="a car is plugged in from the start")
    sim.add_argument("--firmware", help="UNITE firmware string, e.g. v3.156.0-1.0.150.0")
    quirks = sim.add_argument_group("quirks (all off by default)")
    quirks.add_argument(
        "--stuck-after-pause", action="store_true", help="NEXT: a 0 A pause strands in state 7"
    )
    quirks.add_argument(
        "--zero-reverts", action="store_true", help="UNITE: 0 A with no car falls back to 6 A"
    )
    quirks.add_argument(
        "--refuse-reconnect",
        action="store_true",
        help="refuse new clients until the fail-safe timeout has passed after one leaves",
    )
    sim.set_defaults(handler=simulate)

    probe_parser = devices["probe"].add_parser("webasto", help="read every data point of one wallbox once")
    probe_parser.add_argument("target", metavar="HOST[:PORT]")
    probe_parser.add_argument(
        "--model",
        default="auto",
        choices=["auto", *(m.value for m in WallboxModel)],
        help="auto (default): tell from the box's answers",
    )
    probe_parser.add_argument("--unit-id", type=int, default=DEFAULT_UNIT)
    probe_parser.add_argument("--timeout", type=float, default=3.0)
    probe_parser.add_argument("--json", action="store_true", help="print JSON")
    probe_parser.set_defaults(handler=probe)


async def simulate(args: argparse.Namespace) -> int:
    model = WallboxModel(args.model)
    overrides: dict[str, object] = {"firmware": args.firmware} if args.firmware else {}
    sim, clock = build(model, speed=args.speed, **overrides)
    sim.quirks = WallboxQuirks(args.stuck_after_pause, args.zero_reverts, args.refuse_reconnect)
    if args.car:
        sim.plug_in(Car())
    server = WallboxServer(sim, host=args.bind, port=args.port, unit_id=args.unit_id, clock=clock)
    async with server:
        where = f"{args.bind}:{server.port} (unit {args.unit_id})"
        print(f"{model.value.upper()} wallbox on {where}; Ctrl-C stops.", flush=True)
        while True:
            await asyncio.sleep(5)
            state = "fail-safe" if sim.in_failsafe else f"{sim.setpoint} A"
            print(
                f"{clock.now():%H:%M:%S} car={'yes' if sim.car else 'no'} limit={state} "
                f"power={sim.power_w:.0f} W session={sim.session_wh / 1000:.2f} kWh",
                flush=True,
            )


async def probe(args: argparse.Namespace) -> int:
    host, port = split_host_port(args.target, 502)
    auto = args.model == "auto"
    config = WallboxConfig(
        host,
        WallboxModel.NEXT if auto else WallboxModel(args.model),
        port=port,
        unit_id=args.unit_id,
        timeout=args.timeout,
        detect=auto,
    )
    client = WebastoClient(config)
    try:
        await client.connect()
        snapshot = await client.poll(include_slow=True)
    except WallboxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.close()
    model = client.config.model  # what the box answered as
    units = {r.key: r.unit or "" for r in RULES[model].registers}
    document: dict[str, Any] = {
        "host": host,
        "port": port,
        "model": model.value,
        "values": {k: snapshot.values[k] for k in units if k in snapshot.values},
        "problems": snapshot.problems,
    }
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(f"{model.value.upper()} at {host}:{port}")
        for key, value in document["values"].items():
            shown = "" if value is None else f"{value} {units[key]}"
            print(f"  {key:<28} {shown}".rstrip())
        for problem in snapshot.problems:
            print(f"  problem: {problem}")
    return 0
