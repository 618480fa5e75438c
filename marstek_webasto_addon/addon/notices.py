"""Problems a person has to act on, in one list: a `Problem` binary sensor on each device that automations
can use, and, where switched on, Home Assistant persistent notifications (created once when a problem
starts, dismissed when it ends; never one per poll).

What counts: a battery or wallbox that has not answered for `OFFLINE_NOTICE_S` (for a battery, the Local
API switching itself off looks exactly like this), a battery in another mode than the optimiser told it,
and the optimiser holding every battery in Auto because its grid reading is gone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .homeassistant import HomeAssistantClient, HomeAssistantError

if TYPE_CHECKING:
    from .runtime import Runtime

_LOG = logging.getLogger(__name__)
OFFLINE_NOTICE_S = 600.0
NOTIFICATION_PREFIX = "marstek_webasto_"


@dataclass(frozen=True)
class Notice:
    key: str  # stable while the problem lasts: the notification's id
    device_id: str | None  # whose Problem sensor shows it
    title: str
    message: str


class NoticeBoard:
    """`collect(runtime)` on every tick: the problems in force now."""

    def __init__(
        self, now: Callable[[], float] = time.monotonic, offline_after_s: float = OFFLINE_NOTICE_S
    ) -> None:
        self.now = now
        self.offline_after_s = offline_after_s
        self._offline_since: dict[str, float] = {}

    def collect(self, runtime: Runtime) -> dict[str, Notice]:
        notices: list[Notice] = []
        for battery in runtime.batteries:
            client = battery.link.client
            notices += self._offline(
                battery.name,
                battery.device_id,
                battery.available,
                f"at {client.host}:{client.port}",
                battery.link.last_error,
                "If it is on and in the network, its Local API may have switched itself off (Venus E "
                "firmware before 150, or 156 on the 2.0): switch the Local API on again in the Marstek app.",
            )
        for wallbox in runtime.wallboxes:
            config = wallbox.link.client.config
            notices += self._offline(
                wallbox.name,
                wallbox.device_id,
                wallbox.available,
                f"at {config.host}:{config.port}",
                wallbox.link.last_error,
                "Check that Modbus is on and no other program holds the wallbox's one Modbus connection.",
            )
        status = runtime.optimiser.status if runtime.optimiser is not None else None
        if status is not None and status.enabled and status.mismatch:
            notices.append(
                Notice(
                    "mode_mismatch",
                    "optimiser",
                    "Battery mode mismatch",
                    f"{status.mismatch}. The optimiser does not rely on that battery until its mode is "
                    "confirmed again.",
                )
            )
        if status is not None and status.enabled and status.stale_input:
            notices.append(
                Notice(
                    "optimiser_hold",
                    "optimiser",
                    "The optimiser holds every battery in Auto",
                    f"{status.hold.capitalize()}: check the grid meter (option grid_source).",
                )
            )
        return {n.key: n for n in notices}

    def _offline(
        self, name: str, device_id: str | None, available: bool, where: str, error: str, hint: str
    ) -> list[Notice]:
        if available:
            self._offline_since.pop(name, None)
            return []
        since = self._offline_since.setdefault(name, self.now())
        minutes = (self.now() - since) / 60
        if minutes * 60 < self.offline_after_s:
            return []
        last = f" (last error: {error})" if error else ""
        return [
            Notice(
                f"offline_{device_id or name}",
                device_id,
                f"{name} is offline",
                f"{name} {where} has not answered for {minutes:.0f} minutes{last}. {hint}",
            )
        ]


class Notifications:
    """Keeps Home Assistant's persistent notifications in step with the notices."""

    def __init__(self, client: HomeAssistantClient) -> None:
        self.client = client
        self.shown: dict[str, Notice] = {}

    async def sync(self, notices: dict[str, Notice]) -> None:
        if not self.client.connected:
            return  # after a reconnect the next tick catches up
        for key in list(self.shown.keys() - notices.keys()):
            await self._call("dismiss", {"notification_id": NOTIFICATION_PREFIX + key})
            self.shown.pop(key, None)
        for key, notice in notices.items():
            if self.shown.get(key, None) is not None and self.shown[key].title == notice.title:
                continue  # shown already: a minute counter in the text is no reason to notify again
            data = {
                "notification_id": NOTIFICATION_PREFIX + key,
                "title": notice.title,
                "message": notice.message,
            }
            if await self._call("create", data):
                self.shown[key] = notice

    async def _call(self, service: str, data: dict[str, str]) -> bool:
        try:
            await self.client.call_service("persistent_notification", service, data)
        except HomeAssistantError as exc:
            _LOG.warning("Home Assistant notification %s failed: %s", service, exc)
            return False
        return True
