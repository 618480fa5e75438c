"""A dead battery is seen on time, a returning one at once, and writes never hold up the polls.

Real UDP against the simulator with the add-on's timing shrunk (a poll interval of half a second), so the
figures are asserted in poll intervals, with slack for a busy machine; the real-time figures are in
bench/battery_liveness.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest

from marstek_webasto_addon.devices.marstek.client import MarstekClient, Pacing
from marstek_webasto_addon.devices.marstek.commands import PassiveMode
from marstek_webasto_addon.devices.marstek.datapoints import Method
from marstek_webasto_addon.devices.marstek.link import BatteryLink, LinkSettings
from marstek_webasto_addon.devices.marstek.simulator import MarstekSimulator, Quirks
from marstek_webasto_addon.devices.marstek.simulator.device import SimulatedBattery
from marstek_webasto_addon.devices.marstek.transport import UdpEndpoint
from marstek_webasto_addon.devices.outcome import WriteOutcome, WriteStatus

from .conftest import FAST, SimFactory, client_for, until

pytestmark = pytest.mark.timeout(90)

SHRINK = 20  # the real 10 s poll interval becomes 0.5 s, and every other duration shrinks alike
POLL = LinkSettings().poll_interval / SHRINK
SETTINGS = LinkSettings(poll_interval=POLL, offline_after=3)


def shrunk(pacing: Pacing) -> Pacing:
    changes: dict[str, Any] = {}
    for item in dataclasses.fields(pacing):
        value = getattr(pacing, item.name)
        if isinstance(value, float):
            changes[item.name] = value / SHRINK
        elif isinstance(value, tuple):
            changes[item.name] = tuple(v / SHRINK for v in value)
    return dataclasses.replace(pacing, **changes)


# The real defaults in proportion: 0.075 s per read attempt, 0.15 s per write attempt, 0.25 s between writes.
PACING = shrunk(Pacing())
FAST_READ = (Method.ES_MODE, Method.ES_STATUS)


@dataclass
class Record:
    """What the link published, and when (time.monotonic())."""

    updates: list[tuple[float, bool]] = field(default_factory=list)

    def __call__(self, link: BatteryLink) -> None:
        self.updates.append((time.monotonic(), link.online))

    def polls_since(self, since: float) -> int:
        return sum(1 for at, _ in self.updates if at >= since)

    def first(self, online: bool, since: float) -> float:
        return next(at for at, state in self.updates if at >= since and state is online)


@contextlib.asynccontextmanager
async def polled(
    sim: MarstekSimulator, endpoint: UdpEndpoint, pacing: Pacing = PACING
) -> AsyncIterator[tuple[BatteryLink, Record]]:
    """The battery's link running as in the add-on, settled: online and past its first, longer poll."""
    record = Record()
    link = BatteryLink("FaseA", client_for(sim, endpoint, 0, pacing), SETTINGS, record)
    runner = asyncio.create_task(link.run())
    try:
        await until(lambda: link.online and len(record.updates) >= 3, timeout=20)
        yield link, record
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


async def settle_after_a_poll(record: Record) -> None:
    """Return right after a poll got its answers: the worst moment to die, the whole window has to pass."""
    count = len(record.updates)
    await until(lambda: len(record.updates) > count, timeout=5, every=0.002)


def ignore_writes(battery: SimulatedBattery) -> list[float]:
    """From now on the battery answers reads but never a write: the longest a write can stay pending."""
    original = battery.handle
    writes: list[float] = []

    def handle(data: bytes, sender: tuple[str, int], now_s: float) -> list[tuple[bytes, tuple[str, int]]]:
        if b'"ES.SetMode"' in data:
            writes.append(time.monotonic())
            return []
        return original(data, sender, now_s)

    battery.handle = handle  # type: ignore[method-assign]
    return writes


Writer = Callable[[MarstekClient], Coroutine[Any, Any, WriteOutcome]]
WRITERS: dict[str, Writer | None] = {
    "nothing pending": None,
    "mode write pending": lambda client: client.set_mode(PassiveMode(-1000, 600)),
    "schedule clearing pending": lambda client: client.clear_schedules(),
}


@pytest.mark.parametrize("writer", list(WRITERS.values()), ids=list(WRITERS))
async def test_a_dead_battery_is_offline_within_three_poll_intervals_and_back_within_one(
    make_sim: SimFactory, endpoint: UdpEndpoint, writer: Writer | None
) -> None:
    sim = await make_sim(1)
    async with polled(sim, endpoint) as (link, record):
        await settle_after_a_poll(record)
        last_answer = link.snapshot.updated_at
        stopped = time.monotonic()
        sim.outage(0, 1000)  # stops answering, mid-cadence
        client = link.client
        assert isinstance(client, MarstekClient)
        pending = asyncio.create_task(writer(client)) if writer else None
        await until(lambda: not link.online, timeout=10 * POLL)
        offline = record.first(False, stopped)
        # The write (if any) is still retrying: it neither delayed the verdict nor held up the polls.
        assert pending is None or not pending.done()
        assert offline - last_answer >= 3 * POLL  # no premature verdict: 3 whole intervals without answer
        assert offline - stopped <= 4 * POLL  # required: 3.5 (35 s at 10 s polls); the rest is slack
        assert record.polls_since(stopped) >= 2  # polling went on at its pace meanwhile

        back = time.monotonic()
        sim.outage(0, 0)  # answers again
        await until(lambda: link.online, timeout=10 * POLL)
        online = record.first(True, back)
        assert online - back <= 2 * POLL  # within one poll (plus slack)
        assert [state for at, state in record.updates if back <= at <= online].count(False) <= 1
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending


