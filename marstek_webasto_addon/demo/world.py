"""The demo's simulated home: three batteries (one per phase, as in the seed), a NEXT wallbox with a car
that comes home in the evening, a household with rooftop PV, and a P1 meter published to MQTT. The
batteries answer over the Local API (UDP), and with `modbus=True` each serves its Modbus map as well, on
127.0.0.1 at a port of its own (an RS485 gateway per battery, as `transport: modbus` or `auto` expects).

Everything runs on one simulated clock, faster than real time; the wallbox's load is part of what the meter
and the batteries' own CT see.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from datetime import datetime, time, timedelta
from typing import Any

import aiomqtt

from ..addon.quarter_history import QuarterHistory
from ..devices.marstek.simulator import MarstekSimulator, VenusModbusServer
from ..devices.marstek.simulator.physics import Household, SimClock
from ..devices.webasto.registers import WallboxModel
from ..devices.webasto.simulator.model import Car, WallboxProfile, WallboxSim
from ..devices.webasto.simulator.server import WallboxServer
from ..tasks import cancel_all

_LOG = logging.getLogger(__name__)

# The seed's three batteries, one per phase, with the charge levels its user saw on 2025-11-16.
DEMO_BATTERIES = (("FaseA", 100.0), ("FaseB", 22.0), ("FaseC", 97.0))
P1_TOPIC = "demo/p1/power"  # W, + = import, like a DSMR reader publishes it
PV_TOPIC = "demo/pv/power"  # W
CAR_ARRIVES, CAR_LEAVES = time(18, 0), time(7, 30)
MODBUS_HOST = "127.0.0.1"  # every battery's Modbus map here, each at a free port of its own
ADDON_BIND = "127.0.0.1"  # the add-on's `marstek_bind`: it binds the batteries' port there
METER_INTERVAL_S = 0.5  # real seconds between meter messages


class PortInUseError(OSError):
    """A battery port of the demo is held by someone else (another demo, `simulate marstek`, an add-on)."""


def check_udp_free(addresses: list[tuple[str, int]]) -> None:
    """Raise PortInUseError when one of these UDP addresses is taken.

    The simulated batteries and the add-on bind with SO_REUSEADDR, so a second demo on the same port would
    not fail: it would share the port and take the first one's traffic, and the first demo's batteries went
    offline. A bind without the option fails on an address another socket holds, with or without it.
    """
    for host, port in addresses:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((host, port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                raise PortInUseError(
                    f"UDP port {port} is in use on {host} (another demo, `simulate marstek` or `run`?):"
                    " choose another --sim-port"
                ) from None


class DemoWorld:
    def __init__(
        self,
        *,
        speed: float,
        start: datetime | None,
        sim_port: int,
        pv_kwp: float = 6.0,
        modbus: bool = False,
    ) -> None:
        self.marstek = MarstekSimulator.build(
            len(DEMO_BATTERIES),
            port=sim_port,
            speed=speed,
            socs=[soc for _, soc in DEMO_BATTERIES],
            household=Household(pv_kwp=pv_kwp),
            start=start,
        )
        self.sim_port = sim_port
        self.clock: SimClock = self.marstek.clock
        self.wallbox = WallboxSim(WallboxProfile.for_model(WallboxModel.NEXT), sim_now=self.clock.now)
        self.wallbox_server = WallboxServer(self.wallbox, clock=self.clock)
        self.wallbox_port = 0
        self.modbus = modbus
        self.modbus_servers: list[VenusModbusServer] = []
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def battery_addresses(self) -> list[tuple[str, int]]:
        return list(self.marstek.addresses)

    @property
    def modbus_addresses(self) -> list[tuple[str, int]]:
        """Each battery's Modbus TCP address (empty without `modbus`)."""
        return [(MODBUS_HOST, server.port) for server in self.modbus_servers]

    async def __aenter__(self) -> DemoWorld:
        check_udp_free([(ADDON_BIND, self.sim_port), *self.battery_addresses])
        await self.marstek.start()
        try:
            if self.modbus:
                for index in range(len(self.marstek.batteries)):  # stopped with the simulator
                    self.modbus_servers.append(await self.marstek.serve_modbus(index, host=MODBUS_HOST))
        except BaseException:
            await self.marstek.stop()
            raise
        self.wallbox_port = await self.wallbox_server.start()
        self._tasks.append(asyncio.create_task(self._household(), name="demo-household"))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_all(self._tasks)
        await self.wallbox_server.stop()
        await self.marstek.stop()

    def grid_power(self) -> float:
        return self.marstek.site.total_power()

    def pv_power(self) -> float:
        return sum(self.marstek.site.pv)

    def past_stays(self, days: int = 28) -> list[list[Any]]:
        """The car's stays as the add-on would have logged them (`car_control`'s log): home every evening at
        CAR_ARRIVES until CAR_LEAVES, 12 kWh. In `plan` mode the planner expects tonight's before it comes."""
        today = self.clock.now().replace(second=0, microsecond=0)
        stays = []
        for back in range(days, 0, -1):
            arrival = datetime.combine((today - timedelta(days=back)).date(), CAR_ARRIVES)
            departure = datetime.combine(arrival.date() + timedelta(days=1), CAR_LEAVES)
            if departure <= today:
                stays.append([arrival.isoformat(), departure.isoformat(), 12.0])
        return stays

    def past_weeks(self, days: int = 14) -> dict[str, Any]:
        """The planner's history of this home, as if the add-on had watched it for `days` days: its load and
        PV, the car's evenings left out (the learner takes the car out anyway). A demo should show the
        planner at work, not its first weeks of learning."""
        history = QuarterHistory()
        household = self.marstek.site.household
        now = self.clock.now()
        at = now.replace(second=0, microsecond=0) - timedelta(days=days)
        while at < now:
            at += timedelta(minutes=5)
            load, pv = sum(household.load_w(at)), sum(household.pv_w(at))
            history.observe(at, 300, {"house": load, "pv": pv, "wallbox": 0.0})
        return history.snapshot()

    async def _household(self) -> None:
        """The car comes and goes; its charging is a load on the phases it uses."""
        while True:
            now = self.clock.now().time()
            home = now >= CAR_ARRIVES or now < CAR_LEAVES
            if home and self.wallbox.car is None:
                self.wallbox.plug_in(Car(max_current=16, phases=1, energy_wanted_wh=12_000))
                _LOG.info("demo: the car is plugged in (12 kWh wanted, one phase)")
            elif not home and self.wallbox.car is not None:
                self.wallbox.unplug()
                _LOG.info("demo: the car left")
            power = self.wallbox.power_w
            phases = self.wallbox.phases
            share = power / 3
            self.marstek.site.extra = (power, 0.0, 0.0) if phases == 1 else (share, share, share)
            await asyncio.sleep(0.2)

    async def publish_meters(self, host: str, port: int) -> None:
        """The P1 meter and the PV inverter, as MQTT numbers (reconnecting like any sensor would)."""
        while True:
            try:
                async with aiomqtt.Client(host, port, identifier="demo-meters") as client:
                    while True:
                        await client.publish(P1_TOPIC, f"{self.grid_power():.0f}")
                        await client.publish(PV_TOPIC, f"{self.pv_power():.0f}")
                        await asyncio.sleep(METER_INTERVAL_S)
            except aiomqtt.MqttError as exc:
                _LOG.warning("demo meters: %s; retrying", exc)
                await asyncio.sleep(1.0)
