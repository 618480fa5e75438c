"""Keeps one wallbox connected and polled, its life bit renewed, and its fail-safe within the add-on's limits.

Two loops share the client (whose lock keeps one transaction at a time): polling with reconnect backoff
(which also sets right a fail-safe timeout or current that would break the add-on's promises, and writes
the life bit right after each connect), and the keepalive that writes the life bit often enough for the
box's fail-safe timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from .client import WallboxError, WallboxSnapshot, WebastoClient
from .registers import WallboxModel

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class WallboxLinkSettings:
    poll_interval: float = 5.0
    slow_every: int = 12  # settings and session metadata every 12th poll
    offline_after: int = 2  # failed polls before the box counts as unavailable
    reconnect_min: float = 2.0
    reconnect_max: float = 120.0
    keepalive: bool = True
    keepalive_interval: float | None = None  # None: derived from the box's fail-safe timeout
    stale_after: float = 60.0  # UNITE: its clock register frozen this long means stale data; reconnect


class WallboxLink:
    """`await link.run()` until cancelled. `on_update` is called after every poll attempt."""

    def __init__(
        self,
        name: str,
        client: WebastoClient,
        settings: WallboxLinkSettings | None = None,
        on_update: Callable[[WallboxLink], None] | None = None,
    ) -> None:
        self.name = name
        self.client = client
        self.settings = settings or WallboxLinkSettings()
        self.on_update = on_update
        self.online = False
        self.failures = 0
        self.last_error = ""
        self.keepalives = 0
        self._warned = False  # one warning per outage, with what to check
        self._failsafe_refused: set[str] = set()  # fail-safe corrections the box refused, logged once
        self._renewed_connection = 0  # the client's connection the life bit was last written on
        self._polls = 0
        self._retry_delay = self.settings.reconnect_min
        self._clock_value: object = None
        self._clock_changed_at = time.monotonic()

    @property
    def snapshot(self) -> WallboxSnapshot:
        return self.client.snapshot

    async def run(self) -> None:
        keepalive = asyncio.create_task(self._keepalive_loop(), name=f"keepalive-{self.name}")
        try:
            while True:
                ok = await self.poll_once()
                await asyncio.sleep(self.settings.poll_interval if ok else self._retry_delay)
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive
            await self.client.close()

    async def poll_once(self) -> bool:
        slow = self._polls % self.settings.slow_every == 0
        try:
            await self.client.poll(include_slow=slow)
        except WallboxError as exc:
            self._failed(str(exc))
        else:
            self._polls += 1
            if not self.online:
                _LOG.info("%s: online", self.name)
            self.online, self.failures, self.last_error, self._warned = True, 0, "", False
            self._retry_delay = self.settings.reconnect_min
            self._check_stale()
            if self.settings.keepalive and self._renewed_connection != self.client.connects:
                # At once, not a keepalive interval later: the box may check every 3 s (T = 6 s), and the
                # interval is only known once this first read has brought the timeout.
                await self._keepalive()
            if slow:
                await self._correct_failsafe()
        if self.on_update is not None:
            self.on_update(self)
        return self.online and self.failures == 0

    async def _correct_failsafe(self) -> None:
        """Fail-safe settings made in the box's own web page that would let the add-on's last current outlive
        it, or fall back to more than the installation allows, are set right (each time they are read so: a
        safety limit, not a preference). One at a time, the timeout first: a box that refuses the current
        must still get the timeout. A refusal is logged once per setting; the snapshot's problems keep
        showing it."""
        correction = self.client.failsafe_correction()
        if not correction.needed:
            self._failsafe_refused.clear()
            return
        for timeout_s, current in ((correction.timeout_s, None), (None, correction.current)):
            if timeout_s is None and current is None:
                continue
            outcome = await self.client.set_failsafe(current=current, timeout_s=timeout_s)
            what = outcome.command.removeprefix("fail-safe ")
            if outcome.ok:
                self._failsafe_refused.discard(outcome.command)
                _LOG.warning(
                    "%s: the box's own fail-safe setting would break the add-on's limits: set to %s",
                    self.name,
                    what,
                )
            elif outcome.command not in self._failsafe_refused:
                self._failsafe_refused.add(outcome.command)
                _LOG.warning(
                    "%s: could not correct the box's fail-safe setting (%s): %s",
                    self.name,
                    what,
                    outcome.detail,
                )

    def _failed(self, error: str) -> None:
        self.failures += 1
        self.last_error = error
        self._polls = 0  # re-read everything after a reconnect
        if self.failures >= self.settings.offline_after and not self._warned:
            # A box that never answered since the start needs the user as much as one that went away.
            _LOG.warning("%s: %s: %s", self.name, "unavailable" if self.online else "not reachable", error)
            self.online, self._warned = False, True
        elif self.failures == 1:
            _LOG.info("%s: %s", self.name, error)
        self._retry_delay = (
            min(self._retry_delay * 2, self.settings.reconnect_max)
            if self.failures > 1
            else (self.settings.reconnect_min)
        )

    def _check_stale(self) -> None:
        """The UNITE can keep serving old values until the connection is reopened (nymea's check)."""
        if self.client.config.model is not WallboxModel.UNITE:
            return
        clock = self.client.snapshot.values.get("time")
        now = time.monotonic()
        if clock != self._clock_value:
            self._clock_value, self._clock_changed_at = clock, now
        elif now - self._clock_changed_at > self.settings.stale_after:
            _LOG.warning(
                "%s: the wallbox clock has not moved for %.0f s; reconnecting",
                self.name,
                now - self._clock_changed_at,
            )
            self.client.drop()
            self._clock_changed_at = now

    def keepalive_interval(self) -> float:
        return self.settings.keepalive_interval or self.client.keepalive_interval

    async def _keepalive_loop(self) -> None:
        if not self.settings.keepalive:
            return
        while True:
            await asyncio.sleep(self.keepalive_interval())
            if not self.client.connected:
                continue  # the poll loop reconnects; the box is in fail-safe meanwhile, as designed
            await self._keepalive()

    async def _keepalive(self) -> None:
        """Write the life bit. A box that refuses it falls back to its fail-safe current: a problem, logged
        once until the box takes the life bit again (not at every keepalive) and shown meanwhile."""
        self._renewed_connection = self.client.connects
        try:
            await self.client.keepalive()
        except WallboxError as exc:
            self.client.set_problem(
                "keepalive",
                f"keepalive failed: {exc}: the box falls back to its fail-safe current while the life bit "
                "is not written",
            )
            return
        self.keepalives += 1
        self.client.set_problem("keepalive", None)
