"""Keeps one battery polled: its own pace, availability, identity by ble_mac and address changes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .client import MarstekClient
from .datapoints import Method
from .decode import BatterySnapshot
from .discovery import discover
from .transport import Address

_LOG = logging.getLogger(__name__)

FAST = (Method.ES_STATUS, Method.ES_MODE)
SLOW = (Method.BAT_STATUS, Method.EM_STATUS, Method.PV_STATUS)
RARE = (Method.GET_DEVICE, Method.WIFI_STATUS, Method.BLE_STATUS)


@dataclass(frozen=True)
class LinkSettings:
    poll_interval: float = 10.0
    slow_every: int = 6  # battery pack, meter and PV every 6th poll
    rare_every: int = 30  # identity (to follow OTA updates) and radio every 30th
    offline_after: int = 3  # consecutive polls without any answer
    rediscovery_targets: tuple[Address, ...] = ()
    rediscovery_timeout: float = 10.0
    rediscovery_interval: float = 60.0  # doubled after each miss, up to the maximum
    rediscovery_interval_max: float = 900.0
    extra_fast: tuple[Method, ...] = ()  # e.g. EM.GetStatus when this battery's CT is the optimiser's meter


class BatteryLink:
    """One battery: `await link.run()` polls until cancelled. `on_update` is called after every poll."""

    def __init__(
        self,
        name: str,
        client: MarstekClient,
        settings: LinkSettings | None = None,
        on_update: Callable[[BatteryLink], None] | None = None,
    ) -> None:
        self.name = name
        self.client = client
        self.settings = settings or LinkSettings()
        self.on_update = on_update
        self.failures = 0
        self.online = False
        self.last_error = ""
        self._polls = 0
        self._next_rediscovery = 0.0
        self._rediscovery_interval = self.settings.rediscovery_interval

    @property
    def snapshot(self) -> BatterySnapshot:
        return self.client.snapshot

    def methods_for(self, poll_number: int) -> Sequence[Method]:
        if poll_number == 0:
            return (*RARE, *FAST, *SLOW)
        methods: list[Method] = [*FAST, *self.settings.extra_fast]
        if poll_number % self.settings.slow_every == 0:
            firmware = self.client.snapshot.firmware
            methods += [m for m in SLOW if m is not Method.PV_STATUS or firmware.has_pv_inputs]
        if poll_number % self.settings.rare_every == 0:
            methods += RARE
        return methods

    async def run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception as exc:  # one battery's surprise must never stop the polling of any battery
                _LOG.exception("%s: poll failed unexpectedly", self.name)
                self._failed(f"internal error: {exc}")
            await asyncio.sleep(self.settings.poll_interval)

    async def poll_once(self) -> bool:
        report = await self.client.read(self.methods_for(self._polls))
        self._polls += 1
        if report.any_answer:
            if not self.online:
                _LOG.info("%s: online at %s", self.name, self.client.host)
            self.failures, self.online, self.last_error = 0, True, ""
            self._rediscovery_interval = self.settings.rediscovery_interval
        else:
            errors = "; ".join(str(e) for e in report.errors.values()) or "no reply"
            self._failed(errors)
        if self.on_update is not None:
            self.on_update(self)  # before any search, so "offline" is published at once
        if self.failures >= self.settings.offline_after and await self._maybe_rediscover() and self.on_update:
            self.on_update(self)
        return self.online

    def _failed(self, error: str) -> None:
        self.failures += 1
        self.last_error = error
        if self.online and self.failures >= self.settings.offline_after:
            self.online = False
            _LOG.warning("%s: offline after %d failed polls (%s)", self.name, self.failures, error)

    async def _maybe_rediscover(self) -> bool:
        """Search the network for this battery's BLE MAC; True when it was found at a new address."""
        mac = self.client.identity
        targets = self.settings.rediscovery_targets
        if not mac or not targets or time.monotonic() < self._next_rediscovery:
            return False
        _LOG.info("%s: looking for battery %s on the network", self.name, mac)
        found = await discover(
            self.client.endpoint,
            [(host, self.client.port) if port == 0 else (host, port) for host, port in targets],
            timeout=self.settings.rediscovery_timeout,
            stop_when=lambda battery: battery.ble_mac == mac,
        )
        match = next((b for b in found if b.ble_mac == mac), None)
        if match is None:
            self._next_rediscovery = time.monotonic() + self._rediscovery_interval
            self._rediscovery_interval = min(
                self._rediscovery_interval * 2, self.settings.rediscovery_interval_max
            )
            _LOG.warning(
                "%s: battery %s not found; next search in %.0f s", self.name, mac, self._rediscovery_interval
            )
            return False
        moved = match.host != self.client.host
        if not moved:
            # It answers a broadcast but not our polls: keep backing off rather than broadcast again and
            # again (frequent broadcasts were reported to destabilise a v148 unit, jaapp#114).
            self._next_rediscovery = time.monotonic() + self._rediscovery_interval
            self._rediscovery_interval = min(
                self._rediscovery_interval * 2, self.settings.rediscovery_interval_max
            )
            return False
        _LOG.warning("%s: battery %s moved from %s to %s", self.name, mac, self.client.host, match.host)
        self.client.move_to(match.host)
        self.failures = 0
        self._next_rediscovery = 0.0
        return True
