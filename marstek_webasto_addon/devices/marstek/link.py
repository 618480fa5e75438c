"""Keeps one battery polled: its own pace, availability, identity by ble_mac and address changes.

Polls start on a fixed cadence (every `poll_interval` from the first, not `poll_interval` after the last
one ended) and each has until the next one is due. Availability is judged by time: a battery that has not
answered for `offline_after` poll intervals (plus a grace) is offline at that moment, whatever the poll or
a write is waiting for, and it is online again at its first answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .battery_client import BatteryClient
from .client import MarstekClient, OutOfTime, ReadReport
from .datapoints import POINTS_BY_KEY, Method, Value
from .decode import MEASUREMENTS, BatterySnapshot
from .discovery import discover
from .fallback import FallbackBattery
from .transport import Address

_LOG = logging.getLogger(__name__)

# ES.GetMode first: mode, AC power and SOC, all that control needs, in one answer.
FAST = (Method.ES_MODE, Method.ES_STATUS)
SLOW = (Method.BAT_STATUS, Method.EM_STATUS, Method.PV_STATUS)
RARE = (Method.GET_DEVICE, Method.WIFI_STATUS, Method.BLE_STATUS)
# A search beside the polls (`auto` on Modbus) needs at least this much of the poll's time: a GetDevice
# answer takes 0.1-0.25 s.
SEARCH_WINDOW_MIN_S = 0.5


def local_api(client: BatteryClient) -> MarstekClient | None:
    """The client of the battery's Local API: the only transport a search can find it over, so its address
    and port are what a search uses, whichever transport is in use (None: never reached over UDP)."""
    if isinstance(client, FallbackBattery):
        return client.udp
    return client if isinstance(client, MarstekClient) else None


@dataclass(frozen=True)
class LinkSettings:
    poll_interval: float = 10.0
    slow_every: int = 6  # battery pack, meter and PV every 6th poll
    rare_every: int = 30  # identity (to follow OTA updates) and radio every 30th
    offline_after: int = 3  # poll intervals without any answer
    # Added to offline_after: the time the last of those polls has to get its answer, so a reply that is a
    # little later than the one before (retries, jitter) is no outage. 32.5 s at the defaults.
    offline_grace: float = 0.25
    rediscovery_targets: tuple[Address, ...] = ()
    rediscovery_timeout: float = 10.0
    rediscovery_interval: float = 60.0  # doubled after each miss, up to the maximum
    rediscovery_interval_max: float = 900.0
    extra_fast: tuple[Method, ...] = ()  # e.g. EM.GetStatus when this battery's CT is the optimiser's meter

    @property
    def offline_window(self) -> float:
        return (self.offline_after + self.offline_grace) * self.poll_interval


class BatteryLink:
    """One battery: `await link.run()` polls until cancelled. `on_update` is called after every poll, and
    at once when the battery goes offline or comes back."""

    def __init__(
        self,
        name: str,
        client: BatteryClient,
        settings: LinkSettings | None = None,
        on_update: Callable[[BatteryLink], None] | None = None,
    ) -> None:
        self.name = name
        self.client = client
        self.settings = settings or LinkSettings()
        self.on_update = on_update
        self.failures = 0  # polls in a row without any answer (for diagnostics; availability is by time)
        self.online = False
        self.last_error = ""
        self._polls = 0
        self._owed: list[Method] = []  # not read before the last poll's deadline
        self._next_rediscovery = 0.0
        self._rediscovery_interval = self.settings.rediscovery_interval
        self._created = time.monotonic()
        self._told_never = False  # a battery silent since the start: said once, with what to check
        self._told_errors_only = False  # a battery that answers with errors only: said once

    @property
    def snapshot(self) -> BatterySnapshot:
        return self.client.snapshot

    def current_values(self, now: float | None = None) -> dict[str, Value]:
        """The snapshot's values without live readings that are out of date: read less recently than their
        method's cadence plus the offline window (a method the firmware stopped answering, or a Local API
        reading while `auto` runs on Modbus). Shown as unknown, never as a frozen number; settings and
        identity keep their last value."""
        snapshot = self.snapshot
        moment = time.monotonic() if now is None else now
        return {
            key: value
            for key, value in snapshot.values.items()
            if key not in MEASUREMENTS
            or (age := snapshot.age(key, moment)) is None
            or age <= self.allowed_age(key)
        }

    def allowed_age(self, key: str) -> float:
        """How old a reading of `key` may be in normal polling: the slowest cadence of the methods that carry
        it (a firmware may fill it from that one only), plus the offline window. A derived point follows the
        slow methods it is made from (the PV channels)."""
        point = POINTS_BY_KEY.get(key)
        methods = [source.method for source in point.sources] if point is not None else []
        settings = self.settings

        def polls(method: Method) -> int:
            if method in FAST or method in settings.extra_fast:
                return 1
            return settings.rare_every if method in RARE else settings.slow_every

        slowest = max((polls(m) for m in methods), default=settings.slow_every)
        if point is not None and point.derive is not None:
            slowest = max(slowest, settings.slow_every)  # when derived: as old as its slowest input
        return slowest * settings.poll_interval + settings.offline_window

    @property
    def offline_at(self) -> float | None:
        """When the battery counts as offline if it does not answer before (time.monotonic())."""
        last = self.client.last_answer_at
        return None if last is None else last + self.settings.offline_window

    def methods_for(self, poll_number: int) -> Sequence[Method]:
        """In the order they are read, most needed first: a poll may run out of time before the end."""
        if poll_number == 0:
            return (Method.GET_DEVICE, *FAST, *SLOW, *RARE)
        methods: list[Method] = [*FAST, *self.settings.extra_fast]
        if poll_number % self.settings.slow_every == 0:
            firmware = self.client.snapshot.firmware
            methods += [m for m in SLOW if m is not Method.PV_STATUS or firmware.has_pv_inputs]
        if poll_number % self.settings.rare_every == 0:
            methods += RARE
        return methods

    async def run(self) -> None:
        due = time.monotonic()
        while True:
            await self._wait_until(due)
            due += self.settings.poll_interval
            try:
                await self.poll_once(deadline=due)
            except Exception as exc:  # one battery's surprise must never stop the polling of any battery
                _LOG.exception("%s: poll failed unexpectedly", self.name)
                self._failed(f"internal error: {exc}")
            # A poll that overran (a search for a moved battery) is followed at once, not a period later.
            due = max(due, time.monotonic())

    async def _wait_until(self, due: float) -> None:
        """Sleep until the next poll is due, waking on the way when the battery's time to answer runs out."""
        while True:
            now = time.monotonic()
            if now >= due:
                return
            wake = due
            if self.online and (offline_at := self.offline_at) is not None:
                wake = min(wake, max(offline_at, now))
            await asyncio.sleep(wake - now)
            self._judge()

    async def poll_once(self, deadline: float | None = None) -> bool:
        """One poll, over by `deadline` (time.monotonic(); default one poll interval from now)."""
        started = time.monotonic()
        if deadline is None:
            deadline = started + self.settings.poll_interval
        offline_at = self.offline_at
        if self.online and offline_at is not None:
            deadline = min(deadline, offline_at)  # the verdict comes on time, whatever the poll waits for
        methods = list(dict.fromkeys([*self.methods_for(self._polls), *self._owed]))
        # A battery that comes back is announced at its first answer, not after the rest of the poll; at
        # the very first contact, one announcement with everything read is better than two.
        returning = not self.online and offline_at is not None
        report = await self.client.read(
            methods,
            deadline=deadline,
            persist=self.online,
            # Away: one method, `attempts` times, per poll, enough to see it come back, not to hammer it.
            give_up_after=2 if self.online else 1,
            on_first_answer=self._came_back if returning else None,
        )
        self._polls += 1
        self._owed = report.unread if report.any_answer else []
        last = self.client.last_answer_at
        if last is not None and last >= started:
            self._came_back(publish=False)
            self._errors_only(report)
        else:
            self._failed(self._describe(report, self.last_error))
            if self.online and offline_at is not None and offline_at <= deadline:
                # This poll was its last chance; it may have stopped a moment early for want of time.
                await asyncio.sleep(max(0.0, offline_at - time.monotonic()))
            self._judge(publish=False)
            self._never_answered()
        self._publish()  # before any search, so "offline" is published at once
        if not self.online and self.failures:
            if await self._maybe_rediscover():
                self._publish()
        elif self.online and self.client.transport == "modbus" and self._local_api_lost():
            # `auto` on Modbus: the Local API may have moved (a new WiFi lease) while the LAN port kept its
            # address, and its probes would go to the old address for ever. Searched at the pace of the
            # searches for an offline battery, in what is left of this poll's time, so the polls keep theirs.
            await self._maybe_rediscover(until=deadline)
        return self.online

    def _local_api_lost(self) -> bool:
        """The Local API (beside a working Modbus) has not answered for as long as makes a battery offline."""
        local = local_api(self.client)
        if local is None:
            return False
        # On Modbus the Local API is only probed every few minutes: silent since the last probe is not lost.
        probe_every = self.client.probe_every if isinstance(self.client, FallbackBattery) else 0.0
        last = local.last_answer_at
        return last is None or time.monotonic() - last > probe_every + self.settings.offline_window

    def _came_back(self, publish: bool = True) -> None:
        self.failures, self.last_error = 0, ""
        if self.client.transport != "modbus":
            # Only the Local API's answer ends its searches' back-off: `auto` searches for it while on Modbus.
            self._rediscovery_interval = self.settings.rediscovery_interval
        if self.online:
            return
        self.online = True
        _LOG.info("%s: online at %s", self.name, self.client.host)
        if publish:
            self._publish()

    def _errors_only(self, report: ReadReport) -> None:
        """A battery that answers every request with an error is there (no search for it), but tells
        nothing: its readings age out. That is shown as its error, and logged once until it reads again."""
        if report.results or not report.errors:
            self._told_errors_only = False
            return
        self.last_error = "answers with errors only: " + self._describe(report, "")
        if not self._told_errors_only:
            self._told_errors_only = True
            _LOG.warning("%s: %s", self.name, self.last_error)

    def _never_answered(self) -> None:
        """Offline from the start is as much the user's business as going offline: one warning."""
        silent_for = time.monotonic() - self._created
        if (
            self._told_never
            or self.client.last_answer_at is not None
            or silent_for < self.settings.offline_window
        ):
            return
        self._told_never = True
        if self.client.transport == "modbus":
            _LOG.warning(
                "%s: no answer from %s:%d over Modbus TCP since the start (%s). Check that the battery is "
                "on, that its LAN cable is plugged in (the Venus E 3.0 serves Modbus from firmware 144 on "
                "its LAN port, not over WiFi) or that the RS485 gateway converts Modbus TCP to RTU at "
                "115200 8N1, and that no other Modbus client holds the battery",
                self.name,
                self.client.host,
                self.client.port,
                self.last_error or "no reply",
            )
            return
        _LOG.warning(
            "%s: no answer from %s:%d since the start (%s). Check that the battery is on and in the "
            "network, that its Local API is enabled on port %d (Marstek app, device settings; old firmware "
            "switches it off by itself), and that the address is right",
            self.name,
            self.client.host,
            self.client.port,
            self.last_error or "no reply",
            self.client.port,
        )

    def _judge(self, publish: bool = True) -> None:
        """Offline once the battery has been silent for `offline_after` poll intervals."""
        offline_at = self.offline_at
        if not self.online or offline_at is None or time.monotonic() < offline_at:
            return
        self.online = False
        _LOG.warning(
            "%s: offline, no answer for %.1f s (%s)",
            self.name,
            time.monotonic() - (self.client.last_answer_at or 0.0),
            self.last_error or "no reply",
        )
        if publish:
            self._publish()

    def _publish(self) -> None:
        if self.on_update is None:
            return
        try:
            self.on_update(self)
        except Exception as exc:  # a bug in a listener must not stop the polling
            _LOG.exception("%s: publishing the update failed", self.name)
            self.last_error = f"internal error: {exc}"

    @staticmethod
    def _describe(report: ReadReport, before: str) -> str:
        # A poll that had no time to ask anything tells nothing new: the error before it still stands.
        errors = [e for e in report.errors.values() if not isinstance(e, OutOfTime) or e.attempts]
        return "; ".join(str(e) for e in errors) or before or "no reply"

    def _failed(self, error: str) -> None:
        self.failures += 1
        self.last_error = error

    async def _maybe_rediscover(self, until: float | None = None) -> bool:
        """Search the network for this battery's BLE MAC; True when it was found at a new address. With
        `until` (time.monotonic()), the search ends by then, and is not started with too little time left.

        Over the Local API's port and compared with its address, whichever transport is in use: on `auto`,
        the client's port and host are Modbus's while it runs on Modbus, where no battery answers a search."""
        mac = self.client.identity
        targets = self.settings.rediscovery_targets
        local = local_api(self.client)  # None: not reached over UDP, nothing to broadcast for
        if not mac or not targets or local is None or time.monotonic() < self._next_rediscovery:
            return False
        timeout = self.settings.rediscovery_timeout
        if until is not None:
            timeout = min(timeout, until - time.monotonic())
            if timeout < SEARCH_WINDOW_MIN_S:
                return False  # at a later poll
        _LOG.info("%s: looking for battery %s on the network", self.name, mac)
        found = await discover(
            local.endpoint,
            [(host, local.port) if port == 0 else (host, port) for host, port in targets],
            timeout=timeout,
            stop_when=lambda battery: battery.ble_mac == mac,
        )
        match = next((b for b in found if b.ble_mac == mac), None)
        if match is None:
            self._next_rediscovery = time.monotonic() + self._rediscovery_interval
            self._rediscovery_interval = min(
                self._rediscovery_interval * 2, self.settings.rediscovery_interval_max
            )
            # (online over Modbus, a search for its Local API that finds nothing is no news to warn of)
            _LOG.log(
                logging.INFO if self.online else logging.WARNING,
                "%s: battery %s not found; next search in %.0f s",
                self.name,
                mac,
                self._rediscovery_interval,
            )
            return False
        before = local.address[0]
        # A host name stays when it names the address found (looked up afresh: the name may already follow
        # a new lease); only an address the name does not lead to replaces it.
        moved = not await local.found_at(match.host)
        if not moved and local.address[0] != before:
            _LOG.warning(
                "%s: battery %s moved from %s to %s (%s)", self.name, mac, before, match.host, local.host
            )
            self._moved()
            return True
        if not moved:
            # It answers a broadcast but not our polls: keep backing off rather than broadcast again and
            # again (frequent broadcasts were reported to destabilise a v148 unit, jaapp#114).
            self._next_rediscovery = time.monotonic() + self._rediscovery_interval
            self._rediscovery_interval = min(
                self._rediscovery_interval * 2, self.settings.rediscovery_interval_max
            )
            return False
        _LOG.warning("%s: battery %s moved from %s to %s", self.name, mac, local.host, match.host)
        self.client.move_to(match.host)
        self._moved()
        return True

    def _moved(self) -> None:
        self.failures = 0
        self._next_rediscovery = 0.0
