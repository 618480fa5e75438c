"""cancel_all ends tasks even when something inside them swallowed the first cancellation."""

from __future__ import annotations

import asyncio

import pytest

from marstek_webasto_addon.tasks import cancel_all


async def stubborn(started: asyncio.Event, swallowed: list[int]) -> None:
    """Like a loop whose library call turned a cancellation into a normal return."""
    started.set()
    while True:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if not swallowed:
                swallowed.append(1)
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
                continue
            raise


async def test_a_swallowed_cancellation_is_repeated_until_the_task_ends() -> None:
    started, swallowed = asyncio.Event(), []  # type: ignore[var-annotated]
    task = asyncio.create_task(stubborn(started, swallowed))
    await started.wait()
    await asyncio.wait_for(cancel_all([task]), 5)
    assert swallowed == [1]
    assert task.cancelled()


async def test_an_error_a_task_ended_with_is_raised_after_all_stopped() -> None:
    async def fails() -> None:
        raise ValueError("broken")

    sleeper = asyncio.create_task(asyncio.sleep(60))
    failed = asyncio.create_task(fails())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="broken"):
        await cancel_all([failed, sleeper])
    assert sleeper.cancelled()
