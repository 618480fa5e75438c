"""Runtime wiring in one place: options -> device links -> bridged devices -> MQTT."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from ..bridge.devices import (
    BatteryDevice,
    BridgedDevice,
    BridgeDevice,
    SiteDevice,
    SiteSources,
    WallboxDevice,
    slug,
)
from ..bridge.holds import DEFAULT_HOLD_S, RENEW_S, ManualHolds
from ..bridge.mqtt import BrokerSettings, MqttBridge
from ..bridge.optimiser_device import OptimiserDevice
from ..bridge.site_energy import BatterySource, CounterMeter, SiteEnergy
from ..bridge.topics import Topics
from ..devices.marstek.battery_client import BatteryClient
from ..devices.marstek.client import MarstekClient, Pacing
from ..devices.marstek.commands import ManualSlot
from ..devices.marstek.datapoints import Method
from ..devices.marstek.discovery import broadcast_addresses, expand_targets
from ..devices.marstek.fallback import FallbackBattery, silence_before_switch
from ..devices.marstek.link import BatteryLink, LinkSettings
from ..devices.marstek.modbus.battery import ModbusBattery
from ..devices.marstek.transport import UdpEndpoint
from ..devices.webasto.client import WallboxConfig, WebastoClient
from ..devices.webasto.link import WallboxLink, WallboxLinkSettings
from ..devices.webasto.registers import WallboxModel
from ..optimiser.car import CarSettings, ChargeMode, QuarterBudget, SurplusPriority
from ..optimiser.car_sessions import CarSession, SessionPlan
from ..optimiser.tariff import quarter_start as capacity_quarter
from ..tasks import cancel_all
from . import supervisor
from .car_control import CarControl
from .controller import EngineClock, OptimiserController, RealClock
from .ha_inputs import (
    EntityPowerInput,
    EntityPvForecast,
    HomeAssistantInputs,
    SeriesInput,
    WeatherPvForecast,
)
from .ha_series import DayAheadPrices, DetailedPvForecast, EnergyPvForecast
from .homeassistant import SUPERVISOR_WEBSOCKET_URL, HomeAssistantClient
from .inputs import BatteryMeterInput, GridInput, MqttGridInput, PvForecast
from .notices import NoticeBoard, Notifications
from .options import BatteryOptions, Options, WallboxOptions
from .state import StateStore, write_atomically

_LOG = logging.getLogger(__name__)


SITE_REFRESH_S = 2.0
NOTICE_CHECK_S = 10.0
# The energy meters' totals reach /data this often, in a small file of their own (cheap to write often);
# Home Assistant is shown only totals that did, so a crash never makes a meter fall.
ENERGY_SAVE_S = 10.0
ENERGY_FILE = "energy.json"
STATE_SAVE_S = 300.0  # the whole state reaches /data this often (and at every stop)
LEASE_CHECKS_PER_RENEWAL = 10  # how often, within one renewal period, the leases are looked at
READING_FRESH_S = 60.0  # an older meter or PV reading is not shown as the present
SHUTDOWN_BUDGET_S = 20.0  # a stop's waits for the batteries' Auto; under S6_SERVICES_GRACETIME (Dockerfile)


def _fresh(source: GridInput) -> float | None:
    reading = source.current()
    age = reading.age()
    return reading.value if age is not None and age <= READING_FRESH_S else None


_SLOT = TypeAdapter(ManualSlot)


def restore_schedule(saved: object, name: str) -> dict[int, ManualSlot]:
    """The manual slots written before a restart; a damaged entry is dropped with a warning, not fatal."""
    if not isinstance(saved, dict):
        return {}
    slots: dict[int, ManualSlot] = {}
    for index, fields in saved.items():
        try:
            slot = _SLOT.validate_python(fields)
        except ValidationError as exc:
            _LOG.warning("%s: forgetting stored manual slot %s (%s)", name, index, exc.errors()[0]["msg"])
            continue
        slots[slot.slot] = slot
    return slots


def _battery_key(options: BatteryOptions) -> str:
    return f"battery:{options.name}@{options.host}:{options.port}"


def _energy_counted(section: dict[str, Any]) -> float:
    """All the energy a stored energy section has counted (kWh), to tell the later of two copies."""
    totals = section.get("totals")
    if not isinstance(totals, dict):
        return 0.0
    numbers = [v for v in totals.values() if isinstance(v, int | float) and not isinstance(v, bool)]
    return sum(v for v in numbers if math.isfinite(v))


def _udp_of(client: BatteryClient) -> MarstekClient | None:
    """The battery's Local API client, whose address the add-on learns as the battery moves."""
    if isinstance(client, FallbackBattery):
        return client.udp
    return client if isinstance(client, MarstekClient) else None


