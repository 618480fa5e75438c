"""How the Webasto/Ampure client, its link and the charge-mode control behave when the wallbox misbehaves:
reconnects (what is sent again, and in which order), readings that fail or glitch, a refused life bit or phase
switch, fail-safe settings made on the box itself, and a full car. Over real TCP on 127.0.0.1 against the
project's wallbox simulator; faults are injected into the simulated box (a reply lost after the box applied a
write, a restart, a register flipping), never into the client under test."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from datetime import datetime

import pytest

from marstek_webasto_addon.addon import car_control
from marstek_webasto_addon.addon.car_control import CarControl
from marstek_webasto_addon.addon.inputs import GridInput
from marstek_webasto_addon.bridge.devices import WallboxDevice
from marstek_webasto_addon.devices.outcome import WriteStatus
from marstek_webasto_addon.devices.webasto.client import WebastoClient
from marstek_webasto_addon.devices.webasto.link import WallboxLink, WallboxLinkSettings
from marstek_webasto_addon.devices.webasto.registers import WallboxModel
from marstek_webasto_addon.devices.webasto.simulator import Car, WallboxServer, WallboxSim
from marstek_webasto_addon.devices.webasto.simulator.model import ILLEGAL_VALUE, ModbusRefusal

from .test_car_control import StepClock
from .webasto_fixtures import BoxFactory, client_for, make_box

__all__ = ["make_box"]
pytestmark = pytest.mark.timeout(60)
NEXT, UNITE = WallboxModel.NEXT, WallboxModel.UNITE
START = datetime(2026, 6, 3, 12, 0)
QUIET = WallboxLinkSettings(poll_interval=0.05, reconnect_min=0.05, keepalive=False)


def record_writes(sim: WallboxSim) -> list[tuple[str, int, int]]:
    """Every write the box applies: (register key, value, phases the box is on at that moment)."""
    log: list[tuple[str, int, int]] = []
    apply = sim._apply

    def recording(key: str, value: int) -> None:
        log.append((key, value, sim.phases))
        apply(key, value)

    sim._apply = recording  # type: ignore[method-assign]
    return log


def lose_reply_after(sim: WallboxSim, server: WallboxServer, lost_key: str, lost_value: int) -> None:
    """The box applies the write of `lost_value` to `lost_key`, then drops its socket before it answers."""
    apply = sim._apply

    def applying_then_dropping(key: str, value: int) -> None:
        apply(key, value)
        if (key, value) == (lost_key, lost_value):
            server.drop_client()

    sim._apply = applying_then_dropping  # type: ignore[method-assign]


async def until_free(server: WallboxServer) -> None:
    for _ in range(100):
        if server.current is None:
            return
        await asyncio.sleep(0.01)


async def written(control: CarControl) -> None:
    if control._writing is not None:
        await control._writing


# --- reconnect: what is sent again ----------------------------------------------------------------------


@pytest.mark.parametrize("model", list(WallboxModel))
async def test_a_pause_whose_reply_was_lost_is_not_undone_by_the_reconnect(
    model: WallboxModel, make_box: BoxFactory
) -> None:
    """A pause (0 A) the box applied but whose reply was lost stays in force after the reconnect: the client
    does not know what the box has, so it sends neither the earlier 16 A nor anything else."""
    sim, server = await make_box(model)
    sim.plug_in(Car())
    client = client_for(server, model)
    link = WallboxLink("box", client, QUIET)
    assert await link.poll_once()
    assert (await client.set_charging_current(16)).ok
    lose_reply_after(sim, server, "charging_current_setpoint", 0)
    outcome = await client.set_charging_current(0)
    assert sim.setpoint == 0  # the box did pause
    assert outcome.status is not WriteStatus.APPLIED  # the client cannot know
    await until_free(server)
    for _ in range(20):
        if await link.poll_once():
            break
        await asyncio.sleep(0.05)
    assert link.online
    try:
        assert sim.setpoint == 0, f"the reconnect re-sent {sim.setpoint} A over the person's pause"
    finally:
        await client.close()


async def test_a_reconnect_does_not_resend_a_current_the_charge_mode_no_longer_wants(
    make_box: BoxFactory,
) -> None:
    """`now` charges at 16 A; the box restarts and, while it is away, the person sets the charge mode to off.
    When the box is back, no charging current goes out: the reconnect sends what `off` wants (0), not the
    old mode's 16 A."""
    sim, server = await make_box(NEXT)
    port = server.port
    sim.plug_in(Car())
    client = client_for(server, NEXT)
    link = WallboxLink("Garage", client, QUIET)
    assert await link.poll_once()
    wallbox = WallboxDevice(link)
    control = CarControl(wallbox, GridInput("test"), [], {}, lambda: None, clock=StepClock())
    wallbox.charge = control
    assert control.set_mode("now") is None
    decision = control.step()
    assert decision is not None
    assert decision.current_a == 16
    await written(control)
    assert sim.setpoint == 16
    await server.stop()
    for _ in range(3):
        await link.poll_once()
    assert not link.online
    assert control.set_mode("off") is None
    assert control.step() is None  # nothing to steer while the box is away
    sim.setpoint = 6  # its fail-safe current after the restart
    writes = record_writes(sim)
    await make_box(NEXT, port=port, sim=sim)
    for _ in range(40):
        if await link.poll_once():
            break
        await asyncio.sleep(0.05)
    assert link.online
    try:
        charged = [v for k, v, _ in writes if k == "charging_current_setpoint" and v > 0]
        assert not charged, f"charge mode off, yet the reconnect wrote {charged} A"
    finally:
        await client.close()


