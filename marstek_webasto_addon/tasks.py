"""Stopping a group of asyncio tasks: cancel every one, then wait until each has really finished."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

RECANCEL_S = 1.0


async def cancel_all(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel all before awaiting any, and cancel again what is still running a moment later.

    On Python 3.11 `asyncio.wait_for` can swallow a cancellation that lands just as its inner future
    completes (CPython gh-86296, fixed in 3.12); aiomqtt waits that way, so a task can outlive one cancel.
    A second cancel lands at its next await. The first error a task ended with (other than being
    cancelled) is raised once all have finished.
    """
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    pending = {task for task in tasks if not task.done()}
    while pending:
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_S)
        for task in pending:
            task.cancel()
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
