"""`run --options PATH`: the bridge, as the add-on runs it (and `check-options`, its validation alone).

Both validate through `validated_options`, so a file gets the same answer from each. In the add-on
(SUPERVISOR_TOKEN set) the panel starts first, on the ingress port, before any device or broker is
contacted: Home Assistant's sidebar never shows a 502, and what is wrong shows there. Invalid options do
not end the process there either: the panel lists the problems and no device is contacted until the
options are fixed and the add-on restarted. Outside the add-on, invalid options exit with 2. A battery or
wallbox entry invalid on its own is the exception: `run` leaves it out and runs the rest, saying so
(`check-options` still lists it as a problem).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from ..addon.options import MQTT_HOST_REQUIRED, Options, OptionsError, load_options, load_options_sparing
from ..addon.runtime import Runtime
from ..addon.state import StateDirError, StateStore, default_state_dir, prepare_state_dir
from ..addon.supervisor import SUPERVISOR_URL, SupervisorError, mqtt_service, token
from ..bridge.mqtt import BrokerSettings
from ..web.guard import PASSWORD_ENV
from ..web.server import INGRESS_PROXY, Panel
from .words import counted

_LOG = logging.getLogger(__name__)
EXIT_BAD_OPTIONS = 2
EXIT_NO_STATE_DIR = 1
EXIT_BRIDGE_FAILED = 3
INGRESS_PORT = 8099


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("run", help="run the bridge from an options file (what the add-on runs)")
    parser.add_argument("--options", required=True, type=Path, help="the options JSON (/data/options.json)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="where to keep state (state.json, history.json), created if missing (default: /data in the "
        "add-on, else $XDG_STATE_HOME/marstek_webasto_addon, i.e. ~/.local/state/marstek_webasto_addon)",
    )
    parser.add_argument(
        "--panel-port",
        type=int,
        help=f"serve the panel on this port; 0: no panel (default: {INGRESS_PORT} in the add-on, else 0)",
    )
    parser.add_argument(
        "--panel-bind", help="the panel's address (default: 0.0.0.0 in the add-on, else 127.0.0.1)"
    )
    parser.add_argument(
        "--panel-host",
        action="append",
        default=[],
        metavar="NAME",
        help="outside the add-on: also open the panel under this host name (besides this machine's own "
        f"names and addresses); repeatable. A password comes from the {PASSWORD_ENV} environment variable",
    )
    parser.set_defaults(handler=run)
    check = commands.add_parser(
        "check-options", help="validate an options file as `run` does and list every problem"
    )
    check.add_argument("--options", required=True, type=Path)
    check.set_defaults(handler=check_options)


def broker_elsewhere() -> bool:
    """Whether a broker can come from outside the options: the Supervisor, or the s6 script's hand-over."""
    return token() is not None or handed_over_broker() is not None


def validated_options(path: Path) -> Options:
    """The one validation `check-options` and `run` share: a file gets the same answer from both."""
    return load_options(path, broker_elsewhere=broker_elsewhere())


async def check_options(args: argparse.Namespace) -> int:
    try:
        options = validated_options(args.options)
    except OptionsError as exc:
        for problem in exc.problems:
            print(f"error: options: {problem}", file=sys.stderr)
        return EXIT_BAD_OPTIONS
    batteries = counted(len(options.batteries), "battery", "batteries")
    print(f"options OK: {batteries}, {counted(len(options.wallboxes), 'wallbox', 'wallboxes')}")
    return 0


def handed_over_broker() -> BrokerSettings | None:
    """Credentials the s6 run script got from `bashio::services mqtt` and put in the environment."""
    host = os.environ.get("MWA_MQTT_HOST", "").strip()
    if not host:
        return None
    try:
        port = int(os.environ.get("MWA_MQTT_PORT") or 1883)
    except ValueError:
        port = 1883
    return BrokerSettings(
        host, port, os.environ.get("MWA_MQTT_USERNAME", ""), os.environ.get("MWA_MQTT_PASSWORD", "")
    )


async def broker_settings(
    options: Options,
    waiting: list[str] | None = None,
    supervisor_url: str = SUPERVISOR_URL,
    first_retry_s: float = 5.0,
) -> BrokerSettings:
    """Explicit options win; then what the s6 script handed over; then the Supervisor's MQTT service."""
    mqtt = options.mqtt
    if mqtt.host:
        return BrokerSettings(mqtt.host, mqtt.port, mqtt.username, mqtt.password)
    handed = handed_over_broker()
    if handed is not None:
        return handed
    if token() is None:
        raise OptionsError([MQTT_HOST_REQUIRED])
    delay = first_retry_s
    while True:  # the broker add-on may still be starting: wait for it rather than give up
        try:
            service = await mqtt_service(supervisor_url)
        except SupervisorError as exc:
            _LOG.warning("%s; asking again in %.0f s", exc, delay)
            if waiting is not None:
                waiting[:] = [f"waiting for an MQTT broker: {exc}"]
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60)
            continue
        if waiting is not None:
            waiting.clear()
        return BrokerSettings(
            str(service["host"]),
            int(service.get("port", 1883)),
            str(service.get("username", "")),
            str(service.get("password", "")),
        )


