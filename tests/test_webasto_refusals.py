"""The Webasto/Ampure Modbus client below the link: model detection, batched reads with one
register the box refuses, and what a reconnect reads and re-sends. Over real TCP on 127.0.0.1 against the
project's wallbox simulator; faults are injected into the simulated box, never into the client under test."""

from __future__ import annotations

import asyncio

import pytest

from marstek_webasto_addon.devices.webasto.client import WallboxError
from marstek_webasto_addon.devices.webasto.registers import RULES, WallboxModel
from marstek_webasto_addon.devices.webasto.simulator import Car, WallboxServer

from .test_wallbox_faults import record_writes
from .webasto_fixtures import BoxFactory, client_for, make_box

__all__ = ["make_box"]
pytestmark = pytest.mark.timeout(60)
NEXT, UNITE = WallboxModel.NEXT, WallboxModel.UNITE


async def until_free(server: WallboxServer) -> None:
    """The box accepts a new client once it has seen the old socket close."""
    for _ in range(200):
        if server.current is None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the simulated box still holds the old connection")


# --- model detection ----------------------------------------------------------------------------------


async def test_a_model_check_cut_off_at_the_first_connect_is_done_at_the_next(make_box: BoxFactory) -> None:
    """Model `auto` (the default): at the add-on's start another Modbus client (evcc, a phone app) still holds
    the UNITE, so the first connect is reset before the box could say which map it has. Once the other client
    is gone, the next connect must still ask: read with the NEXT's map, a UNITE gives "all sensors 0"."""
    sim, server = await make_box(UNITE)
    sim.plug_in(Car())
    other = client_for(server, UNITE)
    await other.connect()  # holds the box
    client = client_for(server, NEXT, detect=True)  # NEXT is only the first guess
    with pytest.raises(WallboxError):
        await client.connect()
    await other.close()
    await until_free(server)
    snapshot = await client.poll(include_slow=True)
    await client.close()
    assert client.config.model is UNITE
    assert snapshot.values["power"] == pytest.approx(sim.power_w, abs=50)
    assert snapshot.values["cable_state"] == "vehicle_locked"


# --- batched reads -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gap_reads", "refused", "lost_with_it"),
    [(True, 1007, "cable_state"), (False, 1002, "charge_point_state")],
    ids=["gap-reads", "contiguous"],
)
async def test_one_register_the_box_refuses_does_not_blank_its_whole_batch(
    gap_reads: bool, refused: int, lost_with_it: str, make_box: BoxFactory
) -> None:
    """A UNITE that refuses one register (its fault code 1006-1007 was uint16 before Vestel spec 1.3; its
    equipment state): only that register is unknown. The cable state, charge point state, power and meter
    read in the same request must still arrive, or the charge control never sees the car."""
    sim, server = await make_box(UNITE, gap_reads=gap_reads)
    sim.plug_in(Car())
    sim.failing.add(refused)
    client = client_for(server, UNITE)
    await client.connect()
    for _ in range(3):  # the first poll may learn; the ones after must still read everything else
        snapshot = await client.poll(include_slow=True)
        assert snapshot.values[lost_with_it] is not None, snapshot.problems
        assert snapshot.values["cable_state"] == "vehicle_locked"
        assert snapshot.values["charge_point_state"] == "charging"
        assert snapshot.values["power"] == pytest.approx(sim.power_w, abs=50)
        assert snapshot.values["energy_total"] is not None
    assert any("device failure" in p for p in snapshot.problems)
    reads_before = sim.reads.get(1000, 0)
    await client.poll()
    await client.close()
    assert sim.reads.get(1000, 0) == reads_before + 1  # learnt: not a failed batch and a re-read every poll


