"""What the add-on keeps under /data and how it comes back after a restart, a crash or a wrong clock.

Manual holds, the capacity tariff's month peak, the Energy dashboard's meters, the planner's quarter-hour
history, the savings report and the state file itself: each test reads a real file (tmp_path) the way the
add-on does, damaged or written under a wrong clock, or drives the restored object as the running add-on
would. Bad stored values are dropped with a warning; what is good is kept.
"""

from __future__ import annotations

import asyncio
import json
import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from marstek_webasto_addon.addon.quarter_history import QuarterHistory
from marstek_webasto_addon.addon.state import StateStore
from marstek_webasto_addon.bridge.holds import LEASE_S, ManualHolds
from marstek_webasto_addon.bridge.site_energy import CounterMeter, SiteEnergy
from marstek_webasto_addon.optimiser.tariff import CapacityTracker
from marstek_webasto_addon.web.report import ReportJob

from .conftest import SimFactory, until
from .mqtt_fixtures import Broker, broker, recording
from .optimiser_world import World, battery
from .test_bridge_mqtt import bridge
from .test_optimiser_live import P1, keep_publishing

__all__ = ["broker"]

pytestmark = pytest.mark.timeout(60)


class ManualClock:
    def __init__(self, at: datetime = datetime(2026, 11, 29, 14, 0)) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


def state_file(tmp_path: Path, text: str) -> StateStore:
    path = tmp_path / "state.json"
    path.write_text(text)
    return StateStore(path)


def hold_entry(**fields: Any) -> dict[str, Any]:
    return {
        "device_id": "battery_x",
        "command": "Passive -800 W for 30 min",
        "source": "panel",
        "passive_power": -800,
        **fields,
    }


# --- manual holds ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("until", ["Infinity", "NaN", "1e12"])
def test_a_stored_hold_with_an_endless_or_absurd_end_is_not_restored(
    tmp_path: Path, until: str, caplog: pytest.LogCaptureFixture
) -> None:
    """json.loads reads Infinity and NaN, and 1e12 is plain JSON: such a hold would never end (NaN never
    compares <= now), and `describe()` and `lease_seconds()`, which the optimiser's battery view calls every
    step, would raise. A hold whose end is not a time, or further off than anyone can set, is dropped with a
    warning; a good hold beside it is kept."""
    clock = ManualClock()
    now = clock.now().timestamp()
    text = json.dumps(
        {
            "holds": {
                "battery_x": hold_entry(started=now - 60, until=0.0),
                "battery_y": hold_entry(device_id="battery_y", started=now - 60, until=now + 1800),
            }
        }
    )
    store = state_file(tmp_path, text.replace('"until": 0.0', f'"until": {until}'))
    holds = ManualHolds(store.section("holds"), clock=clock)
    assert holds.get("battery_x") is None
    assert "forgetting a stored manual hold of battery_x" in caplog.text
    assert list(store.section("holds")) == ["battery_y"]
    kept = holds.get("battery_y")
    assert kept is not None
    assert holds.lease_seconds(kept) == LEASE_S
    assert kept.describe().startswith("manual hold until 14:30")


def test_a_hold_from_a_clock_that_was_ahead_does_not_outlast_its_duration(tmp_path: Path) -> None:
    """A 30-min Passive discharge given while the clock was a day ahead (then NTP fixed it, or the file came
    from a host with a wrong clock) keeps its duration from the restart on, not its end a day ahead: the
    battery is held, and its Passive lease renewed, for at most the person's 30 min."""
    clock = ManualClock()
    ahead = clock.now().timestamp() + 24 * 3600
    store = state_file(
        tmp_path, json.dumps({"holds": {"battery_x": hold_entry(started=ahead, until=ahead + 1800)}})
    )
    holds = ManualHolds(store.section("holds"), clock=clock)
    assert holds.get("battery_x") is not None  # the person's command survives the restart
    clock.advance(1801)
    assert holds.get("battery_x") is None, "the hold (and its Passive leases) outlast the person's 30 min"


