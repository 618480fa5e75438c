"""A person's command wins: manual holds, and the leases that keep a long Passive command alive.

A battery obeys a Passive command only for its countdown (`cd_time`), so no Passive command carries a
countdown longer than `LEASE_S`: whatever the add-on sent runs out by itself at most 15 minutes after the
add-on died. A person's longer duration is kept here instead (persisted under /data) and the lease is
renewed every `RENEW_S` until that duration ends.

Every command from a person that changes a battery's mode also puts the battery in a manual hold: the
optimiser leaves it alone until the command's duration ends (or the configured hold for commands without
one) or until the person hands it back.

A battery a person switched to Manual, AI or UPS outside the add-on (the Marstek app) is held by the
optimiser too (`optimiser/engine.py` decides when that hold begins, is renewed and ends); it is kept here
as a hold like the others (`outside_mode` set), so it shows the same end and survives a restart.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Protocol

from pydantic import TypeAdapter, ValidationError

_LOG = logging.getLogger(__name__)

LEASE_S = 900  # the longest device countdown the add-on ever sends
RENEW_S = 300  # renewed this often: two renewals may be lost before the lease runs out
DEFAULT_HOLD_S = 1800.0
# The longest duration a person can set (Passive duration and Manual hold both go up to 1440 min): a
# stored hold that ends further off than this comes from a damaged file, not from a person.
MAX_HOLD_S = 1440 * 60
OUTSIDE_SOURCE = "outside"  # the source of a hold the optimiser keeps for a change made outside the add-on


class WallClock(Protocol):
    """Real time on real hardware; the simulators' faster clock in the demo."""

    def now(self) -> datetime: ...


class _RealClock:
    def now(self) -> datetime:
        return datetime.now()


@dataclass
class ManualHold:
    """What a person asked of one battery, and until when the optimiser must leave it alone."""

    device_id: str
    command: str  # as the person would say it: "discharge 2500 W for 240 min"
    source: str  # "panel" or "mqtt" (Home Assistant)
    started: float  # epoch seconds
    until: float  # epoch seconds
    passive_power: int | None = None  # a Passive set-point kept alive by leases until `until`
    lease_sent: float = 0.0  # epoch of the last lease written; 0: none since the add-on started
    # The mode a person chose outside the add-on (the Marstek app): the optimiser's app-change hold, whose
    # renewal and end the optimiser decides. "" for a command given through the add-on.
    outside_mode: str = ""
    # The battery's mode when a person's Passive began (Auto, AI, Manual, UPS; "" unknown): where a
    # countdown that ran out takes it back. Any other mode was chosen outside the add-on since.
    prior_mode: str = ""

    def describe(self) -> str:
        end = datetime.fromtimestamp(self.until).strftime("%H:%M")
        if self.outside_mode:
            return f"manual hold until {end} ({self.command})"  # who changed it is not known
        return f"manual hold until {end} ({self.command}, from {self.source})"


_HOLD = TypeAdapter(ManualHold)


