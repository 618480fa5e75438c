"""A person's Passive over Modbus is renewed every 5 minutes, unless a work mode was picked in the Marstek app
since: the renewal decides on RS485 control and the work mode read just before it (42000 and 43000 alone,
when the last poll's reading is older than a few seconds), so a work mode picked less than one poll before
the renewal is not overwritten by it, and the add-on's lease ends as at a poll that saw the change. Also on
`transport: auto` while it runs on Modbus, and beside the link's own polls. When that read fails (no answer
by its deadline), the renewal goes on the last reading, as before, and says why.

The UDP side: tests/test_lease_renewal_fresh_mode.py. A simulated Venus serving its Modbus map on 127.0.0.1;
the holds on a clock the test moves, the readings' ages on real time (a few seconds are waited out where a
reading must be older than `fresh_mode_s`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

import pytest

from marstek_webasto_addon.bridge.devices import BatteryDevice
from marstek_webasto_addon.bridge.holds import RENEW_S, ManualHolds
from marstek_webasto_addon.devices.marstek.battery_client import BatteryClient
from marstek_webasto_addon.devices.marstek.client import ReadReport
from marstek_webasto_addon.devices.marstek.datapoints import Method
from marstek_webasto_addon.devices.marstek.fallback import FallbackBattery
from marstek_webasto_addon.devices.marstek.firmware import Mode
from marstek_webasto_addon.devices.marstek.link import BatteryLink, LinkSettings
from marstek_webasto_addon.devices.marstek.modbus.battery import ModbusBattery
from marstek_webasto_addon.devices.marstek.modbus.readplan import ReadPlan, control_plan
from marstek_webasto_addon.devices.marstek.modbus.registers import ForceMode
from marstek_webasto_addon.devices.marstek.simulator import VenusModbusServer
from marstek_webasto_addon.devices.marstek.simulator.device import SimulatedBattery
from marstek_webasto_addon.devices.marstek.transport import UdpEndpoint

from .conftest import SimFactory, client_for, until
from .test_lease_renewal_fresh_mode import held_for_the_apps
from .test_manual_hold import ManualClock
from .test_venus_transport import fast

pytestmark = pytest.mark.timeout(60)

Held = tuple[SimulatedBattery, VenusModbusServer, ModbusBattery, BatteryDevice, ManualClock]


async def persons_passive(client: BatteryClient) -> tuple[BatteryDevice, ManualClock]:
    """A person's Discharge now (Passive +800 W for 240 min) given from Auto, and a poll that read it."""
    clock = ManualClock()
    link = BatteryLink("FaseA", client, LinkSettings(poll_interval=2.0))
    assert await link.poll_once()  # Auto, the stored work mode: the mode a lease is compared with
    device = BatteryDevice(
        link, {"passive_power": 800, "passive_duration": 240}, holds=ManualHolds({}, clock=clock)
    )
    assert (await device.execute("discharge_now", "PRESS", "panel")).ok
    assert await link.poll_once()
    assert link.snapshot.mode is Mode.PASSIVE
    return device, clock


async def persons_discharge(
    client: BatteryClient, venus: SimulatedBattery
) -> tuple[BatteryDevice, ManualClock]:
    """`persons_passive` over Modbus: a forced discharge under RS485 control."""
    device, clock = await persons_passive(client)
    assert (venus.rs485_control, venus.force_mode) == (True, ForceMode.DISCHARGE)
    return device, clock