async def test_a_unite_on_one_phase_gets_its_phase_back_before_its_one_phase_current(
    make_box: BoxFactory,
) -> None:
    """405 reverts to three phases on every disconnect. On the reconnect the client switches the box back to
    one phase before it sends the current meant for one phase (16 A on three would be 11 kW, not 3.7 kW)."""
    sim, server = await make_box(UNITE)
    sim.plug_in(Car())
    client = client_for(server, UNITE)
    link = WallboxLink("Carport", client, QUIET)
    assert await link.poll_once()
    assert (await client.set_phases(1)).ok
    assert (await client.set_charging_current(16)).ok
    assert sim.phases == 1
    writes = record_writes(sim)
    server.drop_client()  # a network blip; the box's 405 reverts to 3 phases
    await until_free(server)
    assert sim.phases == 3
    for _ in range(40):
        if await link.poll_once():
            break
        await asyncio.sleep(0.05)
    try:
        assert sim.phases == 1
        on_three = [
            v for k, v, phases in writes if k == "charging_current_setpoint" and v > 0 and phases == 3
        ]
        assert not on_three, f"the one-phase current {on_three} A went out while the box was on 3 phases"
    finally:
        await client.close()


async def test_a_unite_that_refuses_the_resent_phase_switch_still_reconnects(make_box: BoxFactory) -> None:
    """Known field problem (reference section 4): after a while the UNITE reports 404 = 0 (single phase) and
    refuses 405 = 1. A client that had switched to three phases asks for them again on the reconnect; the
    refusal is a problem shown and logged, the phase set-point is forgotten, and the box comes back online."""
    sim, server = await make_box(UNITE)
    sim.plug_in(Car())
    client = client_for(server, UNITE)
    link = WallboxLink("Carport", client, QUIET)
    assert await link.poll_once()
    assert (await client.set_phases(1)).ok
    assert (await client.set_phases(3)).ok
    sim.profile = replace(sim.profile, phases_installed=1)  # 404 flips to single phase
    server.drop_client()
    await until_free(server)
    for _ in range(10):
        if await link.poll_once():
            break
        await asyncio.sleep(0.05)
    try:
        assert link.online, f"the box answers, but the link stays down: {link.last_error}"
        assert client.phase_setpoint is None
        assert any("phase" in p for p in link.snapshot.problems), link.snapshot.problems
    finally:
        await client.close()


# --- readings that reach the charge control ------------------------------------------------------------


def controlled(link: WallboxLink, clock: StepClock, grid: GridInput | None = None) -> CarControl:
    wallbox = WallboxDevice(link)
    control = CarControl(wallbox, grid or GridInput("test"), [], {}, lambda: None, clock=clock)
    wallbox.charge = control
    return control


async def charging_now(server: WallboxServer) -> tuple[WebastoClient, WallboxLink, StepClock, CarControl]:
    """A NEXT with a car, its control in `now`: charging at 16 A, the set-point written."""
    client = client_for(server, NEXT)
    link = WallboxLink("Garage", client, QUIET)
    assert await link.poll_once()
    clock = StepClock()
    control = controlled(link, clock)
    assert control.set_mode("now") is None
    first = control.step()
    assert first is not None
    assert first.current_a == 16
    await written(control)
    return client, link, clock, control


