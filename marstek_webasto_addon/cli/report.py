"""`report`: the savings report on a site's own recorded history (`replay.own_history`).

    report --history /data/state.json --tariff /data/options.json

prints per scenario the bill, the saving against no battery and the share of the best possible, and each
month's bill. The panel's background job runs this command (`--out FILE --progress`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..devices.marstek.simulator.profiles import PROFILES
from ..optimiser.tariff import DEFAULT_TARIFF
from ..replay.own_history import REPORTED, HistoryError, read_history, savings_report
from .marstek import positive_int
from .replay import load_tariff

DEFAULT_PROFILE = "venus_e3_v150"
NAMES = {
    "no_battery": "no battery",
    "auto_all": "batteries in Auto",
    "rules": "rules",
    "optimiser": "planner",
    "bound": "best possible",
}


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "report",
        help="the savings report: the replay on the site's own recorded history (no battery, Auto, rules, "
        "planner, best possible)",
    )
    parser.add_argument(
        "--history",
        type=Path,
        required=True,
        metavar="FILE",
        help="the add-on's state.json (under /data), or the `history` section saved from it",
    )
    parser.add_argument(
        "--tariff",
        type=Path,
        metavar="FILE",
        help="the add-on's options.json (its tariff and battery count) or a JSON file with a `tariff` "
        "section (default: the built-in tariff)",
    )
    parser.add_argument(
        "--batteries", type=positive_int, help="how many batteries (default: the options' count, else 3)"
    )
    parser.add_argument("--profile", default=DEFAULT_PROFILE, choices=sorted(PROFILES))
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--out", type=Path, metavar="FILE", help="also write the report as JSON to FILE")
    parser.add_argument(
        "--progress", action="store_true", help="print the share done as `progress 0.42` lines to stdout"
    )
    parser.set_defaults(handler=report)


def _battery_count(path: Path | None) -> int | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # load_tariff says what is wrong with the file
    batteries = data.get("batteries") if isinstance(data, dict) else None
    return len(batteries) if isinstance(batteries, list) and batteries else None


async def report(args: argparse.Namespace) -> int:
    try:
        history = read_history(args.history)
        tariff = load_tariff(args.tariff) if args.tariff else DEFAULT_TARIFF
        batteries = args.batteries or _battery_count(args.tariff) or 3

        def progress(done: float) -> None:
            if args.progress:
                print(f"progress {done:.4f}", flush=True)

        result = savings_report(history, tariff, batteries=batteries, profile=args.profile, progress=progress)
    except (HistoryError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    if args.out:
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1), encoding="utf-8")
        os.replace(tmp, args.out)
    if args.json:
        print(json.dumps(result, indent=2))
    elif not args.progress:
        print(table(result))
    return 0


def table(result: dict[str, Any]) -> str:
    """The report as a person reads it in a terminal."""
    lines = [
        f"Savings report: recorded history {result['from'].replace('T', ' ')} to "
        f"{result['to'].replace('T', ' ')} ({result['days']:g} days, {result['load_kwh']:g} kWh load, "
        f"{result['pv_kwh']:g} kWh PV); {result['batteries']} x {result['profile']}; "
        f"prices: {result['prices']}",
        f"{'':<18}{'bill EUR':>10}{'energy':>10}{'capacity':>10}{'saving':>10}{'share':>8}",
    ]
    for name in REPORTED:
        s = result["scenarios"][name]
        share = "-" if s["share"] is None else f"{s['share']:.0%}"
        lines.append(
            f"{NAMES[name]:<18}{s['bill_eur']:>10.2f}{s['energy_eur']:>10.2f}{s['capacity_eur']:>10.2f}"
            f"{s['saving_eur']:>10.2f}{share:>8}"
        )
    lines.append(f"{'bill EUR by month':<18}" + "".join(f"{month:>10}" for month in result["months"]))
    for name in REPORTED:
        months = result["scenarios"][name]["months"]
        lines.append(
            f"{NAMES[name]:<18}" + "".join(f"{months[m]['bill_eur']:>10.2f}" for m in result["months"])
        )
    lines += [f"note: {note}" for note in result["notes"]]
    return "\n".join(lines)
