"""`simulate marstek`, `probe marstek` and `discover marstek`."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..demo.world import PortInUseError, check_udp_free
from ..devices.marstek.client import DEFAULT_PORT, MarstekClient, Pacing
from ..devices.marstek.datapoints import BATTERY_POINTS, READ_METHODS, Group
from ..devices.marstek.discovery import broadcast_addresses, discover, expand_targets
from ..devices.marstek.modbus.battery import ModbusBattery
from ..devices.marstek.modbus.client import DEFAULT_PORT as MODBUS_PORT
from ..devices.marstek.modbus.client import DEFAULT_UNIT
from ..devices.marstek.modbus.registers import CONTROL_BY_KEY, Generation
from ..devices.marstek.protocol import MarstekError
from ..devices.marstek.simulator import PROFILES, MarstekSimulator, ModbusQuirks, Quirks
from ..devices.marstek.simulator.server import battery_address
from ..devices.marstek.transport import UdpEndpoint
from .words import counted


def register(devices: dict[str, argparse._SubParsersAction[argparse.ArgumentParser]]) -> None:
    sim = devices["simulate"].add_parser("marstek", help="simulated Venus batteries on UDP (and Modbus TCP)")
    sim.add_argument("--count", type=positive_int, default=3, help="number of batteries (default 3)")
    sim.add_argument(
        "--bind",
        default="127.0.0.1",
        help="127.0.0.1: battery i listens on 127.0.0.(10+i); other addresses: consecutive ports",
    )
    sim.add_argument("--port", type=port_number, default=DEFAULT_PORT)
    sim.add_argument("--profile", default="venus_e3_v150", choices=sorted(PROFILES))
    sim.add_argument(
        "--speed", type=positive_float, default=1.0, help="simulated time runs this many times faster"
    )
    sim.add_argument("--soc", type=float, action="append", help="initial SOC per battery (repeatable)")
    sim.add_argument("--latency-ms", type=float, default=0.0, help="reply delay")
    sim.add_argument(
        "--modbus-port",
        type=int,
        metavar="PORT",
        help="also serve each battery's Modbus map over TCP (on 127.0.0.1: at its own address; "
        "otherwise on consecutive ports)",
    )
    quirks = sim.add_argument_group("quirks (all off by default)")
    quirks.add_argument("--loss", type=float, default=0.0, metavar="PCT", help="drop this share of requests")
    quirks.add_argument("--duplicates", action="store_true", help="send every reply twice")
    quirks.add_argument(
        "--parse-errors",
        type=float,
        default=0.0,
        metavar="PCT",
        help="answer this share of valid requests with -32700",
    )
    quirks.add_argument(
        "--ignore-first-setmode", action="store_true", help="apply a new SetMode only when resent"
    )
    quirks.add_argument(
        "--leave-passive-after", type=float, metavar="S", help="silently leave Passive after S s"
    )
    quirks.add_argument(
        "--reply-to-port", type=int, metavar="PORT", help="reply only to this port (e.g. 30000)"
    )
    quirks.add_argument("--outage-every", type=float, metavar="S", help="a network outage every S seconds")
    quirks.add_argument("--outage-duration", type=float, default=3.0, metavar="S")
    quirks.add_argument(
        "--modbus-reply-delay", type=float, default=0.0, metavar="S", help="hold Modbus replies back S s"
    )
    sim.set_defaults(handler=simulate)

    probe_parser = devices["probe"].add_parser("marstek", help="one full read of one battery")
    probe_parser.add_argument("target", metavar="HOST[:PORT]", nargs="?")
    probe_parser.add_argument(
        "--transport",
        choices=("udp", "modbus"),
        default="udp",
        help="udp: the Local API (default); modbus: Modbus TCP (LAN port or RS485 gateway), read only",
    )
    probe_parser.add_argument("--host", help="the battery (or gateway); instead of HOST[:PORT]")
    probe_parser.add_argument("--port", type=port_number, help="default 30000 (udp) or 502 (modbus)")
    probe_parser.add_argument("--unit-id", type=int, default=DEFAULT_UNIT, help="Modbus unit id (default 1)")
    probe_parser.add_argument(
        "--generation", choices=("auto", "v12", "v3"), default="auto", help="Modbus register map"
    )
    probe_parser.add_argument("--json", action="store_true", help="print JSON")
    probe_parser.add_argument("--bind", default="0.0.0.0", help="local address to bind")
    probe_parser.add_argument("--timeout", type=float, default=3.0, help="seconds per attempt")
    probe_parser.add_argument("--gap", type=float, default=1.0, help="seconds between requests")
    probe_parser.set_defaults(handler=probe)

    disc = devices["discover"].add_parser("marstek", help="broadcast Marstek.GetDevice and list who answers")
    disc.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="ADDR",
        help="send to ADDR, ADDR:PORT or a CIDR block instead of broadcasting (repeatable)",
    )
    disc.add_argument("--port", type=port_number, default=DEFAULT_PORT)
    disc.add_argument("--timeout", type=float, default=10.0)
    disc.add_argument("--bind", default="0.0.0.0", help="local address to bind")
    disc.add_argument("--json", action="store_true", help="print JSON")
    disc.set_defaults(handler=discover_command)


class UsageError(ValueError):
    """A command line that cannot mean anything; `main` prints it as argparse does its own (exit 2)."""


_N = TypeVar("_N", int, float)


def _number_type(
    convert: Callable[[str], _N], what: str, ok: Callable[[_N], bool], rule: str
) -> Callable[[str], _N]:
    """An argparse type: `convert` the text, then check it (`rule` says what `ok` wants)."""

    def parse(text: str) -> _N:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{text} {rule}")
        return value

    return parse


# A count, speed or duration of 0 or less ran and printed nothing useful; infinity is no speed either.
port_number = _number_type(
    int, "a port number (1-65535)", lambda v: 1 <= v <= 65535, "is not a port (1-65535)"
)
positive_int = _number_type(int, "a whole number", lambda v: v >= 1, "must be at least 1")
positive_float = _number_type(float, "a number", lambda v: 0 < v < math.inf, "must be a number above 0")
non_negative_float = _number_type(float, "a number", lambda v: 0 <= v < math.inf, "must be 0 or more")


def split_host_port(target: str, default_port: int) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if not sep:
        return target, default_port
    try:
        return host, port_number(port)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"argument HOST[:PORT]: {target}: {exc}") from None


async def simulate(args: argparse.Namespace) -> int:
    quirks = Quirks(
        loss_percent=args.loss,
        duplicate_replies=args.duplicates,
        spurious_parse_error_percent=args.parse_errors,
        ignore_first_setmode=args.ignore_first_setmode,
        leave_passive_after_s=args.leave_passive_after,
        reply_to_port=args.reply_to_port,
    )
    simulator = MarstekSimulator.build(
        args.count,
        bind=args.bind,
        port=args.port,
        profile=args.profile,
        speed=args.speed,
        quirks=quirks,
        socs=args.soc,
        latency=args.latency_ms / 1000,
    )
    try:
        refuse_taken_ports(simulator.addresses)
        await simulator.start()
    except OSError as exc:
        print(f"error: {_cannot_listen(exc, args)}", file=sys.stderr)
        return 1
    try:
        for index, (battery, (host, port)) in enumerate(
            zip(simulator.batteries, simulator.addresses, strict=True)
        ):
            modbus = ""
            if args.modbus_port is not None:
                tcp_host, tcp_port = battery_address(args.bind, index + 1, args.modbus_port)
                try:
                    server = await simulator.serve_modbus(
                        index,
                        host=tcp_host,
                        port=tcp_port,
                        quirks=ModbusQuirks(reply_delay=args.modbus_reply_delay),
                    )
                except OSError as exc:
                    print(
                        f"error: cannot serve Modbus TCP on {tcp_host}:{tcp_port}: {exc.strerror or exc}"
                        " (choose another --modbus-port)",
                        file=sys.stderr,
                    )
                    return 1
                modbus = f", Modbus TCP ({server.generation.value} map) on {tcp_host}:{server.port}"
            print(
                f"{battery.profile.device} v{battery.profile.ver} {battery.ble_mac} on {host}:{port}{modbus}",
                flush=True,
            )
        running = counted(args.count, "battery", "batteries")
        print(f"{running} running at {args.speed}x speed; Ctrl-C stops.", flush=True)
        next_outage = args.outage_every
        elapsed = 0.0
        while True:
            await asyncio.sleep(5)
            elapsed += 5
            if next_outage is not None and elapsed >= next_outage:
                for index in range(len(simulator.batteries)):
                    simulator.outage(index, args.outage_duration)
                next_outage += args.outage_every
            states = "  ".join(
                f"{b.ip}: {b.physics.soc:5.1f}% {b.mode:<7} {b.physics.ac_power:+6.0f} W"
                for b in simulator.batteries
            )
            print(
                f"{simulator.clock.now():%H:%M:%S} grid {simulator.site.total_power():+6.0f} W  {states}",
                flush=True,
            )
    finally:
        await simulator.stop()


def refuse_taken_ports(addresses: Sequence[tuple[str, int]]) -> None:
    """PortInUseError naming this command's option when another socket holds one of these addresses.

    The simulated batteries bind with SO_REUSEADDR (clients on 0.0.0.0 share the API port with them, as on
    a LAN), so a second simulator, or one started next to a listener already there, bound without a word
    and took part of the other's traffic. The demo's check finds that; asked per address, so the message
    names the port and the option to change.
    """
    for host, port in addresses:
        try:
            check_udp_free([(host, port)])
        except PortInUseError:
            raise PortInUseError(
                f"UDP port {port} is in use on {host} (another `simulate marstek`, a demo or `run`?):"
                " choose another --port"
            ) from None


def _cannot_listen(exc: OSError, args: argparse.Namespace) -> str:
    if isinstance(exc, PortInUseError):
        return str(exc)
    return f"cannot listen on --bind {args.bind} --port {args.port}: {exc.strerror or exc}"


def grouped(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Values by section, in table order."""
    sections: dict[str, dict[str, Any]] = {group.value: {} for group in Group}
    for point in BATTERY_POINTS:
        if point.key in values:
            sections[point.group.value][point.key] = values[point.key]
    return sections