async def test_a_register_refused_as_absent_inside_a_gap_read_is_not_taken_for_gaps_refused(
    make_box: BoxFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A UNITE that reads across gaps but lacks one register (exception 2, as a box refusing gap reads
    answers too): the box was said to refuse gap reads, and read in more requests from then on."""
    sim, server = await make_box(UNITE, gap_reads=True)
    sim.plug_in(Car())
    sim.lacking.add(1010)  # current_l2: a run of one register between two gaps
    client = client_for(server, UNITE)
    await client.connect()
    for _ in range(3):
        snapshot = await client.poll(include_slow=True)
        assert snapshot.values["cable_state"] == "vehicle_locked"
    reads_before = sim.reads.get(1000, 0)
    await client.poll()
    await client.close()
    assert not any("refuses reads across gaps" in r.getMessage() for r in caplog.records)
    assert sim.reads.get(1000, 0) == reads_before + 1  # learnt: not a failed batch and its runs every poll


# --- reconnects ----------------------------------------------------------------------------------------


async def test_a_firmware_read_that_fails_at_a_reconnect_still_puts_the_unite_back_on_one_phase(
    make_box: BoxFactory,
) -> None:
    """405 reverts to three phases on every disconnect; the client switches back to one phase before it
    re-sends its one-phase current. If the firmware string (read once per connect) fails to read at that
    reconnect, the box is still the same 3.187 box: it must not be taken for one without phase switching,
    which would send 16 A meant for one phase (3.7 kW) to a box on three (11 kW)."""
    sim, server = await make_box(UNITE)
    sim.plug_in(Car())
    client = client_for(server, UNITE)
    await client.connect()
    await client.poll(include_slow=True)
    assert (await client.set_phases(1)).ok
    assert (await client.set_charging_current(16)).ok
    writes = record_writes(sim)
    sim.failing.add(RULES[UNITE].by_key("firmware").address)  # the firmware read answers "device failure"
    server.drop_client()  # a network blip; 405 reverts to three phases
    await until_free(server)
    await client.poll()  # reconnects
    await client.close()
    on_three = [v for k, v, phases in writes if k == "charging_current_setpoint" and v > 0 and phases == 3]
    assert not on_three, f"the one-phase current {on_three} A went out while the box was on 3 phases"
    assert sim.phases == 1 or sim.setpoint == 0


async def test_static_data_that_failed_to_read_at_connect_is_read_again(make_box: BoxFactory) -> None:
    """The firmware and the box's own maximum current are read once per connect. If those reads fail, they
    are read again at a later poll, not left unknown until the next reconnect (days): without them phase
    switching is refused ("needs firmware 3.187") and the UNITE's limit falls back to the cable's 32 A on a
    16 A box."""
    sim, server = await make_box(UNITE, evse_max_current=16)
    sim.plug_in(Car(max_current=32))
    failing = {RULES[UNITE].by_key(key).address for key in ("evse_max_current", "firmware")}
    sim.failing |= failing
    client = client_for(server, UNITE)
    await client.connect()
    sim.failing -= failing
    snapshot = await client.poll(include_slow=True)
    assert snapshot.values["evse_max_current"] == 16
    assert client.current_limits()[1] == 16
    outcome = await client.set_phases(1)
    await client.close()
    assert outcome.ok, outcome.detail
    assert sim.phase_switch == 0


# --- what reaches the log and the snapshot -----------------------------------------------------------


async def test_a_register_the_box_keeps_refusing_is_one_warning_not_one_per_poll(
    make_box: BoxFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A NEXT whose power register answers "device failure" at every poll (every 5 s): the snapshot's
    problems show it all along, the log says it once, not 17 000 times a day."""
    sim, server = await make_box(NEXT)
    sim.plug_in(Car())
    sim.failing.add(1020)
    client = client_for(server, NEXT)
    for _ in range(5):
        snapshot = await client.poll()
        assert any("device failure" in p for p in snapshot.problems)
    await client.close()
    ours = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("marstek_webasto_addon") and r.levelname == "WARNING"
    ]
    assert len([m for m in ours if "1020" in m]) == 1, ours


@pytest.mark.parametrize(
    ("model", "key", "raw"),
    [
        (NEXT, "session_start_time", 0xFFFF_FFFF),  # a glitch: "429496:72:95"
        (UNITE, "session_end_time", 256199),  # "25:61:99"
        (UNITE, "date", 261399),  # month 13: "2026-13-99"
    ],
)
async def test_a_time_or_date_that_is_no_time_is_unknown_and_said_so(
    model: WallboxModel, key: str, raw: int, make_box: BoxFactory
) -> None:
    """Times and dates have no numeric range to screen; an impossible one is shown as unknown with the
    reason among the problems, not published as "25:61:99"."""
    sim, server = await make_box(model)
    sim.plug_in(Car())
    sim.quirks.rogue_values[key] = raw
    client = client_for(server, model)
    snapshot = await client.poll(include_slow=True)
    await client.close()
    assert snapshot.values[key] is None
    assert any(key in p and str(raw) in p for p in snapshot.problems), snapshot.problems
    assert snapshot.values["session_duration"] is not None  # its neighbours are read as usual
