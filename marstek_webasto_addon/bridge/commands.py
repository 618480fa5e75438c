"""One validated path for every command, from MQTT or the panel.

Payloads are validated against the device's exposes before anything reaches a device. Each device has a
worker that executes one command at a time; while a command waits, a newer one on the same channel
replaces it (the latest wins), so a dragged slider becomes one write, not twenty. The device clients
enforce the physical pacing (the Marstek's >= 5 s between writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..devices.outcome import WriteOutcome, WriteStatus
from .devices import BridgedDevice
from .exposes import CommandRejected, by_key

_LOG = logging.getLogger(__name__)

OutcomeListener = Callable[[BridgedDevice, WriteOutcome | None], Awaitable[None]]


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


class _DeviceQueue:
    def __init__(self) -> None:
        self.pending: OrderedDict[str, Command] = OrderedDict()  # channel -> latest command
        self.task: asyncio.Task[None] | None = None
        self.coalesced = 0


class CommandRouter:
    def __init__(self, devices: Callable[[], dict[str, BridgedDevice]], on_outcome: OutcomeListener) -> None:
        self.devices = devices  # by id; a function because ids are learned as devices first answer
        self.on_outcome = on_outcome
        self._queues: dict[str, _DeviceQueue] = {}

    async def submit(
        self,
        device_id: str,
        key: str,
        payload: bytes | str,
        source: str = "mqtt",
        done: asyncio.Future[WriteOutcome | None] | None = None,
    ) -> str | None:
        """Validate and queue. Returns None when queued, or the reason it was rejected."""
        device = self.devices().get(device_id)
        if device is None:
            _LOG.warning("command for unknown device %r (%s) ignored", device_id, key)
            return f"unknown device {device_id!r}"
        expose = by_key(device.exposes()).get(key)
        if expose is None or not expose.component.commandable:
            reason = f"{device.name} has no control {key!r}"
        elif not device.available and device.kind != "site":
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
        _LOG.warning("%s: rejected %s=%r from %s: %s", device.name, key, shown, source, reason)
        device.reject(f"{key} = {shown!r}", reason)
        await self.on_outcome(device, None)
        return reason

    def _enqueue(self, device_id: str, device: BridgedDevice, command: Command) -> None:
        queue = self._queues.setdefault(device_id, _DeviceQueue())
        channel = device.channel(command.key)
        if channel in queue.pending:
            queue.coalesced += 1
            replaced = queue.pending.pop(channel)
            _LOG.info("%s: %s replaces a queued %s", device.name, command.key, replaced.key)
            _resolve(replaced, None)
        queue.pending[channel] = command
        if queue.task is None or queue.task.done():
            queue.task = asyncio.create_task(self._worker(device, queue), name=f"commands-{device_id}")

    async def _worker(self, device: BridgedDevice, queue: _DeviceQueue) -> None:
        while queue.pending:
            _, command = queue.pending.popitem(last=False)
            try:
                outcome = await device.execute(command.key, command.value)
            except Exception as exc:  # a device bug must become a visible outcome, not a dead worker
                _LOG.exception("%s: %s failed", device.name, command.key)
                outcome = WriteOutcome(WriteStatus.NOT_APPLIED, command.key, 1, f"internal error: {exc}")
            device.record(outcome)
            _resolve(command, outcome)
            await self.on_outcome(device, outcome)

    async def run(
        self, device_id: str, key: str, payload: bytes | str, source: str, timeout: float
    ) -> Submitted:
        """Submit and wait for the outcome (the panel shows it to the user who asked)."""
        done: asyncio.Future[WriteOutcome | None] = asyncio.get_running_loop().create_future()
        rejected = await self.submit(device_id, key, payload, source, done)
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
        for queue in self._queues.values():
            if queue.task is not None:
                queue.task.cancel()
            for command in queue.pending.values():
                _resolve(command, None)
        await self.idle()


def _resolve(command: Command, outcome: WriteOutcome | None) -> None:
    if command.done is not None and not command.done.done():
        command.done.set_result(outcome)