def _probe_target(args: argparse.Namespace, default_port: int) -> tuple[str, int]:
    if args.host:
        return args.host, args.port or default_port
    if not args.target:
        raise SystemExit("error: give HOST[:PORT] or --host")
    host, port = split_host_port(args.target, args.port or default_port)
    return host, port


async def probe(args: argparse.Namespace) -> int:
    if args.transport == "modbus":
        return await probe_modbus(args)
    host, port = _probe_target(args, DEFAULT_PORT)
    pacing = Pacing(request_gap=args.gap, timeout=args.timeout)
    async with MarstekClient.connect(host, port, local_host=args.bind, pacing=pacing) as client:
        report = await client.read(READ_METHODS)
    snapshot = client.snapshot
    document: dict[str, Any] = {
        "host": host,
        "port": port,
        "model": snapshot.firmware.model,
        "family": snapshot.firmware.family.value,
        **grouped(snapshot.values),
        "unsupported": sorted(m.value for m in client.unsupported_methods),
        "errors": {m.value: str(e) for m, e in report.errors.items() if not client.is_unsupported(m)},
        "problems": report.problems,
    }
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        _print_probe(document)
    if not report.any_answer:
        print(f"error: no answer from {host}:{port}", file=sys.stderr)
        return 1
    return 0