async def test_one_modbus_exception_on_the_cable_state_does_not_stop_and_restart_the_charge(
    make_box: BoxFactory,
) -> None:
    """A read that the box answers with an exception makes the cable state unknown (None) for one poll. An
    unknown state is not "unplugged": the control holds its last decision, so one transient device error
    writes nothing (no stop and start of the contactor)."""
    sim, server = await make_box(NEXT)
    sim.plug_in(Car())
    client, link, clock, control = await charging_now(server)
    writes = record_writes(sim)
    sim.failing.add(1004)  # cable state: exception 4 on this one read
    assert await link.poll_once()
    clock.t += 5
    control.step()
    await written(control)
    sim.failing.clear()
    assert await link.poll_once()
    clock.t += 5
    control.step()
    await written(control)
    await client.close()
    currents = [v for k, v, _ in writes if k == "charging_current_setpoint"]
    assert currents == [], f"one failed read of the cable state wrote {currents}"


async def test_off_pauses_a_box_whose_cable_state_was_never_read(make_box: BoxFactory) -> None:
    """Other modes wait for the cable state to steer by; `off` wants 0 A whatever is plugged in, so a box
    whose cable state cannot be read is still paused."""
    sim, server = await make_box(NEXT)
    sim.plug_in(Car())
    sim.setpoint = 16
    sim.failing.add(1004)  # the cable state: refused from the start
    client = client_for(server, NEXT)
    link = WallboxLink("Garage", client, QUIET)
    assert await link.poll_once()
    assert link.snapshot.values.get("cable_state") is None
    control = controlled(link, StepClock())
    assert control.set_mode("now") is None
    assert control.step() is None  # nothing to steer by
    assert control.set_mode("off") is None
    control.step()
    await written(control)
    await client.close()
    assert sim.setpoint == 0


async def test_a_wallbox_power_beyond_what_the_box_can_draw_does_not_steer_min_pv(
    make_box: BoxFactory,
) -> None:
    """A 16 A box draws at most 3 x 253 V x 16 A = 12.1 kW: a reading of 40 kW is held back (the last good
    reading stays), so it does not count as PV surplus and min+pv stays at 6 A while the house imports."""
    sim, server = await make_box(NEXT, evse_max_current=16)
    sim.plug_in(Car())
    client = client_for(server, NEXT)
    link = WallboxLink("Garage", client, QUIET)
    assert await link.poll_once()
    assert (await client.set_charging_current(6)).ok
    assert await link.poll_once()  # the last good reading: the car takes 4.1 kW at 6 A
    sim.quirks.rogue_values["power"] = 40_000
    assert await link.poll_once()
    grid = GridInput("test")
    grid.set(300.0)  # importing 300 W while the car takes 4.1 kW: no surplus beyond the minimum
    control = controlled(link, StepClock(), grid)
    assert control.set_mode("min_pv") is None
    decision = control.step()
    await written(control)
    await client.close()
    assert decision is not None
    assert decision.current_a == 6, decision.reason
    assert link.snapshot.values["power"] != 40_000, "40 kW from a 16 A box reached the snapshot"


async def test_a_session_energy_that_jumps_is_held_back_and_does_not_end_the_plan(
    make_box: BoxFactory,
) -> None:
    """evcc #9787: a UNITE's session energy jumped to ~1930 kWh. A session energy that rises faster than the
    box can deliver (2 -> 600 kWh between two polls) is held back like an implausible reading: it reaches
    neither Home Assistant nor the plan, which still sees 18 of the 20 kWh wanted as needed."""
    sim, server = await make_box(UNITE)
    sim.plug_in(Car())
    sim.session_wh = 2_000.0
    client = client_for(server, UNITE)
    link = WallboxLink("Carport", client, QUIET)
    assert await link.poll_once()
    assert link.snapshot.values["session_energy"] == pytest.approx(2.0, abs=0.01)
    clock = StepClock()
    control = controlled(link, clock)
    assert control.set_mode("plan") is None
    control.observe_stay(clock.now())  # the car was there before the add-on: no meter reading at its plug-in
    sim.quirks.rogue_values["session_energy"] = 600_000  # Wh
    assert await link.poll_once()
    control.observe_stay(clock.now())
    glitch = link.snapshot.values["session_energy"]
    del sim.quirks.rogue_values["session_energy"]
    assert await link.poll_once()
    control.observe_stay(clock.now())
    session = control.session(clock.now())
    await client.close()
    assert session is not None
    assert session.energy_kwh == pytest.approx(18.0, abs=0.1), session
    assert glitch == pytest.approx(2.0, abs=0.01), f"a session energy jump to {glitch} kWh was published"


