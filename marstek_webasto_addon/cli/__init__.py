"""Command line: `scripts/mwa <command> ...` in a clone (it runs `python -m marstek_webasto_addon`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import select
import sys
from collections.abc import Sequence

from . import demo, diagnostics, marstek, release, replay, report, run, webasto


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        # scripts/mwa names itself, so a usage line can be copied and run as it is
        prog=os.environ.get("MWA_PROG") or "python -m marstek_webasto_addon",
        description="Marstek Venus batteries and Webasto/Ampure wallboxes for Home Assistant.",
    )
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups = {
        "simulate": commands.add_parser("simulate", help="run simulated devices on this machine"),
        "probe": commands.add_parser("probe", help="read everything from one device once"),
        "discover": commands.add_parser("discover", help="find devices on the network"),
    }
    devices = {
        name: group.add_subparsers(dest="device", required=True, metavar="DEVICE")
        for name, group in groups.items()
    }
    marstek.register(devices)
    webasto.register(devices)
    demo.register(commands)
    run.register(commands)
    release.register(commands)
    replay.register(commands)
    report.register(commands)
    diagnostics.register(commands)
    docs_parser = commands.add_parser("docs", help="check or refresh the generated tables in docs/devices.md")
    docs_parser.add_argument("--write", action="store_true", help="rewrite the file instead of checking it")
    docs_parser.set_defaults(handler=_docs)
    manifest_parser = commands.add_parser("manifest", help="check or refresh the add-on's config.yaml")
    manifest_parser.add_argument(
        "--write", action="store_true", help="rewrite the file instead of checking it"
    )
    manifest_parser.set_defaults(handler=_manifest)
    return parser


async def _manifest(args: argparse.Namespace) -> int:
    from ..addon import manifest

    if args.write:
        print("config.yaml updated" if manifest.write() else "config.yaml is up to date")
        print("DOCS.md updated" if manifest.write_docs() else "DOCS.md is up to date")
        return 0
    stale = []
    if not manifest.CONFIG_PATH.exists() or manifest.CONFIG_PATH.read_text() != manifest.render():
        stale.append("config.yaml")
    docs = manifest.DOCS_PATH.read_text()
    if manifest.render_docs(docs) != docs:
        stale.append("DOCS.md")
    if stale:
        print(f"{' and '.join(stale)} out of date: run `scripts/mwa manifest --write`")
        return 1
    print("config.yaml and DOCS.md are up to date")
    return 0


async def _docs(args: argparse.Namespace) -> int:
    from .. import docs

    if args.write:
        print("docs/devices.md updated" if docs.write() else "docs/devices.md is up to date")
        return 0
    current = docs.DEVICES_DOC.read_text()
    if docs.render(current) != current:
        print("docs/devices.md is out of date: run `scripts/mwa docs --write`")
        return 1
    print("docs/devices.md is up to date")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.log_level != "debug":
        # pymodbus logs every timeout and refused connection at ERROR; our own messages say it better.
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    try:
        result: int = asyncio.run(args.handler(args))
        # Flushed here, not at exit: a reader gone by then (`| head`) is a BrokenPipeError out of reach.
        sys.stdout.flush()
    except KeyboardInterrupt:
        return 130
    except marstek.UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        if not _reader_gone():
            raise  # a device's connection broke, not our reader's pipe: not ours to hide
        # Our reader has what it wanted; Python's flush at exit must not fail on that pipe again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a shell reports a program ended by SIGPIPE
    return result


def _reader_gone() -> bool:
    """Whether standard output is a pipe or socket whose reader has closed it (`| head` has exited)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no such fd, or no poll() on this platform
        return False
