"""cancel_all ends tasks even when something inside them swallowed the first cancellation."""

from __future__ import annotations

import asyncio
import contextlib

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


class LinkLost(Exception):
    """What a helper task of a session ends with when its connection breaks."""


async def test_a_stop_is_not_turned_into_a_helper_error(caplog: pytest.LogCaptureFixture) -> None:
    # Shaped like MqttBridge.run: a session whose helper task broke, inside a loop that reconnects after a
    # lost link. A stop (a cancellation) of that loop must end it, not start another session.
    helpers: list[asyncio.Task[None]] = []
    reconnected = asyncio.Event()

    async def breaks() -> None:
        raise LinkLost("connection reset")

    async def session() -> None:
        if helpers:
            reconnected.set()
        helper = asyncio.create_task(breaks() if not helpers else asyncio.sleep(60), name="helper")
        helpers.append(helper)
        try:
            await asyncio.Event().wait()
        finally:
            await cancel_all([helper])

    async def run() -> None:
        while True:
            with contextlib.suppress(LinkLost):  # reconnect
                await session()

    runner = asyncio.create_task(run())
    watch = asyncio.create_task(reconnected.wait())
    try:
        await asyncio.sleep(0)  # the runner's first step starts the session and its helper
        await asyncio.wait(helpers, timeout=5)
        assert helpers[0].done()
        runner.cancel()
        await asyncio.wait({runner, watch}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        assert not reconnected.is_set(), "the stop started a new session"
        assert runner.cancelled()
        assert "connection reset" in caplog.text  # the helper's error is not lost either
    finally:
        watch.cancel()
        if not runner.done():
            runner.cancel()
            await asyncio.wait({runner}, timeout=5)


async def test_a_stop_still_runs_the_clean_up_after_a_helper_error(caplog: pytest.LogCaptureFixture) -> None:
    # Shaped like the demo and the simulated world: their tasks stopped, then the servers they talk to.
    cleaned_up = asyncio.Event()

    async def breaks() -> None:
        raise LinkLost("meter feed gone")

    async def serve() -> None:
        helper = asyncio.create_task(breaks(), name="meters")
        try:
            await asyncio.Event().wait()
        finally:
            await cancel_all([helper])
            cleaned_up.set()

    server = asyncio.create_task(serve())
    await asyncio.sleep(0)  # its first step starts the helper
    await asyncio.sleep(0)  # and the helper's breaks it
    server.cancel()
    await asyncio.wait({server}, timeout=5)
    assert cleaned_up.is_set()
    assert server.cancelled()
    assert "meters ended with an error: meter feed gone" in caplog.text
