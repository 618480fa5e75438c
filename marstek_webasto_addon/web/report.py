"""The savings report as the panel's background job: one at a time, with progress, kept under /data.

The replay is CPU-bound (seconds to minutes for six weeks), and the add-on's event loop controls the
batteries, so the job runs the package's own `report` command (`cli/report.py`) as a child process with
`asyncio.create_subprocess_exec`: the loop only reads its `progress` lines. Its inputs (the recorded history,
the tariff section of the options) go to a file beside the result; the finished report is written to
`report.json` in the state directory, so it is still shown after a restart. A failure keeps the last good
report and says what went wrong (the command's own error line).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from ..addon.state import write_atomically

_LOG = logging.getLogger(__name__)
ERROR_LINES = 3  # the command's last stderr lines shown when it fails
PACKAGE = __name__.split(".", 1)[0]


class ReportJob:
    """`start()` a report; `status()` is what `GET api/report` answers."""

    def __init__(self, path: Path | None, *, now: Callable[[], datetime] = datetime.now) -> None:
        self.path = path  # report.json in the state directory; None: a scratch file, nothing kept
        self.now = now
        self.state = "idle"  # idle, running, done, failed, cancelled
        self.progress = 0.0
        self.error = ""
        self.started: str | None = None
        self.finished: str | None = None
        self.report: dict[str, Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._cancelling = False
        self._load()

    def _load(self) -> None:
        if self.path is None or not self.path.is_file():
            return
        try:
            saved = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            _LOG.warning(
                "savings report: the saved report %s is unreadable (%s); run it again", self.path, exc
            )
            return
        # The panel renders a finished report's fields: anything but an object there would break it.
        report = saved.get("report") if isinstance(saved, dict) else None
        if not isinstance(report, dict):
            _LOG.warning(
                "savings report: the saved report %s holds no report (%.40r); run it again", self.path, saved
            )
            return
        finished = saved.get("finished")
        self.report, self.finished = report, finished if isinstance(finished, str) else None
        self.state = "done"

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "progress": round(self.progress, 4),
            "error": self.error,
            "started": self.started,
            "finished": self.finished,
            "report": self.report,
        }

    def start(self, history: dict[str, Any], tariff: dict[str, Any], *, batteries: int, profile: str) -> bool:
        """Start a report on this history; False when one is already running."""
        if self.running:
            return False
        self.state, self.progress, self.error = "running", 0.0, ""
        self.started = self.now().isoformat(timespec="seconds")  # `finished` stays the shown report's
        self._task = asyncio.create_task(
            self._run(history, tariff, batteries, profile), name="savings-report"
        )
        return True

    async def cancel(self) -> bool:
        """A person cancels the running report: ended, the last finished report kept. False: none runs."""
        if not self.running:
            return False
        self._cancelling = True
        try:
            await self.stop()
        finally:
            self._cancelling = False
        _LOG.info("savings report: cancelled")
        return True

    async def stop(self) -> None:
        """The panel stops: a running report is ended (it can be started again)."""
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if process is not None and process.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 5)  # reaped: no process left behind

    async def _run(
        self, history: dict[str, Any], tariff: dict[str, Any], batteries: int, profile: str
    ) -> None:
        folder = self.path.parent if self.path is not None else Path(tempfile.gettempdir())
        inputs, out = folder / f"report-input-{os.getpid()}.json", folder / f"report-new-{os.getpid()}.json"
        try:
            inputs.write_text(json.dumps({"history": history, "tariff": tariff}), encoding="utf-8")
            with contextlib.suppress(FileNotFoundError):
                out.unlink()
            # -m the package, with the interpreter running us: the same code, installed or in a clone
            # fmt: off
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", PACKAGE, "report",
                "--history", str(inputs), "--tariff", str(inputs), "--batteries", str(batteries),
                "--profile", profile, "--out", str(out), "--progress",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            # fmt: on
            errors = asyncio.create_task(self._errors())
            await self._follow()
            code = await self._process.wait()
            lines = await errors
            if code != 0:
                raise RuntimeError(" ".join(lines[-ERROR_LINES:]) or f"the report command ended with {code}")
            report = json.loads(out.read_text(encoding="utf-8"))
            self.report, self.progress, self.state = report, 1.0, "done"
            self.finished = self.now().isoformat(timespec="seconds")
            self._save()
            _LOG.info("savings report: done (%s days)", report.get("days"))
        except asyncio.CancelledError:
            if self._cancelling:
                self.state, self.error, self.progress = "cancelled", "", 0.0
            else:
                self.state, self.error = "failed", "stopped before it finished"
            raise
        except (OSError, ValueError, RuntimeError) as exc:
            self.state, self.error = "failed", str(exc).removeprefix("error: ")
            _LOG.warning("savings report failed: %s", self.error)
        finally:
            self._process = None
            for scratch in (inputs, out):
                with contextlib.suppress(OSError):
                    scratch.unlink()

    async def _follow(self) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        async for raw in self._process.stdout:
            word, _, value = raw.decode(errors="replace").strip().partition(" ")
            if word == "progress":
                with contextlib.suppress(ValueError):
                    self.progress = min(1.0, max(self.progress, float(value)))

    async def _errors(self) -> list[str]:
        assert self._process is not None
        assert self._process.stderr is not None
        data = await self._process.stderr.read()
        lines = [raw.decode(errors="replace").strip() for raw in data.splitlines()]
        return [line for line in lines if line]

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            write_atomically(self.path, json.dumps({"finished": self.finished, "report": self.report}))
        except OSError as exc:
            # the report is done and shown; only a restart loses it
            _LOG.warning("savings report: could not keep it in %s (%s)", self.path, exc)
