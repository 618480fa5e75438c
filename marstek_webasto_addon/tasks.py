"""Stopping a group of asyncio tasks: cancel every one, then wait until each has really finished."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

_LOG = logging.getLogger(__name__)

RECANCEL_S = 1.0


async def cancel_all(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel all before awaiting any, and cancel again what is still running a moment later.

    On Python 3.11 `asyncio.wait_for` can swallow a cancellation that lands just as its inner future
    completes (CPython gh-86296, fixed in 3.12); aiomqtt waits that way, so a task can outlive one cancel.
    A second cancel lands at its next await. The first error a task ended with (other than being
    cancelled) is raised once all have finished, the others are logged.

    While the caller is itself being cancelled (a stop), every error is logged and none is raised: an
    error raised from the caller's `finally` would replace its cancellation, turning the stop into whatever
    the caller does with that error (MqttBridge.run reconnects) and skipping the clean-up that follows.
    Returning lets the cancellation go on; raising a fresh CancelledError instead would break callers that
    have handled theirs already (cli/run.py logs "stopped", then stops the panel with this).
    """
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    pending = {task for task in tasks if not task.done()}
    while pending:
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_S)
        for task in pending:
            task.cancel()
    failed: list[tuple[asyncio.Task[Any], BaseException]] = [
        (task, error) for task in tasks if not task.cancelled() and (error := task.exception()) is not None
    ]
    if not failed:
        return
    caller = asyncio.current_task()
    stopping = caller is not None and caller.cancelling() > 0
    for task, error in failed if stopping else failed[1:]:
        _LOG.error("task %s ended with an error: %s", task.get_name(), error, exc_info=error)
    if not stopping:
        raise failed[0][1]