def _wallbox_key(options: WallboxOptions) -> str:
    return f"wallbox:{options.name}@{options.host}:{options.port}/{options.unit_id}"


class Runtime:
    """`async with Runtime(...) as runtime: await runtime.run()`."""

    def __init__(
        self,
        options: Options,
        state: StateStore,
        broker: BrokerSettings,
        *,
        ha_url: str | None = None,
        ha_token: str | None = None,
        clock: EngineClock | None = None,
        keep_unconfigured: bool = False,
    ) -> None:
        self.options = options
        self.keep_unconfigured = keep_unconfigured  # device entries were left out: keep their entities
        # Outside the add-on, MWA_HA_URL / MWA_HA_TOKEN (a long-lived token) reach Home Assistant directly.
        self.ha_url = ha_url or os.environ.get("MWA_HA_URL") or SUPERVISOR_WEBSOCKET_URL
        self.ha_token = ha_token or os.environ.get("MWA_HA_TOKEN") or None
        self.ha_inputs: HomeAssistantInputs | None = None
        self.clock = clock  # the optimiser's time; None: real time
        self.grid: GridInput | None = None
        self.pv_power: GridInput | None = None
        self.listeners: list[Callable[[BridgedDevice], None]] = []  # the panel, besides MQTT
        self.state = state
        self._save_problem = ""  # the last save failed (a full disk): shown until one succeeds
        self._energy_problem = ""  # the same for the energy meters' own file
        self._energy_written = ""  # what the energy file holds, so an unchanged section is not written again
        self.broker = broker
        self.endpoints: dict[int, UdpEndpoint] = {}
        self.battery_links: list[BatteryLink] = []
        self.wallbox_links: list[WallboxLink] = []
        self.batteries: list[BatteryDevice] = []
        self.wallboxes: list[WallboxDevice] = []
        self.car_controls: list[CarControl] = []
        self._planned_control: CarControl | None = None  # the wallbox whose car the planner plans
        self.site: SiteDevice | None = None
        self.bridge_device = BridgeDevice()
        self.mqtt: MqttBridge | None = None
        self.optimiser: OptimiserController | None = None
        self.optimiser_device: OptimiserDevice | None = None
        self._device_of: dict[int, BridgedDevice] = {}
        self.notice_board = NoticeBoard()
        self.notifications: Notifications | None = None
        self.holds = ManualHolds(
            state.section("holds"), self._save, clock=clock, default_hold_s=self._default_hold_s
        )

    def _default_hold_s(self) -> float:
        optimiser = self.optimiser
        return optimiser.settings.manual_hold * 60 if optimiser is not None else DEFAULT_HOLD_S

    @property
    def devices(self) -> list[BridgedDevice]:
        extra: list[BridgedDevice] = [d for d in (self.site, self.optimiser_device) if d is not None]
        return [self.bridge_device, *extra, *self.batteries, *self.wallboxes]

    async def __aenter__(self) -> Runtime:
        options = self.options
        identities = self.state.section("identities")
        settings = self.state.section("settings")
        timing = options.timing
        pacing = Pacing(
            request_gap=timing.request_gap,
            write_gap=timing.write_gap,
            timeout=timing.timeout,
            backoff=(timing.timeout / 2, timing.timeout),  # the reference's 1.5 s / 3 s at the default 3 s
            verify_delay=timing.verify_delay,
        )
        targets = (
            expand_targets(options.rediscovery_targets, 0)
            if options.rediscovery_targets
            else [(address, 0) for address in broadcast_addresses()]
        )
        link_settings = LinkSettings(
            poll_interval=options.battery_poll_interval,
            offline_after=options.offline_after,
            rediscovery_targets=tuple(targets),
        )
        meter_battery = self._meter_battery()
        for item in options.batteries:
            key = _battery_key(item)
            client = await self._battery_client(item, pacing, link_settings, identities.get(key))
            client.schedule = restore_schedule(self.state.section("schedules").get(key), item.name)
            own = link_settings
            if item is meter_battery:  # its CT is the optimiser's meter: read it on every poll
                own = replace(link_settings, extra_fast=(Method.EM_STATUS,))
            link = BatteryLink(item.name, client, own, self._battery_updated)
            device = BatteryDevice(link, settings.setdefault(key, {}), self._save, self.holds)
            self.battery_links.append(link)
            self.batteries.append(device)
            self._device_of[id(link)] = device
        wallbox_settings = WallboxLinkSettings(
            poll_interval=options.wallbox_poll_interval, offline_after=options.offline_after
        )
        # a UNITE is known by its serial number: only the others share an identity by host and unit id
        shared = Counter((slug(b.host), b.unit_id) for b in options.wallboxes if b.model != "unite")
        for box in options.wallboxes:
            config = WallboxConfig(
                box.host,
                WallboxModel.NEXT if box.model == "auto" else WallboxModel(box.model),
                port=box.port,
                unit_id=box.unit_id,
                installation_max_current=box.max_current,
                detect=box.model == "auto",
            )
            wallbox_link = WallboxLink(
                box.name, WebastoClient(config), wallbox_settings, self._wallbox_updated
            )
            wallbox = WallboxDevice(
                wallbox_link,
                known_serial=identities.get(_wallbox_key(box)),
                by_port=box.model != "unite" and shared[(slug(box.host), box.unit_id)] > 1,
            )
            self.wallbox_links.append(wallbox_link)
            self.wallboxes.append(wallbox)
            self._device_of[id(wallbox_link)] = wallbox
        grid = self.grid = self._grid_input(meter_battery)
        pv_power = self.pv_power = self._pv_power_input()
        self.site = SiteDevice(
            SiteSources(
                self.batteries,
                self.wallboxes,
                grid=lambda: _fresh(grid),
                pv=lambda: _fresh(pv_power) if pv_power is not None else None,
                pv_measured=pv_power is not None,
                energy=self._site_energy(grid, meter_battery),
            )
        )
        pv = self._pv_forecast()
        prices = self.options.prices
        day_ahead = DayAheadPrices(prices.entity_id, prices.formula()) if prices.type == "entity" else None
        if self.batteries:
            self.optimiser = OptimiserController(
                options,
                self.batteries,
                grid,
                pv,
                self.state.section("optimiser"),
                self._save,
                on_change=self._optimiser_changed,
                on_outcome=self._notify,
                clock=self.clock,
                site=self.site.values,
                pv_measured=pv_power is not None,
                day_ahead=day_ahead,
                car_sessions=self._car_sessions,
                car_planned=lambda: any(c.mode == ChargeMode.PLAN.value for c in self.car_controls),
            )
            self.optimiser_device = OptimiserDevice(self.optimiser)
            if isinstance(pv, WeatherPvForecast):
                controller = self.optimiser
                pv.per_sunny_hour_wh = lambda: controller.settings.pv_per_sunny_hour
        powers = [i for i in (grid, pv_power) if isinstance(i, EntityPowerInput)]
        forecast = pv if self.optimiser and isinstance(pv, EntityPvForecast | WeatherPvForecast) else None
        series: list[SeriesInput] = []
        if self.optimiser is not None:
            series += [day_ahead] if day_ahead is not None else []
            series += [pv] if isinstance(pv, DetailedPvForecast) else []
        if powers or forecast is not None or series:
            self.ha_inputs = HomeAssistantInputs(
                powers, forecast, url=self.ha_url, token=self.ha_token, series=series
            )
        self.mqtt = MqttBridge(
            self.broker,
            Topics(options.base_topic, options.discovery_prefix),
            self.devices,
            refresh_interval=options.state_refresh_interval,
            keep_unconfigured=self.keep_unconfigured,
        )
        for wallbox in self.wallboxes:
            control = CarControl(
                wallbox,
                grid,
                self.batteries,
                self.state.section("charge_modes"),
                self._save,
                settings=self._car_settings,
                budget=self._quarter_budget,
                clock=self.clock or RealClock(),
                on_change=functools.partial(self._notify, wallbox),
            )
            control.planned = functools.partial(self._planned_car, control)
            wallbox.charge = control
            self.car_controls.append(control)
        if isinstance(grid, MqttGridInput):
            self.mqtt.add_listener(options.grid_source.topic, grid.on_payload)
        if isinstance(pv_power, MqttGridInput):
            self.mqtt.add_listener(options.pv_power.topic, pv_power.on_payload)
        return self

    def _car_sessions(self) -> tuple[CarSession, ...]:
        """The car the planner plans: the first wallbox in `plan` mode with a car that wants energy (the
        planner models one car; another wallbox in `plan` mode charges as `now` meanwhile), else the first
        such wallbox's expected car."""
        now = self.optimiser.clock.now() if self.optimiser is not None else datetime.now()
        for control in self.car_controls:
            session = control.session(now)
            if session is not None:
                self._planned_control = control
                return (session,)
        self._planned_control = None
        # No car plugged in: the stay it usually makes, planned for, never charged (no control carries it out)
        for control in self.car_controls:
            expected = control.expected(now)
            if expected is not None:
                return (expected,)
        return ()

    def _planned_car(self, control: CarControl) -> tuple[float, SessionPlan] | None:
        if self.optimiser is None or control is not self._planned_control:
            return None
        return self.optimiser.planned_car()

    def _car_settings(self) -> CarSettings:
        if self.optimiser is None:
            return CarSettings()
        settings = self.optimiser.settings
        return CarSettings(
            priority=SurplusPriority(settings.car_priority),
            priority_soc=settings.car_priority_soc,
            batteries_feed_car=settings.batteries_feed_car,
        )

    def _quarter_budget(self) -> QuarterBudget | None:
        """The capacity tariff's running quarter-hour and the month's target, for the car's cap."""
        optimiser = self.optimiser
        if optimiser is None or optimiser.engine.tariff.capacity_price <= 0:
            return None
        engine, now = optimiser.engine, optimiser.clock.now()
        capacity = engine.capacity
        target = max(engine.tariff.capacity_floor_kw, capacity.month_peak_kw)
        if optimiser.settings.method == "rules":
            target = engine.peak_target()
        elif (summary := optimiser.plan_summary()) is not None and summary.month_peak_target_kw:
            target = max(target, summary.month_peak_target_kw)
        running = capacity.quarter == capacity_quarter(now)
        return QuarterBudget(
            capacity.quarter_import_wh if running else 0.0, capacity.remaining_s(now), target
        )

    def _site_energy(self, grid: GridInput, meter_battery: BatteryOptions | None) -> SiteEnergy:
        def source(key: str, device: BatteryDevice) -> BatterySource:
            return BatterySource(key, lambda: device.link.snapshot, lambda: device.available)

        sources = [
            source(_battery_key(item), device)
            for item, device in zip(self.options.batteries, self.batteries, strict=True)
        ]
        meter = next((d for d in self.batteries if meter_battery and d.name == meter_battery.name), None)
        energy = self._energy_section()
        if meter is None or meter_battery is None:
            return SiteEnergy(energy, sources, lambda: _fresh(grid), hold_back=True)

        def grid_counters() -> tuple[float | None, float | None]:
            if not meter.available:
                return None, None
            snapshot = meter.link.snapshot
            return snapshot.number("meter_import_energy"), snapshot.number("meter_export_energy")

        counters = CounterMeter(_battery_key(meter_battery), grid_counters)
        return SiteEnergy(energy, sources, lambda: _fresh(grid), counters, hold_back=True)

    def _energy_section(self) -> dict[str, Any]:
        """The energy section of state.json, or the copy in the energy file where that is the later one.
        The totals only grow, so the later copy is the one with more energy counted; on a tie state.json's
        (a stop saves it after the energy file's last write)."""
        section = self.state.section("energy")
        path = self.state.path.with_name(ENERGY_FILE)
        try:
            kept = json.loads(path.read_text())
        except FileNotFoundError:
            return section
        except (OSError, ValueError) as exc:
            _LOG.warning(
                "could not read %s (%s); the energy meters go on from %s", path, exc, self.state.path.name
            )
            return section
        if not isinstance(kept, dict):
            _LOG.warning("%s is not an object; the energy meters go on from %s", path, self.state.path.name)
            return section
        if _energy_counted(kept) > _energy_counted(section):
            section.clear()
            section.update({key: value for key, value in kept.items() if isinstance(value, dict)})
        return section

    def _keep_energy(self, energy: SiteEnergy) -> None:
        """The energy section into its own file (atomically), and then the meters may show its totals."""
        totals = energy.counted()
        text = json.dumps(energy.store, sort_keys=True)
        if text != self._energy_written:
            path = self.state.path.with_name(ENERGY_FILE)
            try:
                write_atomically(path, text)
            except OSError as exc:
                if not self._energy_problem:
                    _LOG.warning("could not save %s: %s", path, exc)
                self._energy_problem = f"could not save {path.name}: {exc.strerror or exc}"
                return
            self._energy_written, self._energy_problem = text, ""
        energy.kept(totals)

    def _meter_battery(self) -> BatteryOptions | None:
        source = self.options.grid_source
        if source.type != "battery" or not self.options.batteries:
            return None
        named = [b for b in self.options.batteries if b.name == source.battery]
        return named[0] if named else self.options.batteries[0]

    def _grid_input(self, meter_battery: BatteryOptions | None) -> GridInput:
        source = self.options.grid_source
        if source.type == "mqtt":
            return MqttGridInput(
                source.topic, json_key=source.json_key, unit=source.unit, invert=source.invert
            )
        if source.type == "battery" and meter_battery is not None:
            device = next(d for d in self.batteries if d.name == meter_battery.name)
            return BatteryMeterInput(device)
        if source.type == "entity":
            return EntityPowerInput(source.entity_id, unit=source.unit, invert=source.invert)
        return GridInput("no grid source")

    def _pv_power_input(self) -> GridInput | None:
        source = self.options.pv_power
        if source.type == "mqtt":
            return MqttGridInput(source.topic, json_key=source.json_key, unit=source.unit)
        if source.type == "entity":
            return EntityPowerInput(source.entity_id, unit=source.unit, option="pv_power")
        return None

    def _pv_forecast(self) -> PvForecast:
        source = self.options.pv_forecast
        if source.type == "entity":
            return EntityPvForecast(source.entity_id)
        if source.type == "weather":
            return WeatherPvForecast(source.entity_id)
        if source.type == "detailed":
            return DetailedPvForecast(source.entities)
        if source.type == "energy":
            return EnergyPvForecast()
        pv = PvForecast("none")
        pv.problem = "no PV forecast configured: night charging assumes no PV tomorrow"
        return pv

    async def _battery_client(
        self, item: BatteryOptions, pacing: Pacing, link_settings: LinkSettings, known_mac: str | None
    ) -> BatteryClient:
        """The battery's client for its transport: the Local API, Modbus TCP, or both (auto)."""
        ble_mac = item.ble_mac or known_mac
        udp: MarstekClient | None = None
        if item.transport != "modbus":
            if item.port not in self.endpoints:
                endpoint = await UdpEndpoint.open(self.options.marstek_bind, item.port)
                self.endpoints[item.port] = endpoint
                _LOG.info("Marstek UDP: %s", endpoint.bind_note)
            learned = self.state.section("addresses").get(_battery_key(item))
            udp = MarstekClient(
                item.host,
                item.port,
                endpoint=self.endpoints[item.port],
                pacing=pacing,
                ble_mac=ble_mac,
                # where it was last found: an IP entry starts there, a host name is asked first
                learned=learned if isinstance(learned, str) else None,
            )
        if item.transport == "udp":
            assert udp is not None
            return udp
        # A lease's end on the clock of the Local API's countdowns: the battery's own, which the demo's
        # simulators run faster (the leases are renewed on it too).
        countdown = self.clock.seconds if self.clock is not None else time.monotonic
        modbus = ModbusBattery(
            item.modbus_address,
            item.modbus_port,
            unit_id=item.modbus_unit_id,
            generation=item.generation,
            ble_mac=ble_mac,
            clock=countdown,
        )
        _LOG.info(
            "%s: Modbus TCP at %s:%d (%s)", item.name, item.modbus_address, item.modbus_port, item.transport
        )
        if udp is None:
            return modbus
        silent_for = silence_before_switch(link_settings.poll_interval, link_settings.offline_window)
        return FallbackBattery(udp, modbus, name=item.name, silent_for=silent_for, clock=countdown)

    async def __aexit__(self, *exc: object) -> None:
        # Within SHUTDOWN_BUDGET_S: s6 kills the process after S6_SERVICES_GRACETIME (the Dockerfile), and
        # a battery that has not confirmed by then is not helped by waiting longer. Every wait below covers
        # all batteries at once.
        if self.optimiser is not None:
            await self.optimiser.stop(timeout=SHUTDOWN_BUDGET_S * 0.4)  # to Auto while the links are up
        await self._end_leases(timeout=SHUTDOWN_BUDGET_S * 0.4)
        # Modbus: RS485 control released, never left on (a transport `auto` waits at most CLOSE_WAIT_S)
        await asyncio.gather(
            *(battery.client.close() for battery in self.battery_links), return_exceptions=True
        )
        if self.mqtt is not None:
            await self.mqtt.close()
        for link in self.wallbox_links:
            await link.client.close()
        for endpoint in self.endpoints.values():
            endpoint.close()
        self._save()

    async def run(self) -> None:
        assert self.mqtt is not None
        tasks = [asyncio.create_task(self.mqtt.run(), name="mqtt")]
        tasks += [asyncio.create_task(link.run(), name=f"battery-{link.name}") for link in self.battery_links]
        tasks += [asyncio.create_task(link.run(), name=f"wallbox-{link.name}") for link in self.wallbox_links]
        if self.optimiser is not None:
            tasks.append(asyncio.create_task(self.optimiser.run(), name="optimiser"))
        interval = self.options.control_interval
        tasks += [
            asyncio.create_task(c.run(interval), name=f"charge-{c.wallbox.name}") for c in self.car_controls
        ]
        if self.ha_inputs is not None:
            tasks.append(asyncio.create_task(self.ha_inputs.run(), name="homeassistant-inputs"))
        tasks.append(asyncio.create_task(self._site_ticker(), name="site"))
        if self.batteries:
            tasks.append(asyncio.create_task(self._lease_keeper(), name="leases"))
        tasks += self._notification_tasks()
        try:
            await asyncio.gather(*tasks)
        finally:
            await cancel_all(tasks)

    # callbacks from the links ------------------------------------------------------------------------------

    def _battery_updated(self, link: BatteryLink) -> None:
        client = link.client
        item = next(o for o in self.options.batteries if o.name == link.name)
        key = _battery_key(item)
        # What a restart must not forget: who the battery is, where it moved to (its configured address
        # may be stale after a DHCP change), and the manual slots written to it (the device cannot tell).
        udp = _udp_of(client)
        remembered = {
            "identities": client.identity or None,
            "addresses": udp.host if udp is not None and udp.host != item.host else None,
            "schedules": {str(i): asdict(slot) for i, slot in sorted(client.schedule.items())} or None,
        }
        changed = False
        for section, value in remembered.items():
            stored = self.state.section(section)
            if section == "identities" and value is None:
                continue  # an identity, once learned, is only replaced by another
            if stored.get(key) != value and (value is not None or key in stored):
                if value is None:
                    del stored[key]
                else:
                    stored[key] = value
                changed = True
        if changed:
            self._save()
        self._notify(self._device_of[id(link)])
        if self.site is not None:
            self._notify(self.site)

    def _wallbox_updated(self, link: WallboxLink) -> None:
        serial = link.snapshot.values.get("serial_number")
        key = next(_wallbox_key(o) for o in self.options.wallboxes if o.name == link.name)
        identities = self.state.section("identities")
        if isinstance(serial, str) and serial and identities.get(key) != serial:
            identities[key] = serial
            self._save()
        self._notify(self._device_of[id(link)])

    def _optimiser_changed(self) -> None:
        if self.optimiser_device is not None:
            self._notify(self.optimiser_device)

    async def _site_ticker(self) -> None:
        """The meter changes between battery polls: keep the site's power flow and energy current."""
        saved = state_saved = time.monotonic()
        while True:
            await asyncio.sleep(SITE_REFRESH_S)
            if time.monotonic() - state_saved >= STATE_SAVE_S:
                # The rest of the state (the load history the planner learns from, above all) as before:
                # a crash costs at most this much of it.
                state_saved = time.monotonic()
                self._save()
            if self.site is None:
                continue
            energy = self.site.sources.energy
            if energy is not None:
                energy.update(self.clock.seconds() if self.clock is not None else time.monotonic())
                if time.monotonic() - saved >= ENERGY_SAVE_S:
                    saved = time.monotonic()
                    self._keep_energy(energy)
            self._notify(self.site)

    def _notification_tasks(self) -> list[asyncio.Task[None]]:
        tasks = [asyncio.create_task(self._notices(), name="notices")]
        token = self.ha_token or supervisor.token()
        if not self.options.notifications:
            return tasks
        if not token:
            _LOG.info(
                "no Home Assistant API here (not an add-on, no MWA_HA_TOKEN): problems show as sensors only"
            )
            return tasks
        client = HomeAssistantClient([], url=self.ha_url, token=token)
        self.notifications = Notifications(client)
        tasks.append(asyncio.create_task(client.run(), name="homeassistant-notifications"))
        return tasks

    async def _notices(self) -> None:
        """Problems that need a person: each device's Problem sensor, and notifications where wanted."""
        while True:
            await asyncio.sleep(NOTICE_CHECK_S)
            notices = self.notice_board.collect(self)
            for device in [*self.batteries, *self.wallboxes]:
                mine = [n.message for n in notices.values() if n.device_id == device.device_id]
                if mine != device.notices:
                    device.notices = mine
                    self._notify(device)
            if self.notifications is not None:
                await self.notifications.sync(notices)

    async def _lease_keeper(self) -> None:
        """Renews the Passive leases of a person's commands until their duration ends."""
        speed = self.clock.speed if self.clock is not None else 1.0
        while True:
            await asyncio.sleep(RENEW_S / LEASE_CHECKS_PER_RENEWAL / speed)
            for device in self.batteries:
                hold = self.holds.get(device.device_id)
                try:
                    outcome = await device.renew_lease()
                except Exception:  # one battery's surprise must not end the leases of the others
                    _LOG.exception("%s: lease renewal failed", device.name)
                    continue
                if outcome is not None and hold is not None:
                    _LOG.info("%s: %s renewed: %s", device.name, hold.command, outcome.status.value)
                if (hold is None) != (self.holds.get(device.device_id) is None) or outcome is not None:
                    self._notify(device)

    async def _end_leases(self, timeout: float = 30.0) -> None:
        """A clean stop: batteries a person left in Passive go back to Auto, all at once."""
        ends = [device.end_lease() for device in self.batteries]
        if ends:
            try:
                await asyncio.wait_for(asyncio.gather(*ends, return_exceptions=True), timeout)
            except TimeoutError:
                _LOG.warning("not every battery confirmed Auto within %.0f s of the stop", timeout)

    def _notify(self, device: BridgedDevice) -> None:
        if self.mqtt is not None:
            self.mqtt.notify(device)
        for listener in self.listeners:
            listener(device)

    def _save(self) -> None:
        try:
            self.state.save()
        except OSError as exc:
            if not self._save_problem:
                _LOG.warning("could not save %s: %s", self.state.path, exc)
            self._save_problem = f"could not save {self.state.path.name}: {exc.strerror or exc}"
        else:
            self._save_problem = ""

    def problems(self) -> list[dict[str, str]]:
        """What the user should know is wrong, one line each, for the panel (the log has the details)."""
        found: list[dict[str, str]] = []

        def add(source: str, text: str) -> None:
            found.append({"source": source, "text": text})

        if self.mqtt is not None and not self.mqtt.connected.is_set():
            add("MQTT", f"not connected to {self.broker.describe()}: {self.mqtt.last_error or 'connecting'}")
        links: list[tuple[BridgedDevice, BatteryLink | WallboxLink, str]] = [
            (b, b.link, f"{b.link.client.host}:{b.link.client.port}") for b in self.batteries
        ]
        links += [
            (w, w.link, f"{w.link.client.config.host}:{w.link.client.config.port}") for w in self.wallboxes
        ]
        for device, link, where in links:
            error = f": {link.last_error}" if link.last_error else ""
            if device.device_id is None:
                add(device.name, f"has not answered yet at {where}{error}")
            elif not device.available:
                add(device.name, f"offline ({where}){error or ': no answer'}")
        if self.grid is not None and self.optimiser is not None:
            reading = self.grid.current()
            age = reading.age()
            if reading.problem:
                add("Grid meter", reading.problem)
            elif age is None:
                add("Grid meter", f"no reading yet from {reading.source}")
            elif age > READING_FRESH_S:
                add("Grid meter", f"no reading from {reading.source} for {age:.0f} s")
        if self.pv_power is not None and self.pv_power.current().problem:
            add("PV power", self.pv_power.current().problem)
        if self.optimiser is not None:
            if self.options.pv_forecast.type != "none" and self.optimiser.pv.problem:
                add("PV forecast", self.optimiser.pv.problem)
            status = self.optimiser.status
            if status is not None and status.enabled and status.mismatch:
                add("Optimiser", status.mismatch)
            live = self.optimiser.live
            if live.day_ahead is not None and live.day_ahead.problem:
                add("Prices", live.day_ahead.problem)
            planning = status is not None and status.enabled and self.optimiser.settings.method == "planner"
            if planning and self.optimiser.plan_problem():
                add("Planner", self.optimiser.plan_problem())
        if self.ha_inputs is not None and self.ha_inputs.problem:
            add("Home Assistant", self.ha_inputs.problem)
        for problem in self.state.problems:
            add("Saved state", problem)
        if self._save_problem:
            add("Saved state", f"{self._save_problem} (what changed since is lost at a restart)")
        if self._energy_problem:
            add("Saved state", f"{self._energy_problem} (the energy meters shown stand still until it can)")
        return found

    def snapshot(self) -> dict[str, Any]:
        """Everything the panel and `api/state` show."""
        return {
            "batteries": [{"name": d.name, "id": d.device_id, **d.state()} for d in self.batteries],
            "wallboxes": [{"name": d.name, "id": d.device_id, **d.state()} for d in self.wallboxes],
            "site": self.site.state() if self.site else {},
            "mqtt": self.mqtt.status() if self.mqtt else {},
        }
