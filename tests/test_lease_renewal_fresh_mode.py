"""A person's Passive is renewed every 5 minutes, unless another mode was picked in the Marstek app since:
the renewal decides on the mode read just before it (when the last poll's reading is older than a few
seconds), so a mode picked less than one poll before the renewal is not overwritten by it. When that read
fails, the renewal goes on the last reading, as before.

A simulated battery on 127.0.0.1 over the Local API; the holds on a clock the test moves, the readings'
ages on real time (a few seconds are waited out where a reading must be older than `fresh_mode_s`)."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable
from dataclasses import replace
from typing import Any

import pytest

from marstek_webasto_addon.bridge.devices import BatteryDevice
from marstek_webasto_addon.bridge.holds import LEASE_S, RENEW_S, ManualHolds
from marstek_webasto_addon.devices.marstek.client import ReadReport
from marstek_webasto_addon.devices.marstek.datapoints import Method
from marstek_webasto_addon.devices.marstek.fallback import FallbackBattery
from marstek_webasto_addon.devices.marstek.firmware import Mode
from marstek_webasto_addon.devices.marstek.link import BatteryLink, LinkSettings
from marstek_webasto_addon.devices.marstek.transport import UdpEndpoint

from .conftest import SimFactory, client_for, until
from .test_manual_hold import ManualClock, held_device
from .test_venus_transport import fast

pytestmark = pytest.mark.timeout(60)


async def discharging(make_sim: SimFactory, endpoint: UdpEndpoint) -> tuple[Any, BatteryDevice, ManualClock]:
    """A person's Discharge now (Passive +2500 W for 240 min) given from Auto, and a poll that read it."""
    clock = ManualClock()
    sim, device = await held_device(make_sim, endpoint, clock)
    assert (await device.execute("discharge_now", "PRESS", "panel")).ok
    await device.link.poll_once()
    battery = sim.batteries[0]
    assert battery.mode == "Passive"
    assert device.link.snapshot.mode is not None
    assert device.link.snapshot.mode.value == "Passive"
    return sim, device, clock


async def older_than_fresh(device: BatteryDevice) -> None:
    """Real time past `fresh_mode_s`: the last poll's reading of the mode is no longer fresh enough."""
    await asyncio.sleep(device.fresh_mode_s + 0.3)


def held_for_the_apps(device: BatteryDevice, mode: str) -> None:
    """The person's Passive gave way: the battery is held for the app's mode, as when a poll sees it."""
    assert device.device_id is not None
    hold = device.holds.get(device.device_id)
    assert hold is not None
    assert hold.outside_mode == mode
    assert hold.passive_power is None
    assert f"put in {mode} outside the add-on" in hold.describe()


