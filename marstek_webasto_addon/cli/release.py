"""`release --options PATH`: hand RS485 control back on every battery the options put on Modbus.

Over the Local API a Passive command carries a countdown, so the battery leaves it by itself at most 15
minutes after a crashed bridge sent it. Over Modbus there is no such countdown: a forced charge or
discharge lasts until someone releases control. A clean stop of the bridge releases it; this command is
what the add-on's s6 finish script runs when the bridge ended any other way (a crash, an uncaught error,
SIGKILL after the grace time), before the container halts. It needs nothing from the dead bridge: the
options say which batteries are on Modbus (`transport: modbus` or `auto`), and each is asked whether it
is in RS485 control.

Exit status: 0 when every such battery is out of RS485 control (released now, or never in it), 1 when one
could not be reached or refused (it says which), 2 for options it cannot read.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from ..addon.options import BatteryOptions, OptionsError, load_options
from ..devices.marstek.modbus.battery import ModbusBattery
from ..devices.marstek.modbus.registers import Generation
from ..devices.marstek.protocol import MarstekError

_LOG = logging.getLogger(__name__)
# The s6 finish script's own limit (timeout-finish) is longer: the batteries are asked at once, and one that
# has not answered by then is not helped by waiting (the bridge's next start releases it too).
DEFAULT_BUDGET_S = 12.0
EXIT_NOT_RELEASED = 1
EXIT_BAD_OPTIONS = 2


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "release",
        help="release RS485 control on every battery on Modbus (what the add-on runs after a crash)",
    )
    parser.add_argument("--options", required=True, type=Path, help="the options JSON (/data/options.json)")
    parser.add_argument(
        "--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds for all batteries together"
    )
    parser.set_defaults(handler=release)


async def release(args: argparse.Namespace) -> int:
    try:
        # The broker does not matter here: an options file without one is still read for its batteries.
        options = load_options(args.options, broker_elsewhere=True)
    except OptionsError as exc:
        for problem in exc.problems:
            _LOG.error("options: %s", problem)
        _LOG.error("release: the options cannot be read, so no battery on Modbus is known")
        return EXIT_BAD_OPTIONS
    on_modbus = [item for item in options.batteries if item.transport != "udp"]
    if not on_modbus:
        _LOG.info("release: no battery on Modbus")
        return 0
    results = await asyncio.gather(*(release_one(item, args.budget) for item in on_modbus))
    return 0 if all(results) else EXIT_NOT_RELEASED


async def release_one(item: BatteryOptions, budget_s: float) -> bool:
    """Release RS485 control on one battery if it is on; True when it is off now."""
    battery = ModbusBattery(
        item.modbus_address,
        item.modbus_port,
        unit_id=item.modbus_unit_id,
        generation=None if item.modbus_generation == "auto" else Generation(item.modbus_generation),
        ble_mac=item.ble_mac,
    )
    where = f"{item.name} ({item.modbus_address}:{item.modbus_port})"
    try:
        outcome = await asyncio.wait_for(battery.release_left_control(), budget_s)
    except (MarstekError, OSError, TimeoutError) as exc:
        reason = str(exc) or f"no answer within {budget_s:g} s"
        _LOG.error("%s: could not be asked over Modbus, RS485 control may still be on: %s", where, reason)
        return False
    finally:
        await battery.modbus.close()  # (not `close()`: that would take control to release it again)
    if outcome is None:
        _LOG.info("%s: not in RS485 control", where)
        return True
    if outcome.ok:
        _LOG.warning("%s: RS485 control released (the bridge had stopped without releasing it)", where)
        return True
    _LOG.error("%s: RS485 control could not be released: %s", where, outcome.detail)
    return False
