"""`release --options PATH`: hand RS485 control back on every battery the options put on Modbus.

Over the Local API a Passive command carries a countdown, so the battery leaves it by itself at most 15
minutes after a crashed bridge sent it. Over Modbus there is no such countdown: a forced charge or
discharge lasts until someone releases control. A clean stop of the bridge releases it; this command is
what the add-on's s6 finish script runs when the bridge ended any other way while the add-on runs (a
crash, an uncaught error, killed by the system), before the container halts. It needs nothing from the
dead bridge: the options say which batteries are on Modbus (`transport: modbus` or `auto`), and each is
asked whether it is in RS485 control. Only the `batteries` section is read, entry by entry: an option
elsewhere that does not validate (saved since the bridge started, say) must not keep a battery in a forced
power.

Exit status: 0 when every such battery is out of RS485 control (released now, or never in it), 1 when one
could not be reached, refused, or has an entry that does not validate (it says which), 2 for an options file
it cannot read.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from pydantic import ValidationError

from ..addon.options import BatteryOptions
from ..devices.marstek.modbus.battery import ModbusBattery
from ..devices.marstek.protocol import MarstekError
from ..jsonfile import read_json

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
        data = read_json(args.options)
    except ValueError as exc:
        _LOG.error("release: %s: no battery on Modbus is known", exc)
        return EXIT_BAD_OPTIONS
    entries = data.get("batteries") if isinstance(data, dict) else None
    on_modbus: list[BatteryOptions] = []
    unreadable = 0
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        try:
            item = BatteryOptions.model_validate(entry)
        except ValidationError as exc:
            if isinstance(entry, dict) and entry.get("transport") in ("modbus", "auto"):
                reason = "; ".join(error["msg"] for error in exc.errors())
                _LOG.error(
                    "batteries[%d]: cannot be released, its options do not validate: %s", index, reason
                )
                unreadable += 1
            continue
        if item.transport != "udp":
            on_modbus.append(item)
    if not on_modbus and not unreadable:
        _LOG.info("release: no battery on Modbus")
        return 0
    results = await asyncio.gather(
        *(release_one(item, args.budget) for item in on_modbus), return_exceptions=True
    )
    for item, result in zip(on_modbus, results, strict=True):
        if isinstance(result, BaseException):
            _LOG.error("%s: the release failed: %r", item.name, result)
    return 0 if not unreadable and all(result is True for result in results) else EXIT_NOT_RELEASED


async def release_one(item: BatteryOptions, budget_s: float) -> bool:
    """Release RS485 control on one battery if it is on; True when it is off now."""
    battery = ModbusBattery(
        item.modbus_address,
        item.modbus_port,
        unit_id=item.modbus_unit_id,
        generation=item.generation,
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