async def test_ai_picked_in_the_app_after_the_last_poll_is_not_overwritten_by_the_renewal(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    sim, device, clock = await discharging(make_sim, endpoint)
    battery = sim.batteries[0]
    written = len(battery.setmode_log)
    await older_than_fresh(device)
    battery.mode = "AI"  # the Marstek app, after the last poll; no poll before the renewal
    clock.advance(RENEW_S)
    assert await device.renew_lease() is None
    assert len(battery.setmode_log) == written, "the renewal wrote Passive over the app's AI"
    assert battery.mode == "AI"
    held_for_the_apps(device, "AI")
    # nothing is renewed later either
    clock.advance(RENEW_S)
    assert await device.renew_lease() is None
    assert len(battery.setmode_log) == written


async def test_when_the_mode_cannot_be_read_the_renewal_goes_on_the_last_reading(
    make_sim: SimFactory, endpoint: UdpEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    sim, device, clock = await discharging(make_sim, endpoint)
    battery = sim.batteries[0]
    written = len(battery.setmode_log)
    profile = battery.profile
    # The battery stops answering ES.GetMode (a struggling firmware); everything else still answers.
    battery.profile = replace(
        profile, methods=profile.methods - {Method.ES_MODE}, silent=profile.silent | {Method.ES_MODE}
    )
    await older_than_fresh(device)
    caplog.set_level("INFO")
    clock.advance(RENEW_S)
    renewal = asyncio.create_task(device.renew_lease())
    # It answers again once the renewal went out, so that the write can be verified as usual.
    await until(lambda: len(battery.setmode_log) > written or renewal.done(), 15)
    battery.profile = profile
    outcome = await renewal
    assert "the mode could not be read before renewing the Passive" in caplog.text
    assert outcome is not None
    assert outcome.ok, outcome
    assert len(battery.setmode_log) == written + 1
    assert battery.setmode_log[-1]["passive_cfg"] == {"power": 2500, "cd_time": LEASE_S}
    assert battery.mode == "Passive"
    assert device.device_id is not None
    hold = device.holds.get(device.device_id)
    assert hold is not None
    assert hold.passive_power == 2500  # still the person's Passive
    assert device.holds.lease_due(device.device_id) is None  # renewed


async def test_the_renewal_asks_only_for_the_mode_and_only_when_the_last_reading_is_not_fresh(
    make_sim: SimFactory, endpoint: UdpEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim, device, clock = await discharging(make_sim, endpoint)
    client = device.link.client
    asked: list[list[Method]] = []
    read = client.read

    async def recording(methods: Iterable[Method] = (), **options: Any) -> ReadReport:
        wanted = list(methods)
        asked.append(wanted)
        return await read(wanted, **options)

    monkeypatch.setattr(client, "read", recording)
    # A reading from just now: taken as it is, no request of its own.
    await device.link.poll_once()
    asked.clear()
    clock.advance(RENEW_S)
    renewed = await device.renew_lease()
    assert renewed is not None
    assert renewed.ok
    assert asked == []
    # Older than `fresh_mode_s`: ES.GetMode alone, once.
    await older_than_fresh(device)
    clock.advance(RENEW_S)
    renewed = await device.renew_lease()
    assert renewed is not None
    assert renewed.ok
    assert asked == [[Method.ES_MODE]]
    assert sim.batteries[0].mode == "Passive"


async def test_on_auto_while_on_udp_the_renewal_reads_over_udp_and_never_switches(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    # The fallback's own read switches to Modbus once the Local API has been silent for long enough; the
    # link's poll may be doing that very switch at the same moment, so the renewal's look at the mode must
    # not (a second switch released the Passive the first had just carried over).
    sim = await make_sim(1, socs=[55.0])
    venus = sim.batteries[0]
    battery = FallbackBattery(client_for(sim, endpoint), fast(await sim.serve_modbus()), silent_for=0.5)
    try:
        clock = ManualClock()
        link = BatteryLink("FaseA", battery, LinkSettings(poll_interval=2.0))
        assert await link.poll_once()
        device = BatteryDevice(
            link, {"passive_power": 800, "passive_duration": 240}, holds=ManualHolds({}, clock=clock)
        )
        assert (await device.execute("discharge_now", "PRESS", "panel")).ok
        assert await link.poll_once()
        assert (battery.transport, venus.mode) == ("udp", "Passive")
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
        held_for_the_apps(device, "AI")
    finally:
        await battery.close()


async def test_the_renewals_read_of_the_mode_leaves_the_polls_other_values_as_they_were(
    make_sim: SimFactory, endpoint: UdpEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ES.GetMode carries the battery's power and SOC too, but a poll takes those from ES.GetStatus, the
    # better source: the renewal's look at the mode must not put ES.GetMode's copies in their place.
    sim, device, clock = await discharging(make_sim, endpoint)
    battery = sim.batteries[0]
    polled = device.link.snapshot
    power, soc = polled.number("ac_power"), polled.number("soc")
    power_seen, soc_seen, mode_seen = polled.seen["ac_power"], polled.seen["soc"], polled.seen["mode"]
    assert power is not None
    assert soc is not None
    client = device.link.client
    reports: list[ReadReport] = []
    read = client.read

    async def recording(methods: Iterable[Method] = (), **options: Any) -> ReadReport:
        report = await read(methods, **options)
        reports.append(report)
        return report

    monkeypatch.setattr(client, "read", recording)
    await older_than_fresh(device)
    # From now on its answers report another power and SOC than the poll read (only ES.GetMode is asked
    # before the assertions); and AI is picked in the app.
    battery.quirks.rogue_values = {"ongrid_power": 1234, "bat_soc": 40}
    battery.mode = "AI"
    clock.advance(RENEW_S)
    assert await device.renew_lease() is None
    held_for_the_apps(device, "AI")
    assert len(reports) == 1
    answer = reports[0].results[Method.ES_MODE]
    assert (answer["ongrid_power"], answer["bat_soc"]) == (1234, 40), "ES.GetMode reported other values"
    snapshot = device.link.snapshot
    assert snapshot.mode is Mode.AI
    assert snapshot.seen["mode"] > mode_seen  # the mode, read again
    assert snapshot.number("ac_power") == power, "ES.GetMode's power replaced the poll's ES.GetStatus one"
    assert snapshot.number("soc") == soc, "ES.GetMode's SOC replaced the poll's ES.GetStatus one"
    assert (snapshot.seen["ac_power"], snapshot.seen["soc"]) == (power_seen, soc_seen)  # nor their ages
    # The next poll reads them from ES.GetStatus as before.
    await device.link.poll_once()
    assert device.link.snapshot.number("ac_power") == 1234
    assert device.link.snapshot.number("soc") == 40