async def test_answers_late_in_every_poll_keep_the_battery_online(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    sim = await make_sim(1)
    async with polled(sim, endpoint) as (link, record):
        since = time.monotonic()
        for _ in range(4):
            # silent for most of each poll: every poll's answer comes late, after several retries
            sim.outage(0, 0.7 * POLL)
            await asyncio.sleep(POLL)
        assert all(online for at, online in record.updates if at >= since)
        assert link.online


@pytest.mark.parametrize("case", ["write never acknowledged", "write waiting for its verify delay"])
async def test_a_pending_write_does_not_delay_the_polls(
    make_sim: SimFactory, endpoint: UdpEndpoint, case: str
) -> None:
    sim = await make_sim(1, socs=[60.0])
    pacing = PACING
    if case == "write waiting for its verify delay":
        pacing = dataclasses.replace(PACING, verify_delay=8 * POLL)
    async with polled(sim, endpoint, pacing) as (link, record):
        writes = ignore_writes(sim.batteries[0]) if case == "write never acknowledged" else []
        ages: list[float] = []
        started = time.monotonic()
        write = asyncio.create_task(link.client.set_mode(PassiveMode(-800, 600)))
        while not write.done():
            ages.append(time.monotonic() - link.snapshot.updated_at)
            await asyncio.sleep(POLL / 10)
        elapsed = time.monotonic() - started
        outcome = write.result()
        if writes:
            assert outcome.status is WriteStatus.NOT_APPLIED
            assert len(writes) == 3 * PACING.write_attempts  # every attempt of every send was made
        else:
            assert outcome.status is WriteStatus.APPLIED
        assert elapsed >= 3 * POLL  # long enough to show
        # Polls kept their cadence (one per interval; slack for the ends of the window and a busy machine)
        # and the state its freshness.
        assert record.polls_since(started) >= elapsed / POLL - 2
        assert max(ages) < 2 * POLL
        assert all(online for at, online in record.updates if at >= started)


async def test_a_read_waits_for_one_attempt_of_a_write_not_for_its_retries(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    sim = await make_sim(1)
    client = client_for(sim, endpoint, 0, PACING)
    await client.read()
    writes = ignore_writes(sim.batteries[0])
    write = asyncio.create_task(client.set_mode(PassiveMode(-800, 600)))
    await until(lambda: len(writes) == 1, every=0.002)  # the write's first attempt is on the wire
    report = await client.read(FAST_READ)
    assert report.results.keys() == set(FAST_READ)
    assert len(writes) <= 2  # the read got its turn right after the attempt in flight
    write.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await write


async def test_at_30_percent_loss_the_state_stays_younger_than_two_poll_intervals(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    # The seed's loss sequence holds runs of up to four lost requests in a row in its first 400 (for the
    # first simulated battery); the bench uses the same one over a longer run.
    sim = await make_sim(1, quirks=Quirks(loss_percent=30, seed=11))
    polls = 24
    async with polled(sim, endpoint) as (link, record):
        ages: list[float] = []
        started = time.monotonic()
        while time.monotonic() - started < polls * POLL:
            ages.append(time.monotonic() - link.snapshot.updated_at)
            await asyncio.sleep(POLL / 20)
        done = record.polls_since(started)
    assert sim.batteries[0].requests > 2 * polls  # lost requests were retried
    assert max(ages) < 2 * POLL
    assert done >= polls - 2  # the polls ran at their rate
    assert all(online for _, online in record.updates)


def silence(battery: SimulatedBattery) -> list[float]:
    """From now on the battery hears every request and answers none; returns when each arrived."""
    heard: list[float] = []

    def handle(data: bytes, sender: tuple[str, int], now_s: float) -> list[tuple[bytes, tuple[str, int]]]:
        heard.append(time.monotonic())
        return []

    battery.handle = handle  # type: ignore[method-assign]
    return heard


async def test_a_silent_battery_is_not_hammered(make_sim: SimFactory, endpoint: UdpEndpoint) -> None:
    sim = await make_sim(1)
    async with polled(sim, endpoint) as (link, record):
        await settle_after_a_poll(record)
        heard = silence(sim.batteries[0])
        await until(lambda: not link.online, timeout=10 * POLL)
        # Until the verdict, the poll retries: at most one request per read attempt time.
        assert len(heard) <= (SETTINGS.offline_window / PACING.read_attempt_timeout) + 2
        offline = time.monotonic()
        await until(lambda: record.polls_since(offline) >= 4, timeout=20 * POLL)
        polls = record.polls_since(offline)
        # Offline: one method, `attempts` times, per poll.
        assert len([at for at in heard if at >= offline]) <= (polls + 1) * PACING.attempts


async def test_a_battery_silent_since_the_start_is_one_warning_that_says_what_to_check(
    endpoint: UdpEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as nobody:  # an address where nothing answers
        nobody.bind(("127.0.0.1", 0))
        port = nobody.getsockname()[1]
    client = MarstekClient("127.0.0.1", port, endpoint=endpoint, pacing=FAST)
    link = BatteryLink("FaseC", client, LinkSettings(poll_interval=0.2, offline_after=2))
    task = asyncio.create_task(link.run())
    try:
        await until(lambda: any("since the start" in r.getMessage() for r in caplog.records), 10)
        await asyncio.sleep(1.0)  # several more polls without an answer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    warnings = [
        r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name.endswith("link")
    ]
    assert len(warnings) == 1
    assert "FaseC: no answer from 127.0.0.1" in warnings[0]
    assert "Local API is enabled" in warnings[0]
