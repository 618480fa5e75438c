"""`diagnostics`: fetch the diagnostics file from a running add-on's panel, for a bug report."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import aiohttp

from ..web.guard import PASSWORD_ENV
from .run import INGRESS_PORT


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "diagnostics", help="save the diagnostics of a running bridge (versions, devices, errors; no secrets)"
    )
    parser.add_argument(
        "--panel",
        default=f"http://127.0.0.1:{INGRESS_PORT}/",
        help=f"the panel's address (default: %(default)s); its password, if any, from {PASSWORD_ENV}",
    )
    parser.add_argument("--output", type=Path, help="file to write (default: print to standard output)")
    parser.set_defaults(handler=_diagnostics)


async def _diagnostics(args: argparse.Namespace) -> int:
    url = args.panel.rstrip("/") + "/api/diagnostics"
    password = os.environ.get(PASSWORD_ENV)
    auth = aiohttp.BasicAuth("diagnostics", password) if password else None
    try:
        async with (
            aiohttp.ClientSession(auth=auth) as http,
            http.get(url, timeout=aiohttp.ClientTimeout(30)) as reply,
        ):
            if reply.status != 200:
                print(f"error: {url} answered {reply.status}: {(await reply.text())[:200]}", file=sys.stderr)
                return 1
            report = await reply.json()
    except (aiohttp.ClientError, TimeoutError) as exc:
        print(
            f"error: no panel at {url} ({exc or type(exc).__name__}); is the bridge running? Outside the"
            " add-on its panel is off unless started with `run --panel-port PORT` (then give --panel"
            " http://127.0.0.1:PORT/)",
            file=sys.stderr,
        )
        return 1
    text = json.dumps(report, indent=1)
    if args.output is None:
        print(text)
    else:
        args.output.write_text(text + "\n")
        print(f"diagnostics written to {args.output}", file=sys.stderr)
    return 0