class StopOnce:
    """The signal handler: the first SIGTERM or SIGINT starts the stop (cancels `task`); the next ones are
    ignored, as a second cancellation would cut short the stop that puts the devices in their safe state
    (s6 may signal again, a person may press Ctrl-C twice)."""

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.stopping = False

    def __call__(self) -> None:
        if self.stopping:
            _LOG.info("already stopping: the batteries go back to Auto first")
            return
        self.stopping = True
        self.task.cancel()


def _report(problems: list[str]) -> None:
    for problem in problems:
        print(f"error: options: {problem}", file=sys.stderr, flush=True)


async def run(args: argparse.Namespace) -> int:
    addon = token() is not None
    try:
        state_dir = prepare_state_dir(args.state_dir or default_state_dir(addon))
    except StateDirError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_NO_STATE_DIR
    panel_port = args.panel_port if args.panel_port is not None else (INGRESS_PORT if addon else 0)
    bind = args.panel_bind or ("0.0.0.0" if addon else "127.0.0.1")
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    stop = StopOnce(main)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)

    problems: list[dict[str, str]] = []
    waiting: list[str] = []

    def panel_problems() -> list[dict[str, str]]:
        return problems + [{"source": "MQTT", "text": text} for text in waiting]

    panel: Panel | None = None
    try:
        if panel_port:
            # In the add-on only the ingress proxy may open the panel (host networking puts the port on
            # the LAN); the container's own HEALTHCHECK may ask api/health from loopback.
            panel = Panel(
                None,
                allowed={INGRESS_PROXY} if addon else None,
                hosts=args.panel_host,
                password=os.environ.get(PASSWORD_ENV),
                history_path=state_dir / "history.json",
                report_path=state_dir / "report.json",
                problems=panel_problems,
            )
            await panel.start(bind, panel_port)
        try:
            options, left_out = load_options_sparing(args.options, broker_elsewhere=broker_elsewhere())
        except OptionsError as exc:
            _report(exc.problems)
            print("the bridge did not start; nothing was sent to any device", file=sys.stderr, flush=True)
            if panel is None:
                return EXIT_BAD_OPTIONS
            problems[:] = [{"source": "Options", "text": text} for text in exc.problems]
            await asyncio.Event().wait()  # show the problems until the add-on is stopped
        _report(left_out)
        problems[:] = [{"source": "Options", "text": text} for text in left_out]
        for name, value in (("username", options.mqtt.username), ("password", options.mqtt.password)):
            if value != value.strip():
                # Taken as typed since 0.1.0 (trimmed before): a space typed by mistake now fails the login.
                _LOG.warning(
                    "mqtt.%s begins or ends with a space and is used as typed: if the broker refuses the "
                    "login, remove the space",
                    name,
                )
        logging.getLogger().setLevel(options.log_level.upper())
        try:
            broker = await broker_settings(options, waiting)
        except OptionsError as exc:
            _report(exc.problems)
            if panel is None:
                return EXIT_BAD_OPTIONS
            problems[:] = [{"source": "Options", "text": text} for text in exc.problems]
            await asyncio.Event().wait()
        _LOG.info(
            "starting: %d batteries, %d wallboxes, MQTT %s, state in %s",
            len(options.batteries),
            len(options.wallboxes),
            broker.describe(),
            state_dir,
        )
        async with contextlib.AsyncExitStack() as stack:
            try:
                runtime = await stack.enter_async_context(
                    Runtime(
                        options,
                        StateStore(state_dir / "state.json"),
                        broker,
                        # the entities of a device left out stay in Home Assistant, with its customisations
                        keep_unconfigured=bool(left_out),
                    )
                )
            except Exception as exc:
                # What the options could not check (an address this host does not have): the start failed
                # before any device was commanded, and a restart would fail the same way; the panel says
                # why. A fault later on ends the process (the devices released on the way out), so that
                # the Supervisor's watchdog can start it again.
                _LOG.exception("the bridge could not start")
                if panel is None:
                    return EXIT_BRIDGE_FAILED
                problems[:] = [
                    {"source": "Bridge", "text": f"could not start: {exc}; nothing is sent to any device"}
                ]
                await asyncio.Event().wait()
            if panel is not None:
                panel.attach(runtime)
            await runtime.run()
    except asyncio.CancelledError:
        _LOG.info("stopped")
    finally:
        if panel is not None:
            with contextlib.suppress(Exception):
                await panel.stop()
    return 0
