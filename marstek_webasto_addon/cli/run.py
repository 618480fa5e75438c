"""`run --options PATH`: the bridge, as the add-on runs it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from ..addon.options import Options, OptionsError, load_options
from ..addon.runtime import Runtime
from ..addon.state import StateStore
from ..addon.supervisor import SupervisorError, mqtt_service, token
from ..bridge.mqtt import BrokerSettings

_LOG = logging.getLogger(__name__)
EXIT_BAD_OPTIONS = 2


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("run", help="run the bridge from an options file (what the add-on runs)")
    parser.add_argument("--options", required=True, type=Path, help="the options JSON (/data/options.json)")
    parser.add_argument(
        "--state-dir", type=Path, help="where to keep state (default: the options file's folder)"
    )
    parser.set_defaults(handler=run)


async def broker_settings(options: Options) -> BrokerSettings:
    """Explicit options win; otherwise the Supervisor's MQTT service (Mosquitto add-on)."""
    mqtt = options.mqtt
    if mqtt.host:
        return BrokerSettings(mqtt.host, mqtt.port, mqtt.username, mqtt.password)
    if token() is None:
        raise OptionsError(["mqtt.host: required when not running as a Home Assistant add-on"])
    delay = 5.0
    while True:  # the broker add-on may still be starting: wait for it rather than give up
        try:
            service = await mqtt_service()
        except SupervisorError as exc:
            _LOG.warning("%s; asking again in %.0f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60)
            continue
        return BrokerSettings(
            str(service["host"]),
            int(service.get("port", 1883)),
            str(service.get("username", "")),
            str(service.get("password", "")),
        )


async def run(args: argparse.Namespace) -> int:
    try:
        options = load_options(args.options)
    except OptionsError as exc:
        for problem in exc.problems:
            print(f"error: options: {problem}", file=sys.stderr)
        print("the bridge did not start; nothing was sent to any device", file=sys.stderr)
        return EXIT_BAD_OPTIONS
    logging.getLogger().setLevel(options.log_level.upper())
    try:
        broker = await broker_settings(options)
    except OptionsError as exc:
        for problem in exc.problems:
            print(f"error: options: {problem}", file=sys.stderr)
        return EXIT_BAD_OPTIONS
    state = StateStore((args.state_dir or args.options.resolve().parent) / "state.json")
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, main.cancel)
    _LOG.info(
        "starting: %d batteries, %d wallboxes, MQTT %s",
        len(options.batteries),
        len(options.wallboxes),
        broker.describe(),
    )
    try:
        async with Runtime(options, state, broker) as runtime:
            await runtime.run()
    except asyncio.CancelledError:
        _LOG.info("stopped")
    return 0