def test_a_stored_hold_that_ended_while_the_addon_was_down_is_not_restored(tmp_path: Path) -> None:
    """A hold whose end passed during the stop is dropped on first look, and from the file."""
    clock = ManualClock()
    now = clock.now().timestamp()
    store = state_file(
        tmp_path, json.dumps({"holds": {"battery_x": hold_entry(started=now - 3600, until=now - 1)}})
    )
    holds = ManualHolds(store.section("holds"), clock=clock)
    assert holds.get("battery_x") is None
    assert holds.lease_due("battery_x") is None
    assert store.section("holds") == {}


# --- the capacity tariff's month peak --------------------------------------------------------------------

MARCH: dict[str, Any] = {
    "quarter": "2026-03-10T18:15:00",
    "quarter_import_wh": 100.0,
    "month": [2026, 3],
    "month_peak_kw": 4.0,
    "peaks": {"2026-02": 5.5, "2026-03": 4.0},
}


@pytest.mark.parametrize(
    "damage", [{"2025-05": None}, {"2025-05": "n/a"}, {"May 2025": 2.0}], ids=["null", "text", "bad-key"]
)
def test_one_damaged_past_peak_does_not_forget_this_months_peak(
    damage: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """One unreadable entry of a past month in `peaks` costs that entry alone, with a warning: the running
    month's peak (4 kW already set this month) and quarter are kept, and so are the other months."""
    saved = {**MARCH, "peaks": {**MARCH["peaks"], **damage}}
    tracker = CapacityTracker.restored(json.loads(json.dumps(saved)))
    assert tracker.month == (2026, 3)
    assert tracker.month_peak_kw == pytest.approx(4.0)
    assert tracker.quarter == datetime(2026, 3, 10, 18, 15)
    assert tracker.quarter_import_wh == pytest.approx(100.0)
    assert tracker.peaks == {(2026, 2): pytest.approx(5.5), (2026, 3): pytest.approx(4.0)}
    assert "dropping the stored peak" in caplog.text


@pytest.mark.parametrize("value", ["Infinity", "NaN", "1e300", "-5"])
def test_a_month_peak_that_is_not_a_plausible_power_is_not_restored(tmp_path: Path, value: str) -> None:
    """A stored peak or quarter energy of Infinity, 1e300, NaN or below 0 (a damaged file) is dropped: as
    the month's peak it would make the peak target infinite (no shaving at all this month), and snapshot()
    would write it back."""
    text = json.dumps(
        {"optimiser": {"capacity": {**MARCH, "quarter_import_wh": 0.0, "peaks": {"2026-03": 0.0}}}}
    )
    text = text.replace('"month_peak_kw": 4.0', f'"month_peak_kw": {value}')
    text = text.replace('"quarter_import_wh": 0.0', f'"quarter_import_wh": {value}')
    text = text.replace('"2026-03": 0.0', f'"2026-03": {value}')
    store = state_file(tmp_path, text)
    tracker = CapacityTracker.restored(store.section("optimiser")["capacity"])
    for number in (tracker.month_peak_kw, tracker.quarter_import_wh, *tracker.peaks.values()):
        assert math.isfinite(number), tracker
        assert 0 <= number < 10_000, tracker
    json.dumps(tracker.snapshot(), allow_nan=False)  # what goes back to /data is plain JSON


def test_last_months_peak_is_not_this_months_after_a_restart_without_a_meter_reading() -> None:
    """The add-on stopped in June with a 6 kW peak and starts on 1 July while the grid meter is silent (a
    common reason for the restart): the month's peak is July's (0 kW) from the first step, in the status,
    the MQTT `month_peak`, the car's quarter budget and the planner's floor; June's peak is kept as June's."""
    world = World([battery("A", 50)], now=datetime(2026, 7, 1, 0, 5), grid_age=None)
    world.engine.capacity = CapacityTracker.restored(
        {
            "quarter": "2026-06-30T23:45:00",
            "quarter_import_wh": 100.0,
            "month": [2026, 6],
            "month_peak_kw": 6.0,
            "peaks": {"2026-06": 6.0},
        }
    )
    results = world.run(600, every=60)
    assert results[-1].status.month_peak_kw == 0.0, "June's peak shown as July's"
    assert world.engine.capacity.peaks[(2026, 6)] == pytest.approx(6.0)  # June's peak itself is kept


def test_the_month_peak_survives_a_restart_through_the_state_file(tmp_path: Path) -> None:
    """The snapshot goes through a real file and back intact."""
    tracker = CapacityTracker()
    tracker.add(datetime(2026, 3, 10, 18, 0), 0, 0)
    tracker.add(datetime(2026, 3, 10, 18, 15), 900, 4000)
    path = tmp_path / "state.json"
    store = StateStore(path)
    store.section("optimiser")["capacity"] = tracker.snapshot()
    store.save()
    again = CapacityTracker.restored(StateStore(path).section("optimiser")["capacity"])
    assert again.month_peak_kw == pytest.approx(4.0)
    assert again.peaks == {(2026, 3): pytest.approx(4.0)}


# --- the energy meters -----------------------------------------------------------------------------------


def test_choosing_another_battery_as_grid_meter_does_not_make_grid_import_jump(tmp_path: Path) -> None:
    """The grid meter's counter baselines are kept per meter. The user picks battery B instead of A as grid
    meter and restarts: B's first reading of its own lifetime counter is its baseline, not compared with
    A's last one (which would add the difference, here 7000 kWh, to "Grid energy imported" in one step)."""
    meter = {"import": 5000.0, "export": 300.0}
    path = tmp_path / "state.json"
    store = StateStore(path)
    a = CounterMeter("battery:A", lambda: (meter["import"], meter["export"]))
    energy = SiteEnergy(store.section("energy"), [], lambda: None, a)
    energy.update(0)
    meter["import"] = 5001.0
    energy.update(10)
    store.save()
    assert energy.totals()["grid_import_energy"] == pytest.approx(1.0)

    other = {"import": 12000.0, "export": 900.0}  # battery B's CT: its own lifetime counters
    again = StateStore(path)
    b = CounterMeter("battery:B", lambda: (other["import"], other["export"]))
    energy = SiteEnergy(again.section("energy"), [], lambda: None, b)
    energy.update(0)
    other["import"] = 12000.5
    energy.update(10)
    assert energy.totals()["grid_import_energy"] == pytest.approx(1.5, abs=1e-3)
    assert energy.totals()["grid_export_energy"] == pytest.approx(0.0, abs=1e-3)


def test_energy_counted_by_integration_is_not_counted_again_by_a_stale_counter_baseline(
    tmp_path: Path,
) -> None:
    """The grid source goes battery -> mqtt (integrated) -> battery, a restart each time. The battery's
    counter baselines are dropped when the grid meter gives power readings, so the counter does not add
    again what the integration already counted: 1 kWh imported shows as 1 kWh, not 2."""
    counters: list[float | None] = [1000.0, 0.0]
    a = CounterMeter("battery:A", lambda: (counters[0], counters[1]))
    path = tmp_path / "state.json"
    store = StateStore(path)
    SiteEnergy(store.section("energy"), [], lambda: None, a).update(0)
    store.save()

    store = StateStore(path)  # grid source: an MQTT power reading, no counters
    energy = SiteEnergy(store.section("energy"), [], lambda: 1000.0)
    for minute in range(61):
        energy.update(minute * 60.0)
    store.save()
    assert energy.totals()["grid_import_energy"] == pytest.approx(1.0, abs=1e-3)

    counters[0] = 1001.0  # the CT counted the same hour
    store = StateStore(path)  # back to the battery's CT
    energy = SiteEnergy(store.section("energy"), [], lambda: None, a)
    energy.update(0)
    assert energy.totals()["grid_import_energy"] == pytest.approx(1.0, abs=1e-3)
    counters[0] = 1001.5  # from here on the counter counts
    energy.update(10)
    assert energy.totals()["grid_import_energy"] == pytest.approx(1.5, abs=1e-3)


def test_energy_totals_read_back_from_a_real_file_never_fall(tmp_path: Path) -> None:
    """Totals and baselines go through state.json, and a counter that fell only rebases."""
    values = {"ac_input_energy": 100.0, "ac_output_energy": 50.0}
    from marstek_webasto_addon.bridge.site_energy import BatterySource
    from marstek_webasto_addon.devices.marstek.decode import BatterySnapshot

    source = BatterySource("a", lambda: BatterySnapshot(values=dict(values)), lambda: True)
    path = tmp_path / "state.json"
    store = StateStore(path)
    energy = SiteEnergy(store.section("energy"), [source], lambda: None)
    energy.update(0)
    values["ac_input_energy"] = 102.0
    energy.update(10)
    store.save()
    before = energy.totals()
    values["ac_input_energy"] = 1.0  # a reset while the add-on was down
    again = SiteEnergy(StateStore(path).section("energy"), [source], lambda: None)
    assert again.totals() == before
    again.update(0)
    assert all(again.totals()[k] >= v for k, v in before.items())


def test_the_energy_meters_show_only_totals_that_reached_the_disk() -> None:
    """With `hold_back` (the add-on's setting) Home Assistant is shown the totals last kept on disk, never
    more: after a crash the meters go on from there, so none falls below what it showed."""
    energy = SiteEnergy({}, [], lambda: 3600.0, hold_back=True)
    energy.update(0)
    energy.update(60)
    assert energy.counted()["grid_import_energy"] == pytest.approx(0.06)
    assert energy.totals()["grid_import_energy"] == 0.0  # not on disk yet
    kept = energy.counted()
    energy.update(120)
    energy.kept(kept)
    assert energy.totals()["grid_import_energy"] == pytest.approx(0.06)


@pytest.mark.parametrize(
    ("kept", "expected"),
    [
        ('{"totals": {"grid_import_energy": 7.0}}', 7.0),
        ('{"totals": {"grid_import_energy": 3.0}}', 5.0),
        ("{", 5.0),
    ],
)
def test_the_later_of_the_two_saved_energy_sections_is_used(
    tmp_path: Path, kept: str, expected: float
) -> None:
    """The energy meters are saved often in energy.json and with everything else in state.json: at the
    start the later copy wins (totals only grow, so it has counted more); a damaged energy.json is passed
    over."""
    from marstek_webasto_addon.addon.options import parse_options
    from marstek_webasto_addon.addon.runtime import ENERGY_FILE, Runtime
    from marstek_webasto_addon.bridge.mqtt import BrokerSettings

    path = tmp_path / "state.json"
    path.write_text(json.dumps({"energy": {"totals": {"grid_import_energy": 5.0}}}))
    (tmp_path / ENERGY_FILE).write_text(kept)
    runtime = Runtime(
        parse_options({"mqtt": {"host": "127.0.0.1", "port": 1}}),
        StateStore(path),
        BrokerSettings("127.0.0.1", 1),
    )
    assert runtime._energy_section()["totals"]["grid_import_energy"] == expected


# --- the planner's quarter-hour history -----------------------------------------------------------------


def test_a_history_from_a_clock_that_was_ahead_does_not_stop_learning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A day recorded right, then two hours while the clock was two days ahead, saved, and the clock fixed.
    The quarters from the wrong clock are dropped (with a warning) at the first new quarter: kept, they
    would stop learning for two days and shift the forecast by two days. The day recorded right is kept
    where it was, and the readings after the restart are learned at once."""
    now = datetime(2026, 3, 10, 12, 0)
    history = QuarterHistory()

    def observe(target: QuarterHistory, start: datetime, hours: float, watts: float) -> datetime:
        t = start
        while t < start + timedelta(hours=hours):
            t += timedelta(seconds=60)
            target.observe(t, 60, {"house": watts})
        return t

    observe(history, now - timedelta(days=1), 22, 500.0)
    observe(history, now - timedelta(hours=2) + timedelta(days=2), 2, 900.0)  # the clock two days ahead
    again = QuarterHistory.restored(json.loads(json.dumps(history.snapshot())))
    known = again.known_quarters("house")
    t = observe(again, now, 6, 800.0)
    assert "recorded while the clock was" in caplog.text
    assert again.known_quarters("house") == known - 8 + 6 * 4  # less the two hours ahead, plus six new
    series = list(again.series("house", t))
    assert series[-6 * 4 :] == pytest.approx([0.8] * 6 * 4)
    assert all(math.isnan(kw) for kw in series[-6 * 4 - 8 : -6 * 4])  # 10:00 to 12:00: the add-on was down
    assert series[-6 * 4 - 8 - 22 * 4 : -6 * 4 - 8] == pytest.approx([0.5] * 22 * 4)  # the day, where it was


def test_a_clock_behind_for_a_few_minutes_or_by_weeks_does_not_wipe_the_history(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A board without a clock that boots before NTP: a few quarter-hours far behind what was recorded, then
    the right time again. Nothing recorded is dropped for it; nor for a clock weeks behind (more than any
    clock that was ahead and got fixed): the history is kept and the log says to check the clock."""
    now = datetime(2026, 3, 10, 12, 0)

    def observe(target: QuarterHistory, start: datetime, hours: float, watts: float) -> datetime:
        t = start
        while t < start + timedelta(hours=hours):
            t += timedelta(seconds=60)
            target.observe(t, 60, {"house": watts})
        return t

    history = QuarterHistory()
    observe(history, now - timedelta(days=1), 24, 500.0)
    known = history.known_quarters("house")
    observe(history, now - timedelta(days=3), 0.5, 900.0)  # half an hour on a clock three days behind
    observe(history, now, 1, 800.0)  # NTP: the right time again
    assert history.known_quarters("house") >= known + 3
    assert "recorded while the clock was" not in caplog.text
    weeks_behind = QuarterHistory()
    observe(weeks_behind, now - timedelta(days=1), 24, 500.0)
    observe(weeks_behind, now - timedelta(days=30), 3, 900.0)
    assert weeks_behind.known_quarters("house") == known
    assert "check the system clock" in caplog.text


# --- the savings report ----------------------------------------------------------------------------------


@pytest.mark.parametrize("report", ['"x"', "null", "[1, 2]", "5"])
def test_a_saved_report_of_the_wrong_shape_is_not_shown_as_done(
    tmp_path: Path, report: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A saved `report` that is a string, null, a list or a number is not a finished report: the panel
    renders a report's fields (report.scenarios, report.notes) and would fail on it. It is logged and the
    job starts idle."""
    path = tmp_path / "report.json"
    path.write_text(f'{{"finished": "2026-03-01T12:00:00+01:00", "report": {report}}}')
    status = ReportJob(path).status()
    assert status["state"] == "idle", status
    assert status["report"] is None, status
    assert "holds no report" in caplog.text


def test_a_report_file_cut_short_is_ignored_and_replaced(tmp_path: Path) -> None:
    """A truncated report.json is logged and ignored, not fatal."""
    path = tmp_path / "report.json"
    path.write_text('{"finished": "2026-03-01", "report": {"days"')
    assert ReportJob(path).status()["state"] == "idle"


# --- the state file ---------------------------------------------------------------------------------------


def test_a_state_file_cut_short_mid_write_by_an_older_writer_costs_only_itself(tmp_path: Path) -> None:
    """A truncated state.json is set aside whole (nothing half-read is trusted) and the add-on starts; the
    damaged copy is kept for a person."""
    good = {"holds": {}, "energy": {"totals": {"grid_import_energy": 12.5}}}
    text = json.dumps(good)
    store = state_file(tmp_path, text[: len(text) // 2])
    assert store.data == {}
    assert store.problems
    assert "unreadable" in store.problems[0]
    assert (tmp_path / "state.broken").read_text() == text[: len(text) // 2]


def test_saving_twice_from_two_stores_leaves_one_whole_file(tmp_path: Path) -> None:
    """Two writers on the same file: the last rename wins, the file is always whole JSON and no temporary
    file is left."""
    path = tmp_path / "state.json"
    first, second = StateStore(path), StateStore(path)
    first.section("holds")["a"] = {"x": 1}
    second.section("energy")["totals"] = {"grid_import_energy": 1.0}
    for _ in range(50):
        first.save()
        second.save()
        json.loads(path.read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


# --- live: a crash (kill -9) and the Energy dashboard's grid import ---------------------------------------


def saved_files(folder: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in folder.iterdir() if path.suffix == ".json"}


def put_back(folder: Path, files: dict[Path, bytes]) -> None:
    for path in folder.iterdir():
        if path.suffix == ".json":
            path.unlink()
    for path, text in files.items():
        path.write_bytes(text)


async def test_grid_import_does_not_fall_after_a_crash(
    broker: Broker, make_sim: SimFactory, tmp_path: Path
) -> None:
    """After a kill -9 or a power cut, a grid meter fed by power readings (MQTT/entity, no counters) comes
    back with the totals last saved: Home Assistant's `total_increasing` sensor must never show less than
    it showed before. The energy meters are saved often, in a small file of their own, and only totals
    that reached the disk are shown. Simulated here: the state directory as it is on disk at the "crash"
    is what the next start reads."""
    sim = await make_sim(1, socs=[60.0])
    options = {
        "batteries": [{"name": "FaseA", "host": sim.addresses[0][0], "port": sim.addresses[0][1]}],
        "marstek_bind": "127.0.0.1",
        "battery_poll_interval": 1,
        "timing": {"request_gap": 0.01, "write_gap": 0.05, "timeout": 0.3, "verify_delay": 0.2},
        "grid_source": {"type": "mqtt", "topic": P1, "unit": "kW"},
        "optimiser": {"enabled": False},
    }
    stop = asyncio.Event()
    async with recording(broker) as recorder, bridge(broker, options, tmp_path) as runtime:
        meter = asyncio.create_task(keep_publishing(recorder, 3.6, stop))  # 3.6 kW: 1 Wh a second
        try:
            assert runtime.site is not None
            site = runtime.site
            await until(lambda: site.state().get("grid_import_energy", 0) >= 0.01, 40)
            shown = site.state()["grid_import_energy"]  # what Home Assistant has seen by now
            on_disk = saved_files(tmp_path)  # what a kill -9 now leaves
        finally:
            stop.set()
            await meter
    put_back(tmp_path, on_disk)
    async with bridge(broker, options, tmp_path) as again:
        assert again.site is not None
        first = again.site.state()["grid_import_energy"]  # published as soon as the bridge connects
        assert first >= shown, f"grid import went down from {shown} to {first} kWh after the crash"


def test_a_full_disk_keeps_the_addon_running_and_says_so_until_a_save_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save that fails (ENOSPC) does not raise into the caller (a person's command, a hold), the panel's
    problems say so, the last good file stays whole, and the problem clears once a save succeeds."""
    import errno
    import os

    from marstek_webasto_addon.addon.options import parse_options
    from marstek_webasto_addon.addon.runtime import Runtime
    from marstek_webasto_addon.bridge.mqtt import BrokerSettings

    path = tmp_path / "state.json"
    path.write_text(json.dumps({"holds": {}}))
    runtime = Runtime(
        parse_options({"mqtt": {"host": "127.0.0.1", "port": 1}}),
        StateStore(path),
        BrokerSettings("127.0.0.1", 1),
    )
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    runtime.holds.start("battery_x", "Auto", "panel", 600)  # saves: must not raise
    assert any("could not save state.json" in p["text"] for p in runtime.problems())
    assert json.loads(path.read_text()) == {"holds": {}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    monkeypatch.setattr(os, "fsync", real_fsync)
    runtime.holds.release("battery_x")
    assert not any("could not save" in p["text"] for p in runtime.problems())