async def test_a_cable_with_a_lower_limit_lowers_the_decided_current_at_once(make_box: BoxFactory) -> None:
    """The NEXT's 1100 is the lowest of box, cable and car. A 13 A cable swapped in mid-session lowers the
    decided (and reported) current to 13 A at the next step: the pacing of current changes never holds a
    current above the maximum."""
    sim, server = await make_box(NEXT, evse_max_current=16, cable_max_current=32)
    sim.plug_in(Car(max_current=32))
    client, link, clock, control = await charging_now(server)
    sim.profile = replace(sim.profile, cable_max_current=13)
    assert await link.poll_once()
    assert client.current_limits() == (6, 13)
    clock.t += 5
    decision = control.step()
    await written(control)
    await client.close()
    assert decision is not None
    assert decision.current_a <= 13, decision.reason
    assert sim.setpoint <= 13


# --- keepalive and fail-safe ---------------------------------------------------------------------------


async def test_a_refused_life_bit_is_reported_once_and_shown_not_logged_every_few_seconds(
    make_box: BoxFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A box that refuses the life bit gets one warning (not one per keepalive), and the problem is shown
    among the snapshot's problems until the box takes the life bit again."""
    sim, server = await make_box(NEXT)
    apply = sim._apply

    def no_life_bit(key: str, value: int) -> None:
        if key == "life_bit":
            raise ModbusRefusal(ILLEGAL_VALUE)
        apply(key, value)

    sim._apply = no_life_bit  # type: ignore[method-assign]
    client = client_for(server, NEXT)
    link = WallboxLink("Garage", client, WallboxLinkSettings(poll_interval=0.05, keepalive_interval=0.05))
    runner = asyncio.create_task(link.run())
    await asyncio.sleep(1.0)
    runner.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await runner
    warnings = [r.getMessage() for r in caplog.records if "keepalive failed" in r.getMessage()]
    assert len(warnings) <= 1, f"{len(warnings)} warnings in one second"
    assert any("life" in p or "keepalive" in p for p in link.snapshot.problems), link.snapshot.problems
    sim._apply = apply  # type: ignore[method-assign]
    await until_free(server)
    runner = asyncio.create_task(link.run())
    await asyncio.sleep(0.5)
    runner.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await runner
    assert link.keepalives > 0
    assert not any("keepalive" in p for p in link.snapshot.problems), link.snapshot.problems


async def test_a_fail_safe_timeout_of_two_hours_is_set_right(make_box: BoxFactory) -> None:
    """2002 is a u16 of seconds: the box's web page can hold 7200 s. Such a timeout is a plausible reading,
    and the link sets it right (600 s at most), so the add-on's last current cannot outlive it by hours."""
    sim, server = await make_box(NEXT)
    sim.failsafe_timeout = 7200  # set on the box's own web page
    client = client_for(server, NEXT)
    link = WallboxLink("Garage", client, WallboxLinkSettings(keepalive=False, slow_every=1))
    for _ in range(3):
        assert await link.poll_once()
    await client.close()
    assert sim.failsafe_timeout <= 600, link.snapshot.problems


# --- chatter -------------------------------------------------------------------------------------------


async def test_a_full_car_on_a_unite_is_not_switched_on_and_off_every_step(make_box: BoxFactory) -> None:
    """OCPP 1.6: SuspendedEV = the box offers current, the car takes none; SuspendedEVSE = the box offers
    none (5004 = 0). The control pauses a full car (suspended_ev); the suspended_evse the box reports after
    that pause says nothing about the car, so the control remembers that the car stopped and writes no
    more set-points (no 0/16 A every step)."""
    sim, server = await make_box(UNITE)
    sim.plug_in(Car(energy_wanted_wh=0.0))  # full, or its own departure timer
    state_of = sim.value_of

    def ocpp(key: str) -> int | str:
        value = state_of(key)
        if key == "charge_point_state" and value == 4 and sim.setpoint == 0:
            return 3  # suspended_evse: the box offers nothing
        return value

    sim.value_of = ocpp  # type: ignore[method-assign]
    client = client_for(server, UNITE)
    link = WallboxLink("Carport", client, QUIET)
    assert await link.poll_once()
    assert link.snapshot.values["charge_point_state"] == "suspended_ev"
    clock = StepClock()
    control = controlled(link, clock)
    assert control.set_mode("now") is None
    writes = record_writes(sim)
    for _ in range(6):
        control.step()
        await written(control)
        assert await link.poll_once()
        clock.t += 5
    await client.close()
    currents = [v for k, v, _ in writes if k == "charging_current_setpoint"]
    assert len(currents) <= 1, f"30 s of a full car: set-points {currents}"


async def test_a_car_that_stopped_itself_is_offered_current_again_now_and_then(
    make_box: BoxFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A car on its own charge timer stops taking energy, and after the control's pause the UNITE reports
    suspended_evse: the car could never say it wants energy again. Every CAR_STOP_RETRY_S it is offered
    current once more; a car still full stops again at once (one offer, not a chatter)."""
    sim, server = await make_box(UNITE)
    sim.plug_in(Car(energy_wanted_wh=0.0))
    state_of = sim.value_of

    def ocpp(key: str) -> int | str:
        value = state_of(key)
        if key == "charge_point_state" and value == 4 and sim.setpoint == 0:
            return 3  # suspended_evse: the box offers nothing
        return value

    sim.value_of = ocpp  # type: ignore[method-assign]
    now = [1000.0]
    monkeypatch.setattr(car_control, "monotonic", lambda: now[0])
    client = client_for(server, UNITE)
    link = WallboxLink("Carport", client, QUIET)
    assert await link.poll_once()
    clock = StepClock()
    control = controlled(link, clock)
    assert control.set_mode("now") is None

    async def steps(count: int) -> None:
        for _ in range(count):
            control.step()
            await written(control)
            assert await link.poll_once()
            clock.t += 5
            now[0] += 5

    await steps(3)
    assert sim.setpoint == 0  # paused: the car stopped itself
    writes = record_writes(sim)
    now[0] += car_control.CAR_STOP_RETRY_S
    await steps(6)
    await client.close()
    currents = [v for k, v, _ in writes if k == "charging_current_setpoint"]
    assert currents[0] > 0, f"never offered again: {currents}"
    assert currents[-1] == 0, f"a car still full is paused again: {currents}"
    assert len(currents) <= 3, f"one offer, not a chatter: {currents}"


async def test_a_short_fail_safe_timeout_is_kept_from_the_first_seconds_on(make_box: BoxFactory) -> None:
    """With 2002 = 6 s the box checks the life bit every 3 s. The link writes the life bit right after it
    connects, and until it has read 2002 keeps it alive as for the shortest timeout, so the box never goes to
    fail-safe in the first seconds (the UNITE would also drop the socket)."""
    sim, server = await make_box(UNITE)
    sim.plug_in(Car())
    sim.failsafe_timeout = 6
    sim._next_life_check = sim.real_now() + sim.life_bit_period  # a box running with 6 s: checks every 3 s
    client = client_for(server, UNITE)
    link = WallboxLink("Carport", client, WallboxLinkSettings(poll_interval=0.5))
    runner = asyncio.create_task(link.run())
    await asyncio.sleep(7.0)
    runner.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await runner
    assert sim.failsafe_events == 0, f"fail-safe {sim.failsafe_events}x; {server.connections} connections"


# --- the installation's maximum ------------------------------------------------------------------------


async def test_a_fuse_below_the_boxs_minimum_keeps_every_mode_at_zero(make_box: BoxFactory) -> None:
    """A 5 A installation on a box whose minimum is 6 A: every mode writes nothing but 0, and the box's
    fail-safe current is set to 0 too (the box's minimum never overrides the fuse)."""
    sim, server = await make_box(NEXT)
    sim.plug_in(Car())
    client = client_for(server, NEXT, installation_max_current=5)
    link = WallboxLink("Garage", client, WallboxLinkSettings(keepalive=False))
    assert await link.poll_once()
    writes = record_writes(sim)
    clock = StepClock()
    control = controlled(link, clock)
    for mode in ("now", "min_pv", "plan"):
        assert control.set_mode(mode) is None
        control.step()
        await written(control)
        clock.t += 5
    await client.close()
    assert sim.failsafe_current == 0
    assert [v for k, v, _ in writes if k == "charging_current_setpoint"] == [0]
    assert sim.effective_current == 0
