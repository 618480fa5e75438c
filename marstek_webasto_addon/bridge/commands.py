"""One validated path for every command, from MQTT or the panel.

Payloads are validated against the device's exposes before anything reaches a device, and taking a
command in never waits: the MQTT message loop hands each one over and moves on, so a flood on one device
delays neither another device's commands nor the bridge's own topics. Each device has a worker that
executes one command at a time; while a command waits, a newer one on the same channel replaces it (the
latest wins), so a dragged slider becomes one write, not twenty, and what waits is bounded by the number
of channels, never by the number of messages. The device clients enforce the physical pacing (the
Marstek's >= 5 s between writes).

Commands that never run are counted, not logged one by one: the first after a quiet spell is logged in
full, the rest in one summary per window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..devices.outcome import WriteOutcome, WriteStatus
from .devices import BridgedDevice
from .exposes import CommandRejected, Expose, by_key

_LOG = logging.getLogger(__name__)

OutcomeListener = Callable[[BridgedDevice, WriteOutcome], Awaitable[None]]
RejectionListener = Callable[[BridgedDevice], None]
SUMMARY_WINDOW = 60.0
# A device's exposes change only when it has news (`forget`); this bounds the effect of any missed news.
CONTROLS_TTL = 5.0


@dataclass(frozen=True)
class Command:
    key: str
    value: Any
    source: str  # "mqtt" or "panel"
    # Resolved with the outcome, or with None when a newer command on the channel replaced this one.
    done: asyncio.Future[WriteOutcome | None] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Submitted:
    """What became of a command: rejected (with the reason), or its outcome once it ran."""

    rejected: str | None = None
    outcome: WriteOutcome | None = None
    replaced: bool = False  # a newer command on the same channel took its place before it ran


@dataclass
class Dropped:
    """Commands that never ran, since the bridge started."""

    rejected: int = 0  # invalid payload, unknown control, device offline
    unknown_device: int = 0
    replaced: int = 0  # a newer command on the same channel took its place (by design: latest wins)


class _DeviceQueue:
    def __init__(self) -> None:
        self.pending: OrderedDict[str, Command] = OrderedDict()  # channel -> latest command
        self.task: asyncio.Task[None] | None = None


class _Summary:
    """One warning per window for commands that are ignored, however many there are."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._timer: asyncio.TimerHandle | None = None
        self._count = 0
        self._last = ""

    def note(self, text: str) -> None:
        if self._timer is None:
            _LOG.warning("%s", text)  # the first after a quiet spell: in full, at once
            self._timer = asyncio.get_running_loop().call_later(self.window, self._flush)
        else:
            self._count += 1
            self._last = text

    def _flush(self) -> None:
        if not self._count:
            self._timer = None
            return
        _LOG.warning(
            "ignored %d more commands in the last %.0f s; the last: %s", self._count, self.window, self._last
        )
        self._count, self._last = 0, ""
        self._timer = asyncio.get_running_loop().call_later(self.window, self._flush)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class CommandRouter:
    def __init__(
        self,
        devices: Callable[[], dict[str, BridgedDevice]],
        on_outcome: OutcomeListener,
        on_rejected: RejectionListener = lambda device: None,
        *,
        summary_window: float = SUMMARY_WINDOW,
    ) -> None:
        self.devices = devices  # by id; a function because ids are learned as devices first answer
        self.on_outcome = on_outcome  # after a command ran
        self.on_rejected = on_rejected  # after `device.reject(...)`; must not wait for anything
        self.dropped = Dropped()
        self.summary = _Summary(summary_window)
        self._queues: dict[str, _DeviceQueue] = {}
        # Building a battery's exposes costs ~0.1 ms: on every message of a flood, that is the bottleneck.
        self._controls: dict[int, tuple[float, dict[str, Expose]]] = {}  # id(device) -> (when, by key)

    def forget(self, device: BridgedDevice) -> None:
        """The device has news (a poll, a command): its controls may have changed."""
        self._controls.pop(id(device), None)

    def _controls_of(self, device: BridgedDevice) -> dict[str, Expose]:
        cached = self._controls.get(id(device))
        now = time.monotonic()
        if cached is not None and now - cached[0] < CONTROLS_TTL:
            return cached[1]
        controls = by_key(device.exposes())
        self._controls[id(device)] = (now, controls)
        return controls

    def offer(
        self,
        device_id: str,
        key: str,
        payload: bytes | str,
        source: str = "mqtt",
        done: asyncio.Future[WriteOutcome | None] | None = None,
    ) -> str | None:
        """Validate and queue, without waiting. Returns None when queued, or why it was rejected."""
        device = self.devices().get(device_id)
        if device is None:
            self.dropped.unknown_device += 1
            self.summary.note(f"command for unknown device {device_id!r} ({key}) ignored")
            return f"unknown device {device_id!r}"
        expose = self._controls_of(device).get(key)
        if expose is None or not expose.component.commandable:
            reason = f"{device.name} has no control {key!r}"
        elif not device.available and device.kind != "site" and not expose.stored:
            reason = f"{device.name} is offline; command not sent"
        else:
            try:
                value = expose.validate(payload)
            except CommandRejected as exc:
                reason = str(exc)
            else:
                self._enqueue(device_id, device, Command(key, value, source, done))
                return None
        shown = payload[:60] if isinstance(payload, str) else payload[:60].decode("utf-8", "replace")
        self.dropped.rejected += 1
        self.summary.note(f"{device.name}: rejected {key}={shown!r} from {source}: {reason}")
        device.reject(f"{key} = {shown!r}", reason)
        self.on_rejected(device)
        return reason

    async def submit(
        self,
        device_id: str,
        key: str,
        payload: bytes | str,
        source: str = "mqtt",
        done: asyncio.Future[WriteOutcome | None] | None = None,
    ) -> str | None:
        """`offer`, for callers that are used to awaiting it."""
        return self.offer(device_id, key, payload, source, done)

    def _enqueue(self, device_id: str, device: BridgedDevice, command: Command) -> None:
        queue = self._queues.setdefault(device_id, _DeviceQueue())
        channel = device.channel(command.key)
        replaced = queue.pending.pop(channel, None)
        if replaced is not None:
            self.dropped.replaced += 1
            _LOG.debug("%s: %s replaces a queued %s", device.name, command.key, replaced.key)
            _resolve(replaced, None)
        queue.pending[channel] = command
        if queue.task is None or queue.task.done():
            queue.task = asyncio.create_task(self._worker(device, queue), name=f"commands-{device_id}")

    async def _worker(self, device: BridgedDevice, queue: _DeviceQueue) -> None:
        while queue.pending:
            command = queue.pending.pop(min(queue.pending, key=device.rank))  # the first of the lowest rank
            try:
                outcome = await device.execute(command.key, command.value, command.source)
            except Exception as exc:  # a device bug must become a visible outcome, not a dead worker
                _LOG.exception("%s: %s failed", device.name, command.key)
                outcome = WriteOutcome(WriteStatus.NOT_APPLIED, command.key, 1, f"internal error: {exc}")
            device.record(outcome)
            self.forget(device)
            _resolve(command, outcome)
            await self.on_outcome(device, outcome)

    def backlog(self) -> int:
        """Commands waiting to run, over every device (at most one per channel)."""
        return sum(len(queue.pending) for queue in self._queues.values())

    async def run(
        self, device_id: str, key: str, payload: bytes | str, source: str, timeout: float
    ) -> Submitted:
        """Submit and wait for the outcome (the panel shows it to the user who asked)."""
        done: asyncio.Future[WriteOutcome | None] = asyncio.get_running_loop().create_future()
        rejected = self.offer(device_id, key, payload, source, done)
        if rejected is not None:
            return Submitted(rejected=rejected)
        try:
            outcome = await asyncio.wait_for(asyncio.shield(done), timeout)
        except TimeoutError:
            return Submitted()  # still queued or running: its outcome will show on the device
        return Submitted(outcome=outcome, replaced=outcome is None)

    async def idle(self) -> None:
        """Wait until every queued command has run (tests, clean shutdown)."""
        for queue in list(self._queues.values()):
            if queue.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await queue.task

    async def close(self) -> None:
        self.summary.close()
        for queue in self._queues.values():
            if queue.task is not None:
                queue.task.cancel()
            for command in queue.pending.values():
                _resolve(command, None)
        await self.idle()


def _resolve(command: Command, outcome: WriteOutcome | None) -> None:
    if command.done is not None and not command.done.done():
        command.done.set_result(outcome)