class ManualHolds:
    """The holds of every battery, persisted in `store` (a section of the state file)."""

    def __init__(
        self,
        store: dict[str, Any],
        save: Callable[[], None] = lambda: None,
        clock: WallClock | None = None,
        default_hold_s: Callable[[], float] = lambda: DEFAULT_HOLD_S,
    ) -> None:
        self.store = store
        self.save = save
        self.clock: WallClock = clock or _RealClock()
        self.default_hold_s = default_hold_s
        self._holds: dict[str, ManualHold] = {}
        self._changed_at: dict[str, float] = {}  # device id -> epoch of a person's last mode change
        # An optimiser runs and decides when its app-change holds end (`optimiser/engine.py`): they do not
        # end here by the clock, which would drop one a moment before its renewal (the battery still in
        # the app's mode) or while the battery cannot be read, and the optimiser would take the battery.
        # Without an optimiser they end at their time like any other.
        self.outside_owned = False
        # App-change holds a person ended here (Return to optimiser), for the optimiser to let go too.
        self.handed_back: set[str] = set()
        for device_id, fields in list(store.items()):
            try:
                stored = _HOLD.validate_python(fields)
            except ValidationError as exc:
                _LOG.warning("forgetting a stored manual hold of %s (%s)", device_id, exc.errors()[0]["msg"])
                del store[device_id]
                continue
            hold = self._restored(device_id, stored)
            if hold is None:
                del store[device_id]
                continue
            store[device_id] = asdict(hold)
            self._holds[device_id] = hold
            # The person's change, for the switch interval after a restart.
            self._changed_at[device_id] = hold.started

    def now(self) -> float:
        return self.clock.now().timestamp()

    def _restored(self, device_id: str, hold: ManualHold) -> ManualHold | None:
        """A stored hold as it may stand after a restart, or None (with a warning) where it cannot."""
        now = self.now()
        if not (math.isfinite(hold.started) and math.isfinite(hold.until)):
            # NaN never ends, and neither end can be shown or turned into a lease countdown.
            _LOG.warning("forgetting a stored manual hold of %s: its start or end is not a time", device_id)
            return None
        if hold.started > now:
            # Given while the clock was ahead: the person asked for a duration, not for an end that far off.
            hold.until = now + (hold.until - hold.started)
            hold.started = now
        if hold.until - now > MAX_HOLD_S:
            _LOG.warning(
                "forgetting a stored manual hold of %s: it would end in %.0f h, longer than anyone can set",
                device_id,
                (hold.until - now) / 3600,
            )
            return None
        hold.lease_sent = 0.0  # whether the last lease reached the battery before the stop is unknown
        return hold

    def start(
        self,
        device_id: str,
        command: str,
        source: str,
        duration_s: float | None = None,
        passive_power: int | None = None,
        prior_mode: str = "",
    ) -> ManualHold:
        now = self.now()
        length = duration_s if duration_s is not None else self.default_hold_s()
        hold = ManualHold(
            device_id, command, source, now, now + length, passive_power, now, prior_mode=prior_mode
        )
        self._holds[device_id] = hold
        self._changed_at[device_id] = now
        self._persist(device_id)
        _LOG.info("%s: %s", device_id, hold.describe())
        return hold

    def hold_outside(self, device_id: str, mode: str, until: float, since: float | None = None) -> ManualHold:
        """The optimiser's hold of a battery a person put in `mode` outside the add-on, until `until`
        (epoch). `since`: the start of the hold this one renews (the battery stayed in that mode), which
        is no new change of a person's; None: a new change, which the switch interval counts from."""
        now = self.now()
        hold = ManualHold(
            device_id,
            f"put in {mode} outside the add-on",
            OUTSIDE_SOURCE,
            now if since is None else since,
            until,
            outside_mode=mode,
        )
        self._holds[device_id] = hold
        if since is None:
            self._changed_at[device_id] = now
        self._persist(device_id)
        _LOG.info("%s: %s", device_id, hold.describe())
        return hold

    def release(self, device_id: str) -> ManualHold | None:
        hold = self._holds.pop(device_id, None)
        if hold is not None:
            self._persist(device_id)
        return hold

    def hand_back(self, device_id: str) -> ManualHold | None:
        """A person ends the hold (Return to optimiser)."""
        hold = self.release(device_id)
        if hold is not None and hold.outside_mode:
            self.handed_back.add(device_id)
        return hold

    def restore(self, hold: ManualHold) -> None:
        """Put back a hold that a refused command replaced."""
        self._holds[hold.device_id] = hold
        self._persist(hold.device_id)

    def get(self, device_id: str | None) -> ManualHold | None:
        """The hold in force, if any (one that has ended is forgotten here)."""
        if device_id is None:
            return None
        hold = self._holds.get(device_id)
        owned = hold is not None and bool(hold.outside_mode) and self.outside_owned
        if hold is not None and not owned and hold.until <= self.now():
            _LOG.info("%s: manual hold ended (%s)", device_id, hold.command)
            self.release(device_id)
            return None
        return hold

    def changed_at(self, device_id: str) -> float | None:
        """When a person last changed this battery's mode (epoch), for the optimiser's switch interval."""
        return self._changed_at.get(device_id)

    def lease_due(self, device_id: str | None) -> ManualHold | None:
        """A Passive hold whose lease must be written again now."""
        hold = self.get(device_id)
        if hold is None or hold.passive_power is None:
            return None
        return hold if self.now() - hold.lease_sent >= RENEW_S else None

    def lease_seconds(self, hold: ManualHold) -> int:
        """The countdown of the next lease: the rest of the person's duration, at most `LEASE_S`."""
        return max(1, min(LEASE_S, math.ceil(hold.until - self.now())))

    def leased(self, hold: ManualHold) -> None:
        hold.lease_sent = self.now()

    def left_in(self, hold: ManualHold, mode: str) -> None:
        """The add-on put the battery of this Passive hold in `mode` itself (Auto at a clean stop): where
        its next countdown would take it, and no person's choice."""
        hold.prior_mode = mode
        self._persist(hold.device_id)

    def _persist(self, device_id: str) -> None:
        hold = self._holds.get(device_id)
        if hold is None:
            self.store.pop(device_id, None)
        else:
            self.store[device_id] = asdict(hold)
        self.save()
