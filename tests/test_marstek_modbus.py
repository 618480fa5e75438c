"""The Venus over Modbus TCP against the simulator on 127.0.0.1: both generations' maps, the control
registers, and the quirks. The simulator's physics is frozen and stepped by hand: values compare exactly."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from marstek_webasto_addon.devices.marstek.firmware import Family, PowerLimits
from marstek_webasto_addon.devices.marstek.modbus.client import (
    ModbusLinkError,
    ModbusUnavailable,
    VenusModbusClient,
    VenusModbusConfig,
)
from marstek_webasto_addon.devices.marstek.modbus.registers import Generation, Rs485
from marstek_webasto_addon.devices.marstek.simulator import MarstekSimulator, ModbusQuirks, VenusModbusServer
from marstek_webasto_addon.devices.marstek.simulator.device import SimulatedBattery
from marstek_webasto_addon.devices.marstek.transport import UdpEndpoint
from marstek_webasto_addon.devices.outcome import WriteStatus

from .conftest import SimFactory, client_for, free_port

V12, V3, VENUS_A = "venus_e2_v156", "venus_e3_v150", "venus_a_v150"
Venus = tuple[MarstekSimulator, SimulatedBattery, VenusModbusServer]
VenusFactory = Callable[..., Awaitable[Venus]]


@pytest.fixture
def make_venus(make_sim: SimFactory) -> VenusFactory:
    async def factory(profile: str = V3, *, soc: float = 60.0, quirks: ModbusQuirks | None = None) -> Venus:
        sim = await make_sim(1, profile=profile, socs=[soc])
        sim.frozen = True  # stepped with advance(): readings compare with the physics exactly
        server = await sim.serve_modbus(quirks=quirks)
        return sim, sim.batteries[0], server

    return factory  # make_sim stops the simulators, and with them their Modbus servers


def modbus_client(server: VenusModbusServer, **config: Any) -> VenusModbusClient:
    config.setdefault("timeout", 1.0)
    config.setdefault("request_gap", 0.005)  # the real gaps are tested once, below
    return VenusModbusClient(VenusModbusConfig("127.0.0.1", server.generation, port=server.port, **config))


def passive(sim: MarstekSimulator, battery: SimulatedBattery, watts: int, seconds: float = 120) -> None:
    """Steer the physics the Local API way, so the registers show a battery at work."""
    battery.mode, battery.passive_power, battery.passive_until = "Passive", watts, 1e9
    sim.advance(seconds)


@pytest.mark.parametrize(("profile", "generation"), [(V12, Generation.V12), (V3, Generation.V3)])
@pytest.mark.parametrize("watts", [900, -1200])
async def test_values_match_the_physics_with_signs_and_scales(
    make_venus: VenusFactory, profile: str, generation: Generation, watts: int
) -> None:
    sim, battery, server = await make_venus(profile)
    passive(sim, battery, watts)
    p = battery.physics
    assert server.generation is generation
    async with modbus_client(server) as client:
        snap = await client.poll()
    v = snap.values
    assert snap.problems == []  # no request was refused: the plan reads defined addresses only
    assert snap.firmware.family is (Family.VENUS_E2 if generation is Generation.V12 else Family.VENUS_E3)
    assert v["firmware"] == battery.profile.ver
    assert v["ble_mac"] == battery.ble_mac
    assert v["soc"] == round(p.soc)
    assert v["ac_power"] == round(p.ac_power) == watts  # + = discharging
    assert v["battery_power"] == round(p.dc_power)  # + = discharging (the registers count charging +)
    assert v["offgrid_power"] == 0
    volts = 48.0 + 3.3 * p.soc / 100
    assert v["battery_voltage"] == pytest.approx(volts, abs=0.01)
    step = 0.01 if generation is Generation.V12 else 0.1
    assert v["battery_current"] == pytest.approx(-p.dc_power / volts, abs=step)  # + = charging
    assert v["rated_capacity"] == p.capacity_wh
    assert v["ac_input_energy"] == pytest.approx(p.ac_in_wh / 1000, abs=0.01)
    assert v["ac_output_energy"] == pytest.approx(p.ac_out_wh / 1000, abs=0.01)
    assert v["temperature"] == pytest.approx(p.temperature_c + 1, abs=0.6)  # the warmest cell
    assert v["wifi_rssi"] == battery.rssi
    assert v["remaining_energy"] == pytest.approx(round(p.soc) * p.capacity_wh / 100)  # derived as on UDP
    assert v["mode"] == "Auto"  # 43000 cannot tell Passive: the mode before it (self-consumption)
    if generation is Generation.V3:
        assert v["ip"] == battery.ip
        assert v["model"] == "VNSE3-0"


async def test_the_same_values_as_the_local_api(make_venus: VenusFactory, endpoint: UdpEndpoint) -> None:
    sim, battery, server = await make_venus(V3)
    passive(sim, battery, 700)
    udp = client_for(sim, endpoint)
    await udp.read()
    async with modbus_client(server) as client:
        over_modbus = (await client.poll()).values
    over_udp = udp.snapshot.values
    for key in ("soc", "ac_power", "battery_power", "rated_capacity", "firmware", "ble_mac", "ip"):
        assert over_modbus[key] == over_udp[key], key
    for key in ("ac_input_energy", "ac_output_energy", "remaining_energy"):
        assert over_modbus[key] == pytest.approx(over_udp[key], abs=0.01), key  # 0.01 kWh registers


async def test_take_control_force_charge_clamped_stop_and_release(make_venus: VenusFactory) -> None:
    sim, battery, server = await make_venus(V3)
    battery.mode = "Manual"
    battery.force_mode, battery.force_discharge_w = 2, 800  # left in RAM by another controller
    async with modbus_client(server) as client:
        taken = await client.take_control()
        assert taken.status is WriteStatus.APPLIED
        assert battery.rs485_control
        assert battery.force_mode == 0
        assert (await client.poll()).values["mode"] == "Passive"

        charge = await client.force_charge(3000)
        assert charge.status is WriteStatus.APPLIED
        assert "2500 W" in charge.clamped
        assert (battery.force_mode, battery.force_charge_w, battery.force_discharge_w) == (1, 2500, 0)
        sim.advance(60)
        snap = await client.poll()
        assert battery.physics.ac_power == -2500
        assert snap.values["ac_power"] == -2500
        assert snap.values["battery_power"] == -2500

        discharge = await client.force_discharge(1000)
        assert discharge.status is WriteStatus.APPLIED
        assert discharge.clamped == ""
        sim.advance(60)
        assert battery.physics.ac_power == 1000
        assert battery.force_charge_w == 0

        stopped = await client.stop()
        assert stopped.status is WriteStatus.APPLIED
        sim.advance(60)
        assert battery.physics.ac_power == 0
        assert battery.rs485_control

        released = await client.release()
        assert released.status is WriteStatus.APPLIED
        assert not battery.rs485_control
        assert battery.mode == "Manual"
        assert client.control.number("rs485_control") == Rs485.OFF
        assert (await client.poll()).values["mode"] == "Manual"


@pytest.mark.parametrize(
    ("profile", "device_max", "configured", "expected"),
    [
        (VENUS_A, None, None, 1500),  # the model's limit
        (V3, 600, None, 600),  # the battery's own 44003, which the firmware clamps to anyway
        (V12, None, 900, 900),  # a configured limit
    ],
)
async def test_force_discharge_is_clamped_to_the_lowest_limit(
    make_venus: VenusFactory, profile: str, device_max: int | None, configured: int | None, expected: int
) -> None:
    sim, battery, server = await make_venus(profile)
    if device_max is not None:
        battery.max_discharge_setting_w = device_max
    limits = None if configured is None else PowerLimits(configured, configured)
    async with modbus_client(server, limits=limits) as client:
        outcome = await client.force_discharge(2500)
        assert outcome.status is WriteStatus.APPLIED
        assert f"clamped to {expected} W" in outcome.clamped
        assert battery.force_discharge_w == expected
        sim.advance(30)
        assert battery.physics.ac_power == expected
        assert (await client.release()).ok


async def test_a_negative_power_is_rejected_before_anything_is_written(make_venus: VenusFactory) -> None:
    _, battery, server = await make_venus(V3)
    async with modbus_client(server) as client:
        before = client.requests
        outcome = await client.force_charge(-100)
        assert outcome.status is WriteStatus.REJECTED
        assert client.requests == before
    assert not battery.rs485_control


@pytest.mark.parametrize("profile", [V12, V3])
async def test_forced_modes_run_until_the_battery_limits_not_a_countdown(
    make_venus: VenusFactory, profile: str
) -> None:
    sim, battery, server = await make_venus(profile, soc=97.0)
    async with modbus_client(server) as client:
        assert (await client.force_charge(2000)).ok
        sim.advance(4 * 3600)  # hours later: still forced, charging has stopped at full
        assert battery.rs485_control
        assert battery.force_mode == 1
        assert battery.physics.soc > 99.9
        assert abs(battery.physics.ac_power) < 10

        battery.physics.soc = battery.physics.soc_floor + 1
        assert (await client.force_discharge(2000)).ok
        sim.advance(4 * 3600)
        assert battery.rs485_control
        assert battery.force_mode == 2
        assert battery.physics.soc == pytest.approx(battery.physics.soc_floor, abs=0.2)
        assert battery.physics.ac_power <= 0  # nothing more delivered at the floor
        assert (await client.release()).ok


async def test_the_v12_charge_cut_off_ends_a_forced_charge(make_venus: VenusFactory) -> None:
    sim, battery, server = await make_venus(V12, soc=78.0)
    battery.charge_cutoff_soc = 80.0  # 44000
    async with modbus_client(server) as client:
        assert (await client.force_charge(2500)).ok
        sim.advance(3600)
    assert battery.physics.soc == pytest.approx(80.0, abs=0.8)
    assert battery.physics.ac_power == 0


async def test_control_that_does_not_hold_is_reported_not_applied(make_venus: VenusFactory) -> None:
    sim, battery, server = await make_venus(V3, quirks=ModbusQuirks(lose_control=True))
    battery.mode = "Manual"  # nothing scheduled: idle, unless a forced mode took over
    async with modbus_client(server) as client:
        taken = await client.take_control()
        assert taken.status is WriteStatus.NOT_APPLIED
        assert "rs485_control reads 21947.0, not 21930" in taken.detail
        assert (await client.force_discharge(1000)).status is WriteStatus.NOT_APPLIED
        sim.advance(60)
    assert battery.physics.ac_power == 0  # acknowledged, yet the battery never followed


async def test_a_map_that_does_not_fit_is_noticed_not_guessed(make_venus: VenusFactory) -> None:
    """A v3 battery read with the v12 map: refused reads are problems, and no power is commanded."""
    _, battery, server = await make_venus(V3)
    client = VenusModbusClient(
        VenusModbusConfig("127.0.0.1", Generation.V12, port=server.port, timeout=1.0, request_gap=0.005)
    )
    async with client:
        assert any("illegal data address" in problem for problem in client.snapshot.problems)
        assert "firmware" not in client.snapshot.values
        outcome = await client.force_charge(500)
    assert outcome.status is WriteStatus.REJECTED
    assert "not identified" in outcome.detail
    assert not battery.rs485_control


async def test_one_client_at_a_time(make_venus: VenusFactory) -> None:
    _, _, server = await make_venus(V3)
    async with modbus_client(server) as first:
        second = modbus_client(server)
        with pytest.raises(ModbusUnavailable, match="one Modbus client at a time"):
            await second.connect()
        assert server.refused == 1
        assert not second.connected
        assert (await first.poll()).values["soc"] == 60  # the first is undisturbed
    async with modbus_client(server) as again:  # the slot is free once the first has closed
        assert again.connected


async def test_a_refused_connection_is_a_clear_error() -> None:
    client = VenusModbusClient(
        VenusModbusConfig("127.0.0.1", Generation.V3, port=free_port(socket.SOCK_STREAM), timeout=1.0)
    )
    with pytest.raises(ModbusUnavailable, match=r"cannot connect .* refused or no answer.*EMS firmware 144"):
        await client.connect()


async def test_a_device_refusing_every_connection_is_a_clear_error(make_venus: VenusFactory) -> None:
    _, _, server = await make_venus(V3, quirks=ModbusQuirks(refuse_connections=True))
    with pytest.raises(ModbusUnavailable, match="dropped the connection"):
        await modbus_client(server).connect()


async def test_a_reply_later_than_the_timeout_closes_the_connection(make_venus: VenusFactory) -> None:
    _, _, server = await make_venus(V3)
    async with modbus_client(server, timeout=0.3) as client:
        server.quirks.reply_delay = 0.6
        with pytest.raises(ModbusLinkError):
            await client.poll()
        assert not client.connected  # its late reply can never pass for a later request's
        server.quirks.reply_delay = 0.1  # slow, within the timeout
        assert (await client.poll()).values["soc"] == 60


async def test_v3_requests_are_at_least_150_ms_apart(make_venus: VenusFactory) -> None:
    _, _, server = await make_venus(V3)
    async with modbus_client(server, request_gap=None) as client:
        await client.read_control()
    gaps = server.gaps()
    assert len(gaps) >= 8
    assert min(gaps) >= 0.15
