"""While the readings settle, set-points wait; a battery's SOC window and limits do not.

The engine keeps every Passive set-point as sent while a battery's power reading does not show its last
command yet (`settling`, see the engine's *Consistent readings*): the total worked out from a meter beside
stale battery powers is off by that command, and the batteries flapped on it. What does not come from those
readings must not wait: a set-point kept goes no further than the SOC window and limits of now (a countdown
refresh renews none outside them), and a stop the SOC asks for (empty, full, charged to its night goal) goes
at once. And the controller's hold is bounded: a role queued behind a schedule clearing (minutes over UDP),
or a write that hangs, holds the site's set-points for the freshness window at most.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from marstek_webasto_addon.addon.controller import _Actuator
from marstek_webasto_addon.devices.outcome import WriteOutcome, WriteStatus
from marstek_webasto_addon.optimiser.engine import Optimiser
from marstek_webasto_addon.optimiser.model import Command, Inputs, Role, StepResult
from marstek_webasto_addon.optimiser.settings import Settings

from .optimiser_world import World, battery


class _SettlingOptimiser(Optimiser):
    """The engine, told at every step that the batteries in `settling_now` do not show their last write."""

    settling_now: frozenset[str] = frozenset()

    def step(self, inputs: Inputs, settling: Collection[str] = ()) -> StepResult:
        return super().step(inputs, settling=self.settling_now)


class SettlingWorld(World):
    def __post_init__(self) -> None:
        self.engine: _SettlingOptimiser = _SettlingOptimiser(self.settings, self.tariff)

    def settling(self, *ids: str) -> None:
        self.engine.settling_now = frozenset(ids)

    def sent_to(self, battery_id: str, since: int) -> list[Command]:
        return [c for c in self.log[since:] if c.battery_id == battery_id]


def last(commands: list[Command], why: str) -> Command:
    assert commands, why
    return commands[-1]


def a_at_its_maximum(world: SettlingWorld, grid: float, seconds: float) -> None:
    """A active in Auto, past the switch interval, then at its maximum with `grid` W still imported."""
    world.engine.active, world.engine.last_switch = "a", 1000.0
    world.grid = 0.0
    world.step()
    world.run(310)
    world.set("A", ac_power=2500.0)
    world.grid = grid
    world.run(seconds)


def support_world() -> SettlingWorld:
    """A in Auto at its maximum, C helping with 700 W (load support), B idle in Passive."""
    world = SettlingWorld([battery("A", 60), battery("B", 30), battery("C", 65)])
    a_at_its_maximum(world, grid=700, seconds=130)
    support = last(world.sent_to("c", 0), "no load support")
    assert (support.role, support.power_w) == (Role.DISCHARGE, 700)
    return world


def peak_world() -> SettlingWorld:
    """Peak assist on: B and C discharge beside A (in Auto at its maximum), the quarter kept under 2.5 kW."""
    world = SettlingWorld(
        [battery("A", 60), battery("B", 50), battery("C", 65)],
        now=datetime(2026, 6, 3, 17, 54, 50),
        settings=Settings(enabled=True, method="rules", peak_target=2.5),
    )
    a_at_its_maximum(world, grid=3000, seconds=120)
    assert world.engine.peak_assist_on
    helpers = {c.battery_id for c in world.log if c.role is Role.DISCHARGE and c.power_w > 0}
    assert helpers == {"b", "c"}, world.log
    return world


# --- a stop the SOC asks for goes at once -------------------------------------------------------------


def test_an_empty_support_battery_stops_while_another_battery_settles() -> None:
    world = support_world()
    world.settling("b")  # B's reading predates its last write
    world.set("C", soc=10.0)  # below its 12 % floor: load support stops, C is empty
    n = len(world.log)
    world.step()
    assert last(world.sent_to("c", n), "C below its floor got no stop").role is Role.IDLE


def test_a_countdown_refresh_while_the_readings_settle_renews_no_discharge_below_the_floor() -> None:
    world = support_world()
    sent_at = world.engine.sent["c"].at
    while world.t + 10 < sent_at + 600:  # up to the step before C's countdown refresh falls due
        world.step()
        sent_at = world.engine.sent["c"].at
    world.set("C", soc=10.0)  # drained below its floor meanwhile
    world.settling("b")  # for this one step: B was written to 10 s ago
    n = len(world.log)
    world.step()
    new = world.sent_to("c", n)
    bad = [c for c in new if c.role is Role.DISCHARGE and c.power_w > 0]
    assert not bad, f"C at SOC 10 % (floor 12 %) renewed for 900 s: {bad}"
    assert last(new, "C got no stop").power_w == 0


def test_a_battery_charged_to_its_night_goal_stops_while_another_battery_settles() -> None:
    world = SettlingWorld(
        [battery("A", 50), battery("B", 20), battery("C", 90)],
        now=datetime(2026, 6, 4, 0, 55),
        settings=Settings(enabled=True, method="rules", desired_total_capacity=12.0),
    )
    world.step()
    world.run(910)
    assert last(world.sent_to("b", 0), "no night charging").role is Role.CHARGE
    world.settling("a")
    world.set("B", soc=99.0)  # past its goal
    n = len(world.log)
    world.step()
    assert last(world.sent_to("b", n), "B charged to its goal kept charging").role is Role.IDLE


def test_a_full_overflow_battery_stops_while_another_battery_settles() -> None:
    world = SettlingWorld([battery("A", 50), battery("B", 45), battery("C", 80)])
    world.engine.active, world.engine.last_switch = "a", 1000.0
    world.step()
    world.run(310)
    world.set("A", ac_power=-2500.0)  # saturated
    world.grid = -900
    world.run(130)
    assert world.engine.overflow == "b"
    world.settling("c")
    world.set("B", soc=96.0)  # full (all full at 95 %)
    n = len(world.log)
    world.step()
    assert last(world.sent_to("b", n), "B full kept charging").role is Role.IDLE


# --- a set-point kept stays within the SOC window and the limits of now ------------------------------------


def test_a_helper_kept_while_the_readings_settle_stops_at_its_floor_and_is_never_renewed_below_it() -> None:
    world = peak_world()
    world.set("C", soc=10.0)  # below its floor: no helper any more, and no discharge at all
    world.settling("b")  # and B's reading stays behind meanwhile
    n = len(world.log)
    world.run(30)  # a Passive set-point changes at most every 30 s
    assert last(world.sent_to("c", n), "C kept discharging below its floor").power_w == 0
    world.run(700)  # past C's countdown refresh
    new = world.sent_to("c", n)
    bad = [c for c in new if c.role is Role.DISCHARGE and c.power_w > 0]
    assert not bad, f"a discharge sent to C at SOC 10 % (floor 12 %): {bad}"


def test_a_set_point_kept_while_the_readings_settle_follows_a_lower_limit_at_once() -> None:
    world = support_world()
    world.settling("b")
    world.set("C", max_discharge_w=400)  # its limit now (a setting changed, a hot battery)
    n = len(world.log)
    world.run(30)  # a Passive set-point changes at most every 30 s
    new = world.sent_to("c", n)
    assert [(c.role, c.power_w) for c in new] == [(Role.DISCHARGE, 400)], new


# --- what the readings ask for still waits for them (the anti-flap hold) --------------------------------


def test_less_support_worked_out_from_the_meter_waits_for_the_readings() -> None:
    """Right after a larger set-point, the stale total asks for less: a reduction let through at once is half
    of the flapping. It goes once the readings show the last command."""
    world = support_world()
    world.settling("a")
    # A reads 500 W less (the house took less, or A's reading predates it): the meter at 0 W, C's support
    # seems to be 500 W too much
    world.set("A", ac_power=2000.0)
    world.grid = 0
    n = len(world.log)
    world.run(60)
    assert world.sent_to("c", n) == []
    world.settling()
    world.run(40)
    assert last(world.sent_to("c", n), "the reduction never went").power_w < 700


def test_peak_assist_waits_for_the_readings_and_acts_once_they_show_the_last_command() -> None:
    """A larger discharge for peak assist is worked out from the meter and the helpers' powers, the readings
    that flapped: it waits for them as any other (the controller bounds that wait by the freshness window)."""
    world = SettlingWorld(
        [battery("A", 60), battery("B", 50), battery("C", 65)],
        now=datetime(2026, 6, 3, 17, 54, 50),
        settings=Settings(enabled=True, method="rules", peak_target=2.5),
    )
    world.engine.active, world.engine.last_switch = "a", 1000.0
    world.step()
    world.run(310)
    world.set("A", ac_power=2500.0)
    world.grid = 3000
    world.settling("b")
    n = len(world.log)
    world.run(60)
    assert world.engine.peak_assist_on
    assert not [c for c in world.log[n:] if c.role is Role.DISCHARGE]
    world.settling()
    world.step()
    helpers = {c.battery_id for c in world.log[n:] if c.role is Role.DISCHARGE and c.power_w > 0}
    assert helpers == {"b", "c"}


# --- the controller's hold is bounded by the freshness window -------------------------------------------


class _Holds:
    def get(self, _id: str) -> None:
        return None


def _fake_device(*, clearing: asyncio.Event, writing: asyncio.Event) -> Any:
    async def clear_schedules(*, restore: bool = True) -> WriteOutcome:
        await clearing.wait()  # two passes over every slot: a minute or two in real life
        return WriteOutcome(WriteStatus.APPLIED, "clear", 4, "")

    async def set_mode(command: Any) -> WriteOutcome:
        await writing.wait()
        return WriteOutcome(WriteStatus.APPLIED, "set", 1, "")

    snapshot = SimpleNamespace(firmware=SimpleNamespace(manual_slots=4), mode=None, seen={})
    client = SimpleNamespace(
        snapshot=snapshot, schedule={}, clear_schedules=clear_schedules, set_mode=set_mode
    )
    return SimpleNamespace(
        name="B",
        device_id="b",
        mode_lock=asyncio.Lock(),
        holds=_Holds(),
        link=SimpleNamespace(client=client, snapshot=snapshot),
    )


WINDOW = 3 * 10 + 10  # three poll intervals and 10 s


async def _settle(actuator: _Actuator, *events: asyncio.Event) -> None:
    for event in events:
        event.set()
    assert actuator.task is not None
    await asyncio.wait({actuator.task})


async def test_a_role_queued_behind_a_clearing_holds_the_set_points_for_the_window_at_most() -> None:
    clearing, writing = asyncio.Event(), asyncio.Event()
    actuator = _Actuator(_fake_device(clearing=clearing, writing=writing), lambda d, o: None, asyncio.Lock())
    actuator.submit(Command("b", None, clear_schedules=True, reason="before night charging"))
    actuator.submit(Command("b", Role.CHARGE, -800, 900, reason="night charging"))
    await asyncio.sleep(0.01)
    assert actuator.clearing_now
    assert actuator.role is not None  # the role waits behind the clearing
    now = time.monotonic()
    # fresh readings; the clearing still runs
    soon = actuator.shows_last_write(now - 1, now - 1, now + 5, WINDOW)
    later = now + 600
    late = actuator.shows_last_write(later - 1, later - 1, later, WINDOW)
    await _settle(actuator, clearing, writing)
    assert not soon, "a queued role's command is not in the readings yet"
    assert late, "still `settling` 10 min on: every Passive set-point of the site frozen meanwhile"


async def test_a_write_that_hangs_holds_the_set_points_for_the_window_at_most() -> None:
    clearing, writing = asyncio.Event(), asyncio.Event()
    actuator = _Actuator(_fake_device(clearing=clearing, writing=writing), lambda d, o: None, asyncio.Lock())
    actuator.submit(Command("b", Role.DISCHARGE, 800, 900, reason="peak assist"))
    await asyncio.sleep(0.01)
    assert actuator.sending is not None
    now = time.monotonic()
    soon = actuator.shows_last_write(now - 1, now - 1, now + 5, WINDOW)
    later = now + WINDOW + 1
    late = actuator.shows_last_write(later - 1, later - 1, later, WINDOW)
    await _settle(actuator, clearing, writing)
    assert not soon, "a write under way is not in the readings yet"
    assert late, "a write under way for longer than the window still holds every set-point"
    # once it ends, the readings show it from the second poll after it
    ended = time.monotonic()
    assert not actuator.shows_last_write(ended + 1, ended + 1, ended + 2, WINDOW)
    assert actuator.shows_last_write(ended + 3, ended + 3, ended + 4, WINDOW)
