"""The Marstek client against the simulator, over real UDP on 127.0.0.x."""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from marstek_webasto_addon.devices.marstek.client import MarstekClient
from marstek_webasto_addon.devices.marstek.commands import AiMode, AutoMode, ManualSlot, PassiveMode, UpsMode
from marstek_webasto_addon.devices.marstek.datapoints import READ_METHODS, Method
from marstek_webasto_addon.devices.marstek.firmware import Mode
from marstek_webasto_addon.devices.marstek.protocol import MethodNotFound, RequestTimeout, UnsupportedMethod
from marstek_webasto_addon.devices.marstek.simulator import PROFILES, Quirks
from marstek_webasto_addon.devices.marstek.transport import MALFORMED_SENDERS_KEPT, UdpEndpoint
from marstek_webasto_addon.devices.outcome import WriteStatus

from .conftest import FAST, SimFactory, client_for, until

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("profile", sorted(PROFILES))
async def test_every_method_against_every_profile(
    profile: str, make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    sim = await make_sim(1, profile=profile, socs=[63.0])
    sim.frozen = True
    battery = sim.batteries[0]
    # Non-zero everything, so every scale and sign is really compared (not zero against zero).
    battery.physics.ac_in_wh, battery.physics.ac_out_wh, battery.physics.ac_power = (
        123_456.0,
        65_432.0,
        -1234.0,
    )
    if battery.profile.pv_channels:
        battery.physics.pv_w, battery.physics.pv_wh = [123.4, 200.0, 0.0, 50.0], 43_210.0
    client = client_for(sim, endpoint)
    report = await client.read(READ_METHODS)
    prof = PROFILES[profile]
    served = {m for m in READ_METHODS if m in prof.methods}
    assert set(report.results) == served
    not_served = set(READ_METHODS) - served
    assert set(report.errors) | set(report.skipped) == not_served
    for method in not_served:
        error = report.errors.get(method)
        if method in prof.silent or prof.unknown_method == "silent":
            assert isinstance(error, RequestTimeout)
        else:
            assert isinstance(error, MethodNotFound)
            assert client.is_unsupported(method)

    s = client.snapshot
    physics = battery.physics
    assert s.ble_mac == battery.ble_mac
    assert s.firmware.ver == prof.ver
    assert s.soc == pytest.approx(physics.soc, abs=1)
    assert s.mode is Mode.AUTO
    assert s.ac_power == pytest.approx(-1234, abs=0.5)  # charging: negative
    expected_battery_power = physics.ac_power - physics.pv_total  # + = discharging
    assert s.number("battery_power") == pytest.approx(expected_battery_power, abs=1.5)
    if Method.BAT_STATUS in served:
        assert s.number("temperature") == pytest.approx(physics.temperature_c, abs=0.2)
        assert s.number("remaining_energy") == pytest.approx(physics.remaining_wh, rel=0.05, abs=15)
        assert s.number("rated_capacity") == prof.capacity_wh
    if Method.ES_STATUS in served:
        # 0.1 kWh resolution on HMG-50 >= 154, Wh elsewhere
        assert s.number("ac_input_energy") == pytest.approx(123.456, abs=0.06)
        assert s.number("ac_output_energy") == pytest.approx(65.432, abs=0.06)
        if prof.pv_channels and not prof.es_pv_broken:
            assert s.number("pv_energy") == pytest.approx(43.21, abs=0.06)
    if prof.pv_channels:
        resolution = 0.06 if prof.pv1_scale == 10 else 0.5  # 0.1 W units on Venus A <= 148, W from 150
        assert s.number("pv1_power") == pytest.approx(123.4, abs=resolution)
        assert s.number("pv_power") == pytest.approx(373.4, abs=1)
    if Method.EM_STATUS in served:
        assert s.values["ct_connected"] is True
        assert s.number("meter_power") == pytest.approx(sim.site.total_power(), abs=2)
    assert report.problems == []


async def test_remaining_energy_on_v139_is_rescaled_from_the_wire(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    sim = await make_sim(1, profile="venus_e3_v139", socs=[86.0])
    client = client_for(sim, endpoint)
    await client.read([Method.GET_DEVICE, Method.BAT_STATUS])
    assert client.snapshot.number("remaining_energy") == pytest.approx(0.86 * 5120, abs=15)
    assert 15 < (client.snapshot.number("temperature") or 0) < 40


async def test_unsupported_methods_are_remembered_and_not_asked_again(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    sim = await make_sim(1, profile="venus_e2_v155")  # the seed's unit: silent Bat/Wifi/EM, -32601 for PV
    client = client_for(sim, endpoint)
    for _ in range(FAST.silences_before_unsupported):
        await client.read([Method.GET_DEVICE, Method.BAT_STATUS, Method.PV_STATUS, Method.ES_STATUS])
    assert client.is_unsupported(Method.BAT_STATUS)
    assert client.is_unsupported(Method.PV_STATUS)
    assert not client.is_unsupported(Method.ES_STATUS)
    before = sim.batteries[0].requests
    report = await client.read([Method.BAT_STATUS, Method.PV_STATUS, Method.ES_STATUS])
    assert sim.batteries[0].requests == before + 1  # only ES.GetStatus went on the wire
    assert set(report.skipped) == {Method.BAT_STATUS, Method.PV_STATUS}
    with pytest.raises(UnsupportedMethod):
        await client.call(Method.BAT_STATUS)


async def test_silence_of_an_offline_battery_does_not_mark_methods_unsupported(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    sim = await make_sim(1)
    client = client_for(sim, endpoint)
    await client.read([Method.GET_DEVICE])
    sim.outage(0, 10)
    for _ in range(3):
        report = await client.read([Method.BAT_STATUS])
        assert isinstance(report.errors[Method.BAT_STATUS], RequestTimeout)
    assert not client.is_unsupported(Method.BAT_STATUS)


async def test_passive_charge_is_verified_by_its_effect(make_sim: SimFactory, endpoint: UdpEndpoint) -> None:
    sim = await make_sim(1, socs=[40.0])
    client = client_for(sim, endpoint)
    await client.read([Method.GET_DEVICE])
    outcome = await client.set_mode(PassiveMode(power=-1500, duration_s=600))
    assert outcome.status is WriteStatus.APPLIED
    assert outcome.attempts == 1
    battery = sim.batteries[0]
    assert battery.mode == "Passive"
    assert battery.physics.ac_power == pytest.approx(-1500)
    back = await client.set_mode(AutoMode())
    assert back.ok
    assert battery.mode == "Auto"


async def test_setpoints_are_clamped_to_the_model_limits(make_sim: SimFactory, endpoint: UdpEndpoint) -> None:
    sim = await make_sim(1, profile="venus_a_v148", socs=[60.0])
    client = client_for(sim, endpoint)
    await client.read([Method.GET_DEVICE])
    outcome = await client.set_mode(PassiveMode(power=5000, duration_s=10**6))
    assert outcome.clamped
    assert "1500 W" in outcome.clamped
    sent = sim.batteries[0].setmode_log[-1]["passive_cfg"]
    assert sent == {"power": 1500, "cd_time": 900}  # never a countdown past 15 min


async def test_ignored_first_setmode_is_resent_until_applied(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    sim = await make_sim(1, socs=[60.0], quirks=Quirks(ignore_first_setmode=True))
    client = client_for(sim, endpoint)
    await client.read([Method.GET_DEVICE])
    outcome = await client.set_mode(PassiveMode(power=800, duration_s=300))
    assert outcome.status is WriteStatus.APPLIED
    assert outcome.attempts == 2
    assert sim.batteries[0].mode == "Passive"


async def test_battery_leaving_passive_by_itself_is_reported_not_applied(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    sim = await make_sim(1, socs=[60.0], quirks=Quirks(leave_passive_after_s=0.05))
    client = client_for(sim, endpoint)
    await client.read([Method.GET_DEVICE])
    outcome = await client.set_mode(PassiveMode(power=800, duration_s=300))
    assert outcome.status is WriteStatus.NOT_APPLIED
    assert "mode is Auto" in outcome.detail
    assert outcome.attempts == FAST.write_attempts


async def test_unsupported_mode_is_rejected(make_sim: SimFactory, endpoint: UdpEndpoint) -> None:
    sim = await make_sim(1, profile="venus_e3_v148")  # no UPS before 150
    client = client_for(sim, endpoint)
    await client.read([Method.GET_DEVICE])
    outcome = await client.set_mode(UpsMode())
    assert outcome.status is WriteStatus.REJECTED
    assert "set_result false" in outcome.detail


async def test_ai_mode(make_sim: SimFactory, endpoint: UdpEndpoint) -> None:
    sim = await make_sim(1)
    client = client_for(sim, endpoint)
    await client.read([Method.GET_DEVICE])
    assert (await client.set_mode(AiMode())).ok
    assert sim.batteries[0].mode == "AI"


async def test_ups_mode_on_v150(make_sim: SimFactory, endpoint: UdpEndpoint) -> None:
    sim = await make_sim(1)
    client = client_for(sim, endpoint)
    await client.read([Method.GET_DEVICE])
    assert (await client.set_mode(UpsMode())).ok
    assert sim.batteries[0].mode == "UPS"


async def test_write_to_a_silent_battery_is_not_applied(make_sim: SimFactory, endpoint: UdpEndpoint) -> None:
    sim = await make_sim(1)
    client = client_for(sim, endpoint)
    await client.read([Method.GET_DEVICE])
    sim.outage(0, 30)
    outcome = await client.set_mode(AutoMode())
    assert outcome.status is WriteStatus.NOT_APPLIED
    assert "no reply" in outcome.detail


async def test_system_setters(make_sim: SimFactory, endpoint: UdpEndpoint) -> None:
    sim = await make_sim(1)
    battery = sim.batteries[0]
    client = client_for(sim, endpoint)
    await client.read([Method.GET_DEVICE])
    assert (await client.set_dod(95)).ok  # clamped to 88
    assert battery.physics.dod == 88
    assert client.soc_floor == 12
    assert (await client.set_led(False)).ok
    assert battery.led_on is False
    assert (await client.set_ble_advertising(False)).ok
    assert battery.ble_advertising is False


async def test_setters_missing_on_older_firmware_are_rejected(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    sim = await make_sim(1, profile="venus_e2_v156")
    client = client_for(sim, endpoint)
    await client.read([Method.GET_DEVICE])
    outcome = await client.set_led(True)
    assert outcome.status is WriteStatus.REJECTED
    assert client.is_unsupported(Method.LED_CTRL)


async def test_manual_slot_write_all_and_clear(make_sim: SimFactory, endpoint: UdpEndpoint) -> None:
    sim = await make_sim(1, socs=[50.0])
    battery = sim.batteries[0]
    client = client_for(sim, endpoint)
    await client.read([Method.GET_DEVICE, Method.ES_MODE])
    one = await client.write_slot(ManualSlot(3, "01:00", "05:00", 0b0011111, -1200))
    assert one.ok
    assert battery.mode == "Manual"
    assert (battery.slots[3].start, battery.slots[3].end, battery.slots[3].power) == (60, 300, -1200)
    outcomes = await client.write_schedule([ManualSlot(0, "22:00", "06:00", 127, -800)])
    assert all(o.ok for o in outcomes)
    assert len(outcomes) == 10
    assert battery.slots[0].enabled
    assert battery.slots[0].power == -800
    assert not battery.slots[3].enabled  # write_schedule writes every slot
    assert client.schedule[0].power == -800
    await client.set_mode(AutoMode())
    await client.read([Method.ES_MODE])
    cleared = await client.clear_schedules()
    assert cleared.ok, cleared.detail
    assert not any(slot.enabled for slot in battery.slots)
    assert battery.mode == "Auto"  # restored
    assert all(not slot.enabled for slot in client.schedule.values())


async def test_clear_schedules_survives_acked_but_ignored_writes(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    sim = await make_sim(1, quirks=Quirks(ignore_first_setmode=True))
    battery = sim.batteries[0]
    for slot in battery.slots:
        slot.enabled, slot.weekdays, slot.end = True, 127, 1439
    client = client_for(sim, endpoint)
    await client.read([Method.GET_DEVICE])
    outcome = await client.clear_schedules(restore=False)
    assert outcome.ok
    assert not any(slot.enabled for slot in battery.slots)


async def test_lossy_wifi_is_handled_by_retries(make_sim: SimFactory, endpoint: UdpEndpoint) -> None:
    sim = await make_sim(1, quirks=Quirks(loss_percent=30, seed=7))
    client = client_for(sim, endpoint)
    answered = 0
    for _ in range(20):
        report = await client.read([Method.ES_STATUS])
        answered += Method.ES_STATUS in report.results
    # 3 attempts at 30 % loss: P(all lost) = 2.7 %
    assert answered >= 17
    assert sim.batteries[0].requests > 20


async def test_duplicate_replies_are_ignored(make_sim: SimFactory, endpoint: UdpEndpoint) -> None:
    sim = await make_sim(1, quirks=Quirks(duplicate_replies=True))
    client = client_for(sim, endpoint)
    await client.read([Method.GET_DEVICE])
    for _ in range(5):
        report = await client.read([Method.ES_MODE, Method.BAT_STATUS])
        assert set(report.results) == {Method.ES_MODE, Method.BAT_STATUS}
    await asyncio.sleep(0.05)
    assert endpoint.stats["late_or_duplicate"] == 11
    assert client.snapshot.mode is Mode.AUTO


async def test_spurious_parse_errors_are_retried(make_sim: SimFactory, endpoint: UdpEndpoint) -> None:
    sim = await make_sim(1, quirks=Quirks(spurious_parse_error_percent=40, seed=3))
    client = client_for(sim, endpoint)
    ok = 0
    for _ in range(15):
        ok += Method.ES_STATUS in (await client.read([Method.ES_STATUS])).results
    assert ok >= 12
    assert endpoint.stats["parse_errors"] > 0


async def test_device_that_replies_only_to_its_api_port(make_sim: SimFactory, udp_port: int) -> None:
    sim = await make_sim(1, quirks=Quirks(reply_to_port=udp_port))
    # bound to the API port, as the add-on does by default: works
    async with MarstekClient.connect(*sim.addresses[0], local_host="127.0.0.1", pacing=FAST) as client:
        assert client.endpoint.local_address[1] == udp_port
        assert (await client.read([Method.ES_MODE])).results
    # an ephemeral port never hears back: this is why the client binds the API port first
    ephemeral = await UdpEndpoint.open("127.0.0.1", 0)
    try:
        other = MarstekClient(*sim.addresses[0], endpoint=ephemeral, pacing=FAST)
        report = await other.read([Method.ES_MODE])
        assert isinstance(report.errors[Method.ES_MODE], RequestTimeout)
    finally:
        ephemeral.close()


async def test_busy_api_port_falls_back_to_an_ephemeral_port(udp_port: int) -> None:
    import socket

    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # no SO_REUSEADDR: holds the port
    blocker.bind(("127.0.0.1", udp_port))
    try:
        endpoint = await UdpEndpoint.open("127.0.0.1", udp_port)
        assert endpoint.local_address[1] not in (0, udp_port)
        assert "in use" in endpoint.bind_note
        endpoint.close()
    finally:
        blocker.close()


async def test_pacing_one_request_in_flight_and_a_minimum_gap(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    sim = await make_sim(1)
    host, port = sim.addresses[0]
    pacing = FAST.__class__(request_gap=0.05, timeout=0.5)
    client = MarstekClient(host, port, endpoint=endpoint, pacing=pacing)
    stamps: list[float] = []
    original = sim.batteries[0].handle

    def recording(data: bytes, sender: tuple[str, int], now_s: float) -> list[tuple[bytes, tuple[str, int]]]:
        stamps.append(time.monotonic())
        return original(data, sender, now_s)

    sim.batteries[0].handle = recording  # type: ignore[method-assign]
    await asyncio.gather(*(client.call(Method.ES_MODE) for _ in range(6)))
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert len(stamps) == 6
    assert min(gaps) >= 0.045


async def test_batteries_are_polled_concurrently_each_at_its_own_pace(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    sim = await make_sim(4)
    pacing = FAST.__class__(request_gap=0.05, timeout=0.5)
    clients = [client_for(sim, endpoint, i, pacing) for i in range(4)]
    arrivals: list[tuple[float, int]] = []

    def recorder(
        index: int, original: Callable[..., list[tuple[bytes, tuple[str, int]]]]
    ) -> Callable[..., Any]:
        def recording(
            data: bytes, sender: tuple[str, int], now_s: float
        ) -> list[tuple[bytes, tuple[str, int]]]:
            arrivals.append((time.monotonic(), index))
            return original(data, sender, now_s)

        return recording

    for index, battery in enumerate(sim.batteries):
        battery.handle = recorder(index, battery.handle)  # type: ignore[method-assign]
    reports = await asyncio.gather(
        *(c.read([Method.GET_DEVICE, Method.ES_STATUS, Method.ES_MODE]) for c in clients)
    )
    assert all(len(r.results) == 3 for r in reports)
    assert len({c.snapshot.ble_mac for c in clients}) == 4
    order = [index for _, index in sorted(arrivals)]
    # concurrent: every battery got its first request before any battery got its second
    assert set(order[:4]) == {0, 1, 2, 3}
    for index in range(4):
        mine = sorted(t for t, i in arrivals if i == index)
        assert min(b - a for a, b in itertools.pairwise(mine)) >= 0.045  # each at its own pace


async def test_ids_wrap_and_never_use_zero(endpoint: UdpEndpoint) -> None:
    endpoint._next_id = 65_534
    assert [endpoint.allocate_id() for _ in range(3)] == [65_535, 1, 2]


async def test_a_write_that_reaches_another_battery_is_not_repeated(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    sim = await make_sim(2)
    client = client_for(sim, endpoint, 0)
    await client.read([Method.GET_DEVICE])
    await sim.move(0, "127.0.0.21")
    await sim.move(1, "127.0.0.11")  # battery B now answers at A's address
    outcome = await client.set_mode(PassiveMode(-1000, 300))
    assert outcome.status is WriteStatus.REJECTED
    assert "another battery" in outcome.detail
    assert len(sim.batteries[1].setmode_log) == 1  # sent once, never again


async def test_silence_never_marks_mode_or_writes_unsupported(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    sim = await make_sim(1)
    client = client_for(sim, endpoint)
    await client.read([Method.GET_DEVICE])
    for _ in range(4):
        sim.outage(0, 30)
        await client.set_mode(AutoMode())
        await client.read([Method.ES_MODE])
        sim.outage(0, 0)
        await client.read([Method.ES_STATUS])
    assert not client.is_unsupported(Method.SET_MODE)
    assert not client.is_unsupported(Method.ES_MODE)
    assert (await client.set_mode(AutoMode())).ok


async def test_a_configured_limit_lowers_the_model_limit_but_never_raises_it(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    from marstek_webasto_addon.devices.marstek.firmware import PowerLimits

    sim = await make_sim(1, socs=[50.0])
    host, port = sim.addresses[0]
    raised = MarstekClient(host, port, endpoint=endpoint, pacing=FAST, limits=PowerLimits(5000, 800))
    await raised.set_mode(PassiveMode(4000, 60))
    assert sim.batteries[0].setmode_log[-1]["passive_cfg"]["power"] == 800
    await raised.set_mode(PassiveMode(-4000, 60))
    assert sim.batteries[0].setmode_log[-1]["passive_cfg"]["power"] == -2500  # the model's own limit


async def test_manual_slots_running_now_are_verified_by_power_others_only_accepted(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    from datetime import datetime, timedelta

    sim = await make_sim(1, socs=[50.0])
    client = client_for(sim, endpoint)
    await client.read([Method.GET_DEVICE])
    now = datetime.now()
    window = (now - timedelta(minutes=2)).strftime("%H:%M"), (now + timedelta(minutes=3)).strftime("%H:%M")
    if window[0] > window[1]:
        pytest.skip("the test window would wrap past midnight")
    sim.clock._start = now - timedelta(seconds=sim.clock.seconds())  # the battery's clock is ours
    running = await client.write_slot(ManualSlot(0, *window, 127, -900))
    assert running.status is WriteStatus.APPLIED
    assert "AC -900 W" in running.detail
    later = await client.write_slot(ManualSlot(1, "03:00", "03:01", 0, -900))  # no weekday: never runs
    assert later.status is WriteStatus.ACCEPTED
    zero = await client.write_slot(ManualSlot(2, "01:00", "02:00", 127, 0))
    assert zero.status is WriteStatus.REJECTED
    assert "needs a power" in zero.detail


async def test_writes_wait_until_the_battery_identified_itself(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    sim = await make_sim(1, profile="venus_a_v148", socs=[60.0])
    client = client_for(sim, endpoint)
    outcome = await client.set_mode(PassiveMode(2000, 60))  # no read before: the client identifies first
    assert outcome.ok
    assert sim.batteries[0].setmode_log[-1]["passive_cfg"]["power"] == 1500  # Venus A limit, not the default
    sim.outage(0, 30)
    blind = client_for(sim, endpoint)
    refused = await blind.set_mode(AutoMode())
    assert refused.status is WriteStatus.REJECTED
    assert "not identified" in refused.detail


async def test_a_battery_configured_by_host_name(make_sim: SimFactory, udp_port: int) -> None:
    from marstek_webasto_addon.devices.marstek.simulator import MarstekSimulator

    single = MarstekSimulator.build(1, port=udp_port)
    sim = MarstekSimulator(single.batteries, [("127.0.0.1", udp_port)], single.site, single.clock)
    await sim.start()
    endpoint = await UdpEndpoint.open("127.0.0.1", 0)
    try:
        client = MarstekClient("localhost", udp_port, endpoint=endpoint, pacing=FAST)
        report = await client.read([Method.GET_DEVICE, Method.ES_MODE])
        assert set(report.results) == {Method.GET_DEVICE, Method.ES_MODE}
        assert client.address == ("127.0.0.1", udp_port)
    finally:
        endpoint.close()
        await sim.stop()


async def test_closing_the_endpoint_is_an_error_not_a_cancellation(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    from marstek_webasto_addon.devices.marstek.protocol import MarstekError

    sim = await make_sim(1)
    sim.outage(0, 30)
    client = client_for(sim, endpoint)
    pending = asyncio.create_task(client.call(Method.ES_MODE))
    await asyncio.sleep(0.05)
    endpoint.close()
    with pytest.raises(MarstekError, match="closed"):
        await pending


async def test_a_cancellation_that_comes_with_the_reply_is_not_swallowed(endpoint: UdpEndpoint) -> None:
    # A poll loop cancelled (the add-on stopping) in the same turn of the event loop as a reply arrives
    # must still stop; asyncio.wait_for on Python 3.11 would hand back the reply and the loop poll on.
    import json

    address = ("127.0.0.31", 9)  # nobody listens there: the reply is fed to the endpoint as it arrives
    request_id = endpoint.allocate_id()
    task = asyncio.create_task(endpoint.request(address, request_id, "ES.GetMode", {"id": 0}, 5.0))
    await asyncio.sleep(0)  # sent, waiting for the reply
    reply = {"id": request_id, "src": "VenusE 3.0-02a1b2c3d4e5", "result": {"id": 0}}
    endpoint.datagram_received(json.dumps(reply).encode(), address)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_read_stops_at_its_deadline_and_lists_what_it_could_not_read(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    sim = await make_sim(1)
    client = client_for(sim, endpoint, 0, FAST.__class__(request_gap=0.1, timeout=0.5))
    await client.read([Method.GET_DEVICE])
    wanted = [Method.ES_MODE, Method.ES_STATUS, Method.BAT_STATUS, Method.EM_STATUS, Method.WIFI_STATUS]
    report = await client.read(wanted, deadline=time.monotonic() + 0.25)  # room for about two requests
    assert report.results
    assert report.unread
    assert [*report.results, *report.unread] == wanted  # in order: what it had no time for is owed
    assert not report.skipped
    assert not any(client.is_unsupported(m) for m in wanted)  # running out of time is not silence


async def test_a_reply_later_than_the_read_timeout_still_counts(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    # Replies take 0.2 s; a read attempt waits 0.12 s and is resent under the same id, so the reply to
    # the first copy completes the read rather than being thrown away as late.
    sim = await make_sim(1, latency=0.2)
    client = client_for(sim, endpoint, 0, FAST.__class__(request_gap=0.01, timeout=0.6, read_timeout=0.12))
    result = await client.call(Method.ES_MODE)
    assert result["mode"] == "Auto"
    assert 2 <= sim.batteries[0].requests <= FAST.attempts


async def test_every_reply_counts_as_an_answer_even_an_error(
    make_sim: SimFactory, endpoint: UdpEndpoint
) -> None:
    sim = await make_sim(1)  # v150: PV.GetStatus -> Method not found
    client = client_for(sim, endpoint)
    assert client.last_answer_at is None
    before = time.monotonic()
    with pytest.raises(MethodNotFound):
        await client.call(Method.PV_STATUS)
    assert client.last_answer_at is not None
    assert client.last_answer_at >= before


async def test_a_flood_of_malformed_datagrams_is_one_warning_a_minute(
    endpoint: UdpEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    # any host on the LAN can send to the API port: counted, not one log line each
    caplog.set_level(logging.WARNING, logger="marstek_webasto_addon.devices.marstek.transport")
    host, port = endpoint.local_address
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _ in range(200):
            sender.sendto(b"{not json", (host, port))
        await until(lambda: endpoint.stats["malformed"] == 200, 5)
    finally:
        sender.close()
    warnings = [r.getMessage() for r in caplog.records if "malformed datagram" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert endpoint.malformed_from[host][1]  # the reason is kept for the panel


def malformed_from(endpoint: UdpEndpoint, host: str) -> None:
    """A malformed datagram from `host` (spoofed: UDP's source address is whatever the sender writes)."""
    endpoint.datagram_received(b"{not json", (host, 30000))


def flood_hosts(count: int) -> list[str]:
    """`count` distinct senders in 127.0.1.1 .. 127.0.x.250."""
    return [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(count)]


async def test_senders_of_malformed_datagrams_beyond_the_cap_are_forgotten_and_warned_about_again(
    endpoint: UdpEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    # Spoofed senders must not grow the bookkeeping without end: beyond MALFORMED_SENDERS_KEPT they are
    # all forgotten, and a sender forgotten is warned about again within its minute.
    caplog.set_level(logging.WARNING, logger="marstek_webasto_addon.devices.marstek.transport")

    def warnings(host: str) -> int:
        return sum(f"malformed datagram from {host}:30000:" in r.getMessage() for r in caplog.records)

    first = "127.0.0.2"
    malformed_from(endpoint, first)
    malformed_from(endpoint, first)
    assert warnings(first) == 1  # one a minute
    flood = flood_hosts(MALFORMED_SENDERS_KEPT + 1)  # with the first: more senders than are kept
    for host in flood:
        malformed_from(endpoint, host)
        assert warnings(host) == 1
    assert len(endpoint.malformed_from) < MALFORMED_SENDERS_KEPT
    assert first not in endpoint.malformed_from
    malformed_from(endpoint, first)
    assert warnings(first) == 2  # forgotten: warned about again
    assert first in endpoint.malformed_from
    newest = flood[-1]
    malformed_from(endpoint, newest)
    assert warnings(newest) == 1  # still remembered: its minute holds
    assert endpoint.stats["malformed"] == 2 + len(flood) + 2


async def test_the_malformed_datagram_bookkeeping_never_holds_more_senders_than_the_cap(
    endpoint: UdpEndpoint,
) -> None:
    for host in flood_hosts(2 * MALFORMED_SENDERS_KEPT):
        malformed_from(endpoint, host)
        assert len(endpoint.malformed_from) <= MALFORMED_SENDERS_KEPT