@contextlib.asynccontextmanager
async def on_auto(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> AsyncIterator[tuple[Any, SimulatedBattery, VenusModbusServer, FallbackBattery]]:
    """One simulated Venus with `transport: auto` (the Local API, Modbus after 0.5 s of its silence)."""
    sim = await make_sim(1, socs=[55.0])
    server = await sim.serve_modbus()
    battery = FallbackBattery(client_for(sim, endpoint), fast(server), name="FaseA", silent_for=0.5)
    try:
        yield sim, sim.batteries[0], server, battery
    finally:
        await battery.close()


@contextlib.asynccontextmanager
async def discharging(make_sim: SimFactory, timeout: float = 1.0) -> AsyncIterator[Held]:
    """One simulated Venus over Modbus (requests answered within `timeout`) with a person's Passive."""
    sim = await make_sim(1, socs=[55.0])
    server = await sim.serve_modbus()
    battery = ModbusBattery("127.0.0.1", server.port, timeout=timeout, request_gap=0.005)
    try:
        venus = sim.batteries[0]
        device, clock = await persons_discharge(battery, venus)
        yield venus, server, battery, device, clock
    finally:
        await battery.close()


async def older_than_fresh(device: BatteryDevice) -> None:
    """Real time past `fresh_mode_s`: the last poll's reading of the mode is no longer fresh enough."""
    await asyncio.sleep(device.fresh_mode_s + 0.3)


async def renewal_gives_way_to_the_apps_ai(
    device: BatteryDevice, venus: SimulatedBattery, server: VenusModbusServer, clock: ManualClock
) -> None:
    await older_than_fresh(device)
    server.registers.app_sets_work_mode("AI")  # the Marstek app, after the last poll: RS485 control off
    clock.advance(RENEW_S)
    assert await device.renew_lease() is None, "the renewal wrote Passive over the app's AI"
    assert not venus.rs485_control, "the renewal took RS485 control again over the app's AI"
    assert venus.mode == "AI"
    assert (venus.force_mode, venus.force_discharge_w) == (ForceMode.STOP, 0)  # nothing left in RAM
    assert device.link.snapshot.mode is Mode.AI
    held_for_the_apps(device, "AI")
    # Neither the polls after it nor a later renewal take control back.
    assert await device.link.poll_once()
    clock.advance(RENEW_S)
    assert await device.renew_lease() is None
    assert await device.link.poll_once()
    assert not venus.rs485_control
    assert venus.mode == "AI"


async def test_ai_picked_in_the_app_after_the_last_poll_is_not_overwritten_by_the_renewal(
    make_sim: SimFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    async with discharging(make_sim) as (venus, server, battery, device, clock):
        await renewal_gives_way_to_the_apps_ai(device, venus, server, clock)
        assert battery.lease is None  # ended by the renewal's reading, as a poll that saw the change ends it
        said = [r for r in caplog.records if "changed to AI outside the add-on" in r.getMessage()]
        assert len(said) == 1, [r.getMessage() for r in said]
        assert "could not be read" not in caplog.text


async def test_beside_the_links_own_polls_the_renewal_reads_renews_and_gives_way_alike(
    make_sim: SimFactory,
) -> None:
    # The link polls all the time (its requests and the renewal's interleave on the one connection); every
    # renewal reads the mode first. While the battery is in the person's Passive each renews it; after the
    # app's AI the renewal gives way, whichever saw the change first, the renewal's reading or a poll.
    async with discharging(make_sim) as (venus, server, battery, device, clock):
        device.fresh_mode_s = 0.0  # every renewal reads
        device.link.settings = LinkSettings(poll_interval=0.1)
        polling = asyncio.create_task(device.link.run())
        try:
            polls = server.connections, len(server.request_times)
            for _ in range(5):
                clock.advance(RENEW_S)
                renewed = await device.renew_lease()
                assert renewed is not None
                assert renewed.ok, renewed
                assert (venus.rs485_control, venus.force_mode) == (True, ForceMode.DISCHARGE)
                await asyncio.sleep(0.05)
            assert server.connections == polls[0]  # one connection throughout
            assert len(server.request_times) > polls[1] + 5 * 11  # the polls went on beside the renewals
            server.registers.app_sets_work_mode("AI")
            clock.advance(RENEW_S)
            assert await device.renew_lease() is None, "the renewal wrote Passive over the app's AI"
            await asyncio.sleep(0.5)  # polls after it
            assert not venus.rs485_control, "RS485 control taken again over the app's AI"
            assert venus.mode == "AI"
            assert battery.lease is None
            assert device.device_id is not None
            hold = device.holds.get(device.device_id)
            assert hold is not None
            assert hold.outside_mode == "AI"
            assert device.link.online
        finally:
            polling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await polling


async def test_on_auto_while_on_modbus_the_renewal_reads_the_mode_there_too(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    async with on_auto(make_sim, endpoint) as (sim, venus, server, battery):
        sim.outage(0, 1e6)  # the Local API is silent from the start: on Modbus at the first poll
        device, clock = await persons_discharge(battery, venus)
        assert battery.transport == "modbus"
        await renewal_gives_way_to_the_apps_ai(device, venus, server, clock)
        assert battery.modbus.lease is None
        assert battery.transport == "modbus"


async def test_on_auto_while_on_udp_the_renewal_reads_over_udp_and_never_switches(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    # The fallback's own read switches to Modbus once the Local API has been silent for long enough; the
    # link's poll may be doing that very switch at the same moment, so the renewal's look at the mode must
    # not (a second switch released the Passive the first had just carried over).
    async with on_auto(make_sim, endpoint) as (_, venus, _, battery):
        device, clock = await persons_passive(battery)
        assert battery.transport == "udp"
        assert venus.mode == "Passive"
        through_fallback: list[Collection[Method]] = []
        fallback_read = battery.read

        async def recording(methods: Collection[Method] = (), **options: Any) -> ReadReport:
            through_fallback.append(methods)
            return await fallback_read(methods, **options)

        battery.read = recording  # type: ignore[method-assign,assignment]
        await older_than_fresh(device)
        venus.mode = "AI"  # the Marstek app, after the last poll
        clock.advance(RENEW_S)
        assert await device.renew_lease() is None, "the renewal wrote Passive over the app's AI"
        assert through_fallback == [], "the renewal's read went through the fallback's switching read"
        assert battery.transport == "udp"
        assert device.link.snapshot.mode is Mode.AI


async def test_when_the_mode_cannot_be_read_in_time_the_renewal_goes_on_the_last_reading(
    make_sim: SimFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # The client waits 10 s for a reply (the battery's own stalls last up to 7 s); the renewal only until
    # its deadline.
    async with discharging(make_sim, timeout=10.0) as (venus, server, battery, device, clock):
        device.mode_read_s = 1.0
        await older_than_fresh(device)
        caplog.set_level("INFO")
        server.quirks.reply_delay = 2.5  # Modbus stalls (firmware 150 does at each cloud upload)
        clock.advance(RENEW_S)
        started = time.monotonic()
        renewal = asyncio.create_task(device.renew_lease())
        said = "the mode could not be read before renewing the Passive"
        try:
            await until(lambda: said in caplog.text or renewal.done(), 10)
        except AssertionError:
            raise AssertionError("the renewal neither gave up on reading the mode nor ended") from None
        gave_up_after = time.monotonic() - started
        server.quirks.reply_delay = 0.0  # the stall ends: the renewal's write is verified as usual
        outcome = await renewal
        assert said in caplog.text
        assert f"no answer from {battery.label} within 1.0 s" in caplog.text  # why
        assert gave_up_after < device.mode_read_s + 0.5  # not the client's 10 s
        assert outcome is not None
        assert outcome.ok, outcome
        assert (venus.rs485_control, venus.force_mode) == (True, ForceMode.DISCHARGE)
        assert battery.lease is not None
        assert device.device_id is not None
        hold = device.holds.get(device.device_id)
        assert hold is not None
        assert hold.passive_power == 800  # still the person's Passive
        assert device.holds.lease_due(device.device_id) is None  # renewed
        # The read given up on ended in the background; the next poll reads as usual.
        assert await device.link.poll_once()
        assert device.link.snapshot.mode is Mode.PASSIVE


async def test_the_renewal_reads_only_control_and_work_mode_and_only_when_the_last_reading_is_not_fresh(
    make_sim: SimFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with discharging(make_sim) as (venus, _, battery, device, clock):
        client = battery.modbus
        asked: list[str] = []
        read_plan = client._read_plan

        async def recording(plan: ReadPlan, **options: Collection[str]) -> Any:
            asked.extend(request.describe() for request in plan.requests)
            return await read_plan(plan, **options)

        polls: list[list[Method]] = []
        poll: Callable[..., Awaitable[ReadReport]] = battery.read

        async def polling(methods: Collection[Method] = (), **options: Any) -> ReadReport:
            polls.append(list(methods))
            return await poll(methods, **options)

        monkeypatch.setattr(client, "_read_plan", recording)
        monkeypatch.setattr(battery, "read", polling)
        readback = [request.describe() for request in control_plan(client.config.generation).requests]
        # A reading from just now: taken as it is, nothing read for it (only the write's own read-back).
        assert await device.link.poll_once()
        asked.clear()
        polls.clear()
        clock.advance(RENEW_S)
        renewed = await device.renew_lease()
        assert renewed is not None
        assert renewed.ok
        assert asked == readback
        # Older than `fresh_mode_s`: 42000 and 43000 alone, once, then the write; no poll.
        await older_than_fresh(device)
        asked.clear()
        clock.advance(RENEW_S)
        renewed = await device.renew_lease()
        assert renewed is not None
        assert renewed.ok
        assert asked == ["42000+1 [rs485_control]", "43000+1 [mode,work_mode]", *readback]
        assert polls == []
        assert (venus.rs485_control, venus.force_mode) == (True, ForceMode.DISCHARGE)
