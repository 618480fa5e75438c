"""The wallbox client against the simulator, over real TCP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from marstek_webasto_addon.devices.outcome import WriteStatus
from marstek_webasto_addon.devices.webasto.client import (
    WallboxConfig,
    WallboxError,
    WallboxUnavailable,
    WebastoClient,
)
from marstek_webasto_addon.devices.webasto.codec import decode
from marstek_webasto_addon.devices.webasto.link import WallboxLink, WallboxLinkSettings
from marstek_webasto_addon.devices.webasto.registers import RULES, Cadence, WallboxModel
from marstek_webasto_addon.devices.webasto.simulator import Car, WallboxQuirks
from marstek_webasto_addon.devices.webasto.simulator.model import ILLEGAL_VALUE, ModbusRefusal

from .webasto_fixtures import BoxFactory, client_for, make_box

__all__ = ["make_box"]
pytestmark = pytest.mark.timeout(60)
NEXT, UNITE = WallboxModel.NEXT, WallboxModel.UNITE


@pytest.mark.parametrize("model", list(WallboxModel))
async def test_every_data_point_is_decoded(model: WallboxModel, make_box: BoxFactory) -> None:
    sim, server = await make_box(model)
    sim.plug_in(Car(max_current=16))
    sim.setpoint = 10
    client = client_for(server, model)
    await client.connect()
    snapshot = await client.poll(include_slow=True)
    await client.close()
    checked = 0
    for register in RULES[model].registers:
        if not register.readable or register.cadence is Cadence.NEVER or register.key in ("date", "time"):
            continue
        expected = decode(register, sim.words(register))  # what the box holds, in the table's own terms
        if register.key in ("session_duration", "session_energy"):
            assert snapshot.values[register.key] == pytest.approx(expected, abs=2)
        else:
            assert snapshot.values[register.key] == expected, register.key
        checked += 1
    assert checked >= 20  # the loop really compared the map, not an empty set
    assert snapshot.problems == []
    assert snapshot.values["power"] == 3 * 230 * 10
    assert snapshot.values["current_l2"] == pytest.approx(10.0)
    if model is UNITE:
        assert snapshot.values["firmware"] == "v3.187.0-1.0.156.0"
        assert snapshot.values["charge_point_state"] == "charging"
        assert snapshot.values["energy_total"] == pytest.approx(sim.meter_wh / 1000, abs=0.1)
    else:
        assert snapshot.values["charge_point_state"] == "charging"
        assert snapshot.values["energy_total"] == pytest.approx(sim.meter_wh / 1000, abs=0.002)


@pytest.mark.parametrize("model", list(WallboxModel))
async def test_static_data_is_read_at_connect_not_every_poll(
    model: WallboxModel, make_box: BoxFactory
) -> None:
    sim, server = await make_box(model)
    client = client_for(server, model)
    static_address = RULES[model].by_key("evse_max_current").address
    await client.connect()
    for _ in range(3):
        await client.poll()
    assert sim.reads.get(static_address) == 1
    client.drop()
    for _ in range(100):  # the box accepts a new client once it has seen the old socket close
        if server.current is None:
            break
        await asyncio.sleep(0.01)
    await client.poll()  # reconnects
    assert sim.reads.get(static_address) == 2
    await client.close()


async def test_a_unite_configured_as_a_next_is_read_with_its_own_map_and_the_user_is_told(
    make_box: BoxFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sim, server = await make_box(UNITE)
    sim.plug_in(Car())
    client = client_for(server, NEXT)  # read with the NEXT's map, a UNITE gives the classic "all sensors 0"
    await client.connect()
    snapshot = await client.poll()
    await client.close()
    assert client.config.model is UNITE
    assert snapshot.values["power"] == pytest.approx(sim.power_w, abs=50)
    assert sim.power_w > 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(
        "configured as NEXT, but it answers like a UNITE" in w and "set its model to unite" in w
        for w in warnings
    )


@pytest.mark.parametrize("model", list(WallboxModel))
async def test_model_auto_tells_the_two_maps_apart(
    model: WallboxModel, make_box: BoxFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sim, server = await make_box(model)
    client = client_for(server, NEXT, detect=True)  # NEXT is only the first guess
    await client.connect()
    snapshot = await client.poll(include_slow=True)
    await client.close()
    assert client.config.model is model
    assert client.rules is RULES[model]
    assert snapshot.values["evse_max_current"] == sim.profile.evse_max_current  # read from the right map
    assert not [r for r in caplog.records if r.levelname == "WARNING"]  # asked for auto: news, not a warning


async def test_a_failing_group_reads_unknown_while_the_rest_updates(
    make_box: BoxFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sim, server = await make_box(NEXT)
    sim.plug_in(Car())
    sim.failing.add(1020)
    client = client_for(server, NEXT)
    snapshot = await client.poll()
    await client.close()
    assert snapshot.values["power"] is None
    assert snapshot.values["charge_point_state"] == "charging"
    assert snapshot.values["current_l1"] == pytest.approx(16.0)
    assert any("device failure" in p for p in snapshot.problems)
    assert "unknown until the next read" in caplog.text


async def test_old_unite_firmware_refusing_gap_reads_falls_back_to_contiguous_reads(
    make_box: BoxFactory,
) -> None:
    sim, server = await make_box(UNITE, gap_reads=False)
    sim.plug_in(Car())
    client = client_for(server, UNITE)
    await client.connect()
    snapshot = await client.poll(include_slow=True)
    second = await client.poll()
    await client.close()
    assert snapshot.values["power"] == sim.power_w
    assert all(
        v is not None for k, v in second.values.items() if k in ("power", "cable_state", "energy_total")
    )
    assert len(client.plan(Cadence.FAST)) > 4  # no longer one request per block


async def test_firmware_gates_registers_that_old_units_lack(make_box: BoxFactory) -> None:
    sim, server = await make_box(UNITE, firmware="v3.150.0-1.0.140.0")
    client = client_for(server, UNITE)
    await client.connect()
    keys = {r.key for req in client.plan(Cadence.SLOW).requests for r in req.registers}
    assert "user_id" not in keys  # 1516 needs 3.156; reading it can reset the socket
    assert "phase_switch" not in keys
    outcome = await client.set_phases(1)
    await client.close()
    assert outcome.status is WriteStatus.REJECTED
    assert "3.187" in outcome.detail
    assert 1516 not in sim.reads


@pytest.mark.parametrize("model", list(WallboxModel))
async def test_charging_current_is_validated_and_clamped(model: WallboxModel, make_box: BoxFactory) -> None:
    sim, server = await make_box(model, evse_max_current=16)
    sim.plug_in(Car(max_current=32))
    client = client_for(server, model, installation_max_current=13)
    await client.connect()
    await client.poll(include_slow=True)
    assert client.current_limits() == (6, 13)

    ok = await client.set_charging_current(10)
    assert ok.ok
    assert sim.setpoint == 10
    high = await client.set_charging_current(20)
    assert high.ok
    assert "clamped to 13 A" in high.clamped
    assert sim.setpoint == 13  # never above the installation limit
    for bad, reason in (
        (3, "below the box's minimum"),
        (-1, "not a charging current"),
        (100, "not a charging"),
        (float("nan"), "not a charging current"),
    ):
        outcome = await client.set_charging_current(bad)
        assert outcome.status is WriteStatus.REJECTED
        assert reason in outcome.detail
    assert sim.setpoint == 13  # rejected requests change nothing
    pause = await client.set_charging_current(0)
    assert pause.ok
    assert sim.setpoint == 0
    assert not sim.charging
    await client.close()


@pytest.mark.parametrize("model", list(WallboxModel))
async def test_the_installation_maximum_wins_over_the_box_minimum(
    model: WallboxModel, make_box: BoxFactory
) -> None:
    sim, server = await make_box(model, evse_max_current=16)
    sim.plug_in(Car(max_current=32))
    client = client_for(server, model, installation_max_current=5)  # a 5 A fuse, the box's minimum is 6 A
    await client.connect()
    await client.poll(include_slow=True)
    assert client.current_limits() == (6, 5)
    before = sim.setpoint
    for amps in (6, 16):
        outcome = await client.set_charging_current(amps)
        assert outcome.status is WriteStatus.REJECTED
        assert "below the box's minimum of 6 A" in outcome.detail
    failsafe = await client.set_failsafe(current=6)
    assert failsafe.status is WriteStatus.REJECTED
    assert sim.setpoint == before
    assert sim.failsafe_current == 6
    assert (await client.set_charging_current(0)).ok
    assert sim.setpoint == 0
    await client.close()


async def test_fail_safe_settings_that_break_the_promises_are_shown(make_box: BoxFactory) -> None:
    sim, server = await make_box(NEXT, evse_max_current=16)
    sim.failsafe_current, sim.failsafe_timeout = 16, 3600  # set in the box's own web page
    client = client_for(server, NEXT, installation_max_current=10)
    await client.connect()
    snapshot = await client.poll(include_slow=True)
    problems = " ".join(snapshot.problems)
    assert "fail-safe current of 16 A is above the maximum of 10 A" in problems
    assert "fail-safe timeout of 3600 s is longer than 600 s" in problems
    sim.failsafe_current, sim.failsafe_timeout = 10, 600
    snapshot = await client.poll(include_slow=True)
    assert not [p for p in snapshot.problems if "fail-safe" in p]
    await client.close()


@pytest.mark.parametrize("model", list(WallboxModel))
async def test_the_link_sets_right_fail_safe_settings_that_break_the_promises(
    model: WallboxModel, make_box: BoxFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sim, server = await make_box(model, evse_max_current=16)
    sim.failsafe_current, sim.failsafe_timeout = 16, 3600  # set in the box's own web page
    client = client_for(server, model, installation_max_current=10)
    link = WallboxLink("box", client, WallboxLinkSettings(keepalive=False))
    assert await link.poll_once()
    assert (sim.failsafe_current, sim.failsafe_timeout) == (10, 600)
    assert not [p for p in link.snapshot.problems if "fail-safe" in p]
    assert "fail-safe setting would break the add-on's limits: set to timeout 600 s" in caplog.text
    assert "fail-safe setting would break the add-on's limits: set to current 10 A" in caplog.text
    await client.close()


async def test_fail_safe_settings_within_the_limits_are_left_as_the_person_set_them(
    make_box: BoxFactory,
) -> None:
    sim, server = await make_box(UNITE, evse_max_current=16)
    sim.failsafe_current, sim.failsafe_timeout = 0, 600  # stop, after ten minutes
    client = client_for(server, UNITE, installation_max_current=16)
    link = WallboxLink("box", client, WallboxLinkSettings(keepalive=False, slow_every=1))
    for _ in range(3):
        assert await link.poll_once()
    assert (sim.failsafe_current, sim.failsafe_timeout) == (0, 600)
    assert not sim.writes.get(2000)
    assert not sim.writes.get(2002)
    await client.close()


async def test_a_fail_safe_current_above_a_fuse_below_the_boxs_minimum_becomes_stop(
    make_box: BoxFactory,
) -> None:
    sim, server = await make_box(NEXT, evse_max_current=16)
    sim.failsafe_current, sim.failsafe_timeout = 6, 20
    client = client_for(server, NEXT, installation_max_current=5)  # a 5 A fuse, the box's minimum is 6 A
    link = WallboxLink("box", client, WallboxLinkSettings(keepalive=False))
    assert await link.poll_once()
    assert (sim.failsafe_current, sim.failsafe_timeout) == (0, 20)
    await client.close()


async def test_a_box_that_refuses_the_fail_safe_correction_is_logged_once_and_shown(
    make_box: BoxFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim, server = await make_box(UNITE, evse_max_current=16)
    sim.failsafe_timeout = 3600
    apply = sim._apply

    def locked(key: str, value: int) -> None:  # a box whose fail-safe is set only on its web page
        if key.startswith("failsafe"):
            raise ModbusRefusal(ILLEGAL_VALUE)
        apply(key, value)

    monkeypatch.setattr(sim, "_apply", locked)
    client = client_for(server, UNITE)
    link = WallboxLink("box", client, WallboxLinkSettings(keepalive=False, slow_every=1))
    for _ in range(3):
        assert await link.poll_once()
    assert sim.failsafe_timeout == 3600
    assert caplog.text.count("could not correct the box's fail-safe setting (timeout 600 s)") == 1
    assert caplog.text.count("fail-safe timeout 600 s -> rejected") == 1  # the client's own line, once too
    assert "fail-safe timeout of 3600 s is longer than 600 s" in " ".join(link.snapshot.problems)
    await client.close()


async def test_a_box_that_refuses_the_fail_safe_current_still_gets_the_timeout(
    make_box: BoxFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim, server = await make_box(NEXT, evse_max_current=16)
    sim.failsafe_current, sim.failsafe_timeout = 16, 3600
    apply = sim._apply

    def locked(key: str, value: int) -> None:
        if key == "failsafe_current":
            raise ModbusRefusal(ILLEGAL_VALUE)
        apply(key, value)

    monkeypatch.setattr(sim, "_apply", locked)
    client = client_for(server, NEXT, installation_max_current=10)
    link = WallboxLink("box", client, WallboxLinkSettings(keepalive=False, slow_every=1))
    for _ in range(3):
        assert await link.poll_once()
    assert (sim.failsafe_current, sim.failsafe_timeout) == (16, 600)
    assert caplog.text.count("could not correct the box's fail-safe setting (current 10 A)") == 1
    assert "fail-safe current of 16 A is above the maximum of 10 A" in " ".join(link.snapshot.problems)
    await client.close()


async def test_failsafe_settings_are_validated_and_verified(make_box: BoxFactory) -> None:
    sim, server = await make_box(NEXT)
    client = client_for(server, NEXT)
    await client.connect()
    assert (await client.set_failsafe(current=8, timeout_s=30)).ok
    assert (sim.failsafe_current, sim.failsafe_timeout) == (8, 30)
    assert (await client.set_failsafe(current=0)).ok  # stop charging if the add-on dies
    assert (await client.set_failsafe(timeout_s=3)).status is WriteStatus.REJECTED
    assert (await client.set_failsafe(current=4)).status is WriteStatus.REJECTED
    assert sim.failsafe_timeout == 30
    await client.close()


async def test_unite_zero_without_vehicle_is_reported_not_applied(make_box: BoxFactory) -> None:
    _, server = await make_box(UNITE, quirks=WallboxQuirks(zero_reverts_without_vehicle=True))
    client = client_for(server, UNITE)
    await client.connect()
    outcome = await client.set_charging_current(0)
    await client.close()
    assert outcome.status is WriteStatus.NOT_APPLIED
    assert "reads back 6 A" in outcome.detail
    assert "no vehicle" in outcome.detail


async def test_next_sessions_start_and_stop_on_an_edge(make_box: BoxFactory) -> None:
    sim, server = await make_box(NEXT)
    sim.plug_in(Car())
    client = client_for(server, NEXT)
    await client.connect()
    assert (await client.stop_session()).ok
    assert not sim.session_active
    # 5006 is re-armed with 0 first, so a repeated command still acts (and the session stays stopped)
    assert (await client.stop_session()).ok
    assert (await client.start_session()).ok
    assert sim.session_active
    assert sim.charging
    unite_sim, unite_server = await make_box(UNITE)
    unite = client_for(unite_server, UNITE)
    rejected = await unite.start_session()
    assert rejected.status is WriteStatus.REJECTED
    await client.close()
    del unite_sim


async def test_next_stuck_in_error_after_a_pause_is_restarted(make_box: BoxFactory) -> None:
    sim, server = await make_box(NEXT, quirks=WallboxQuirks(stuck_after_pause=True))
    sim.plug_in(Car())
    client = client_for(server, NEXT)
    await client.connect()
    assert (await client.set_charging_current(0)).ok
    snapshot = await client.poll()
    assert snapshot.values["charge_point_state"] == "error"
    resumed = await client.set_charging_current(16)
    assert resumed.ok
    assert "session restarted" in resumed.detail
    assert sim.charging
    await client.close()


async def test_unite_phase_switch_rules(make_box: BoxFactory) -> None:
    sim, server = await make_box(UNITE)
    client = client_for(server, UNITE)
    await client.connect()
    await client.poll(include_slow=True)
    assert (await client.set_phases(1)).ok
    assert sim.phase_switch == 0
    assert (await client.set_phases(2)).status is WriteStatus.REJECTED
    client.drop()  # the 405 setting reverts on every disconnect...
    await asyncio.sleep(0.1)
    assert sim.phase_switch == 1
    await client.connect()  # ...so the client sends it again
    assert sim.phase_switch == 0
    await client.close()
    single_sim, single_server = await make_box(UNITE, phases_installed=1)
    single = client_for(single_server, UNITE)
    await single.connect()
    await single.poll(include_slow=True)
    outcome = await single.set_phases(3)
    await single.close()
    assert outcome.status is WriteStatus.REJECTED
    assert "single-phase" in outcome.detail
    del single_sim


async def test_a_second_client_is_refused(make_box: BoxFactory) -> None:
    sim, server = await make_box(NEXT)
    first = client_for(server, NEXT)
    await first.connect()
    second = client_for(server, NEXT)
    with pytest.raises(WallboxError, match="another Modbus client"):
        await second.connect()
    assert server.refused >= 1
    assert (await first.poll()).values["cable_state"] == "no_cable"  # the first one is unaffected
    await first.close()
    await second.close()
    del sim


async def test_refused_reconnects_are_retried_patiently(make_box: BoxFactory) -> None:
    sim, server = await make_box(NEXT, quirks=WallboxQuirks(refuse_reconnect_until_timeout=True))
    sim.failsafe_timeout = 1
    client = client_for(server, NEXT)
    link = WallboxLink(
        "box", client, WallboxLinkSettings(poll_interval=0.05, reconnect_min=0.1, keepalive=False)
    )
    assert await link.poll_once()
    client.drop()
    await asyncio.sleep(0.05)
    assert not await link.poll_once()
    assert "one Modbus client" in link.last_error or "another Modbus client" in link.last_error
    for _ in range(40):
        if await link.poll_once():
            break
        await asyncio.sleep(0.1)
    assert link.online
    assert server.refused >= 1
    await client.close()


async def test_keepalive_holds_the_set_current_and_silence_triggers_failsafe(make_box: BoxFactory) -> None:
    # The box checks the life bit every T/2; the simulator runs that check 20x faster here.
    sim, server = await make_box(NEXT, life_bit_period_scale=0.05)
    sim.plug_in(Car())
    sim.failsafe_current = 6
    client = client_for(server, NEXT)
    link = WallboxLink("box", client, WallboxLinkSettings(poll_interval=0.1, keepalive_interval=0.1))
    runner = asyncio.create_task(link.run())
    for _ in range(50):
        if link.online:
            break
        await asyncio.sleep(0.05)
    assert (await client.set_charging_current(14)).ok
    await asyncio.sleep(2.0)  # four fail-safe checks
    assert not sim.in_failsafe
    assert sim.effective_current == 14
    assert link.keepalives >= 10
    runner.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await runner
    await asyncio.sleep(1.5)  # the add-on is gone: the box falls back on its own
    assert sim.in_failsafe
    assert sim.effective_current == 6


async def test_keepalive_interval_follows_the_boxs_timeout(make_box: BoxFactory) -> None:
    sim, server = await make_box(UNITE)
    sim.failsafe_timeout = 0  # reads 0 on some units: treated as 20 s
    client = client_for(server, UNITE)
    await client.connect()
    await client.poll(include_slow=True)
    assert client.keepalive_interval == 5.0
    sim.failsafe_timeout = 8
    await client.poll(include_slow=True)
    assert client.keepalive_interval == 2.0
    await client.close()


async def test_unite_failsafe_drops_the_socket_and_the_link_recovers(make_box: BoxFactory) -> None:
    sim, server = await make_box(UNITE, life_bit_period_scale=0.02)
    sim.plug_in(Car())
    client = client_for(server, UNITE)
    link = WallboxLink(
        "box", client, WallboxLinkSettings(poll_interval=0.05, reconnect_min=0.05, keepalive=False)
    )
    assert await link.poll_once()
    assert (await client.set_charging_current(12)).ok
    writes_before = sim.writes[5004]
    for _ in range(60):
        await asyncio.sleep(0.05)
        if sim.failsafe_events:
            break
    assert sim.failsafe_events >= 1
    for _ in range(40):
        await link.poll_once()
        if link.online and client.connected:
            break
        await asyncio.sleep(0.05)
    assert client.connected
    assert sim.writes[5004] == writes_before + 1  # the set-point is sent again after the reconnect
    assert sim.setpoint == 12
    await client.close()


async def test_reconnect_after_the_simulator_restarts(make_box: BoxFactory) -> None:
    sim, server = await make_box(NEXT)
    port = server.port
    client = client_for(server, NEXT)
    link = WallboxLink(
        "box", client, WallboxLinkSettings(poll_interval=0.05, reconnect_min=0.05, keepalive=False)
    )
    assert await link.poll_once()
    assert (await client.set_charging_current(11)).ok
    await server.stop()
    for _ in range(3):
        await link.poll_once()
    assert not link.online
    sim.setpoint = 16  # a reboot forgets the set-point
    await make_box(NEXT, port=port, sim=sim)
    for _ in range(40):
        if await link.poll_once():
            break
        await asyncio.sleep(0.05)
    assert link.online
    assert sim.setpoint == 11
    await client.close()


async def test_other_unit_ids_get_no_answer(make_box: BoxFactory) -> None:
    sim, server = await make_box(NEXT)
    client = client_for(server, NEXT, unit_id=1, timeout=0.2)
    with pytest.raises(WallboxError, match="failed"):
        await client.connect()
    await client.close()
    del sim


async def test_nothing_listening_is_a_clear_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = WebastoClient(WallboxConfig("127.0.0.1", NEXT, port=port, timeout=0.2))
    with pytest.raises(WallboxUnavailable, match="one Modbus client at a time"):
        await client.connect()


@pytest.mark.parametrize(
    "reply",
    [
        b"\x00\x01\x00\x00\x00\x05\xff\x03\x02\x00",  # truncated frame
        b"HTTP/1.1 400 Bad Request\r\n\r\n",  # not Modbus at all
        b"\x00\x01\x00\x00\x00\x03\xff\x83\x02" * 50,
    ],  # a flood of exception frames
    ids=["truncated", "http", "flood"],
)
async def test_garbage_from_the_box_is_an_error_not_a_crash(reply: bytes) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(260):
                writer.write(reply)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = WebastoClient(WallboxConfig("127.0.0.1", NEXT, port=port, timeout=0.3))
    link = WallboxLink(
        "garbage", client, WallboxLinkSettings(poll_interval=0.01, reconnect_min=0.01, keepalive=False)
    )
    try:
        for _ in range(3):
            assert not await link.poll_once()
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
    assert link.last_error
    assert not link.online


async def test_a_wallbox_that_never_answers_is_one_warning_that_says_what_to_check(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as closed:  # a port nobody listens on: the connection is refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    client = WebastoClient(WallboxConfig("127.0.0.1", NEXT, port=port, timeout=0.3))
    link = WallboxLink("Carport", client, WallboxLinkSettings(offline_after=2, keepalive=False))
    for _ in range(5):
        await link.poll_once()
    ours = [
        r for r in caplog.records if r.name.startswith("marstek_webasto_addon")
    ]  # pymodbus: silenced by the CLI
    warnings = [r.getMessage() for r in ours if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "Carport: not reachable" in warnings[0]
    assert "HEMS mode" in warnings[0]  # what to check
    assert not link.online