async def probe_modbus(args: argparse.Namespace) -> int:
    """The same decoded values as the UDP probe, read over Modbus TCP, and the control registers. Nothing
    is written: a battery found in RS485 control is left as it is."""
    host, port = _probe_target(args, MODBUS_PORT)
    generation = None if args.generation == "auto" else Generation(args.generation)
    battery = ModbusBattery(host, port, unit_id=args.unit_id, generation=generation, timeout=args.timeout)
    try:
        await battery.modbus.connect()
        if generation is None:
            await battery.choose_generation()
        snapshot = await battery.modbus.poll()
    except MarstekError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await battery.modbus.close()
    control = battery.modbus.control
    document: dict[str, Any] = {
        "host": host,
        "port": port,
        "transport": "modbus",
        "map": battery.modbus.config.generation.value,
        "model": snapshot.firmware.model,
        "family": snapshot.firmware.family.value,
        **grouped(snapshot.values),
        "control": {key: control.readings.get(key) for key in CONTROL_BY_KEY if key in control.readings},
        "unsupported": [],
        "errors": {},
        "problems": snapshot.problems,
    }
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        _print_probe(document)
        print("  control registers")
        for key, value in document["control"].items():
            shown = f"{value:g}" if isinstance(value, float) else value
            print(
                f"    {key:<22} {shown} ({CONTROL_BY_KEY[key].name}, {CONTROL_BY_KEY[key].register.address})"
            )
    return 0


def _print_probe(document: dict[str, Any]) -> None:
    units = {p.key: p.unit or "" for p in BATTERY_POINTS}
    over = f" over Modbus TCP ({document['map']} map)" if document.get("transport") == "modbus" else ""
    print(f"{document['model']} at {document['host']}:{document['port']}{over}")
    for group in Group:
        section = document[group.value]
        if section:
            print(f"  {group.value}")
            for key, value in section.items():
                shown = f"{value:.2f}".rstrip("0").rstrip(".") if isinstance(value, float) else value
                print(f"    {key:<22} {shown} {units[key]}".rstrip())
    for label in ("unsupported", "errors", "problems"):
        if document[label]:
            print(f"  {label}: {document[label]}")


def _expand_target(spec: str, default_port: int) -> list[tuple[str, int]]:
    try:
        targets = expand_targets([spec], default_port)
    except ValueError as exc:
        raise UsageError(
            f"argument --target: {spec!r} is not an IPv4 address, ADDR:PORT or CIDR block ({exc})"
        ) from None
    for _, port in targets:
        if not 1 <= port <= 65535:
            raise UsageError(f"argument --target: {spec!r}: {port} is not a port number (1-65535)")
    return targets


async def discover_command(args: argparse.Namespace) -> int:
    targets = (
        [target for spec in args.target for target in _expand_target(spec, args.port)]
        if args.target
        else [(address, args.port) for address in broadcast_addresses()]
    )
    endpoint = await UdpEndpoint.open(args.bind, args.port)
    try:
        found = await discover(endpoint, targets, timeout=args.timeout)
    finally:
        endpoint.close()
    if args.json:
        print(json.dumps([battery.__dict__ for battery in found], indent=2))
    else:
        for b in found:
            print(f"{b.host}:{b.port}  {b.model} v{b.firmware}  ble_mac {b.ble_mac}  wifi_mac {b.wifi_mac}")
        print(f"{counted(len(found), 'battery', 'batteries')} found")
    return 0
