"""What a restart keeps under /data: where a battery moved to, the manual slots written to it, and the
month's peak the capacity tariff bills; and what a damaged or half-written file costs: only its damaged
part."""

from __future__ import annotations

import errno
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from marstek_webasto_addon.addon.runtime import restore_schedule
from marstek_webasto_addon.addon.state import KEPT_BROKEN, StateStore
from marstek_webasto_addon.devices.marstek.client import MarstekClient
from marstek_webasto_addon.devices.marstek.commands import ManualSlot
from marstek_webasto_addon.devices.outcome import WriteStatus
from marstek_webasto_addon.optimiser.tariff import KEPT_MONTHS, CapacityTracker
from marstek_webasto_addon.web.history import History
from marstek_webasto_addon.web.report import ReportJob

from .conftest import SimFactory, until
from .mqtt_fixtures import Broker, broker
from .test_bridge_mqtt import bridge

__all__ = ["broker"]
pytestmark = pytest.mark.timeout(60)
KEY = "battery:FaseA@{host}:{port}"


def options(host: str, port: int, search: str) -> dict[str, Any]:
    return {
        "batteries": [{"name": "FaseA", "host": host, "port": port}],
        "marstek_bind": "127.0.0.1",
        "battery_poll_interval": 1,
        "offline_after": 1,
        "rediscovery_targets": [search],
        "timing": {"request_gap": 0.01, "write_gap": 0.05, "timeout": 0.3, "verify_delay": 0.2},
    }


def stored(tmp_path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp_path / "state.json").read_text())
    return data


async def test_a_battery_starts_where_it_was_last_found_and_the_options_win_once_it_is_back(
    broker: Broker, make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(1)
    host, port = sim.addresses[0]
    key = KEY.format(host=host, port=port)
    # The last run followed the battery to 127.0.0.99; now it answers at its configured address again.
    state = {"identities": {key: sim.batteries[0].ble_mac}, "addresses": {key: "127.0.0.99"}}
    (tmp_path / "state.json").write_text(json.dumps(state))
    async with bridge(broker, options(host, port, host), tmp_path) as runtime:
        client = runtime.battery_links[0].client
        assert client.host == "127.0.0.99"
        await until(lambda: client.host == host and runtime.batteries[0].available, 30)
        await until(lambda: key not in stored(tmp_path).get("addresses", {}))
    assert stored(tmp_path)["identities"][key] == sim.batteries[0].ble_mac


async def test_manual_slots_written_before_a_restart_are_remembered(
    broker: Broker, make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(1)
    host, port = sim.addresses[0]
    key = KEY.format(host=host, port=port)
    slot = ManualSlot(2, "01:00", "06:00", 0b0011111, -1200)
    async with bridge(broker, options(host, port, host), tmp_path) as runtime:
        await until(lambda: runtime.batteries[0].available, 20)
        client = runtime.battery_links[0].client
        assert isinstance(client, MarstekClient)
        outcome = await client.write_slot(slot)
        assert outcome.status in (WriteStatus.APPLIED, WriteStatus.ACCEPTED)
        await until(lambda: "2" in stored(tmp_path).get("schedules", {}).get(key, {}), 10)
    async with bridge(broker, options(host, port, host), tmp_path) as runtime:
        assert runtime.battery_links[0].client.schedule[2] == slot


def test_a_damaged_schedule_entry_is_dropped_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    good = {"slot": 1, "start": "02:00", "end": "05:00", "weekdays": 127, "power": -800, "enabled": True}
    restored = restore_schedule({"1": good, "2": {"slot": 2, "power": "lots"}, "3": "junk"}, "FaseA")
    assert restored == {1: ManualSlot(1, "02:00", "05:00", 127, -800)}
    assert caplog.text.count("forgetting stored manual slot") == 2
    assert restore_schedule(None, "FaseA") == {}


def test_the_month_peak_survives_a_restart_and_a_new_month_starts_at_zero() -> None:
    tracker = CapacityTracker()
    tracker.add(datetime(2026, 3, 10, 18, 0), 0, 0)
    tracker.add(datetime(2026, 3, 10, 18, 15), 900, 4000)  # a 4 kW quarter
    tracker.add(datetime(2026, 3, 10, 18, 20), 300, 1200)
    snapshot = json.loads(json.dumps(tracker.snapshot()))  # as it goes to and from the state file

    again = CapacityTracker.restored(snapshot)
    assert again.month_peak_kw == pytest.approx(4.0)
    assert again.quarter == datetime(2026, 3, 10, 18, 15)
    assert again.quarter_import_wh == pytest.approx(100.0)  # 1200 W for 5 minutes
    again.add(datetime(2026, 3, 10, 18, 30), 600, 6000)  # the restored quarter goes on counting
    again.add(datetime(2026, 3, 10, 18, 31), 60, 0)
    assert again.month_peak_kw == pytest.approx((100 + 1000) / 250)
    again.add(datetime(2026, 4, 1, 0, 1), 60, 0)
    assert again.month_peak_kw == 0.0
    assert again.peaks[(2026, 3)] == pytest.approx(4.4)


@pytest.mark.parametrize("damaged", [None, "x", {"quarter": "yesterday"}, {"month": [2026], "peaks": {}}])
def test_an_unreadable_snapshot_starts_afresh(damaged: object) -> None:
    tracker = CapacityTracker.restored(damaged)
    assert (tracker.quarter, tracker.month_peak_kw, tracker.peaks) == (None, 0.0, {})


def test_the_snapshot_keeps_a_year_of_monthly_peaks() -> None:
    tracker = CapacityTracker(peaks={(2025 + m // 12, m % 12 + 1): float(m) for m in range(20)})
    kept = CapacityTracker.restored(tracker.snapshot()).peaks
    assert len(kept) == KEPT_MONTHS
    assert max(kept) == (2026, 8)


# damaged files ------------------------------------------------------------------------------------------

POWERS: dict[str, float | None] = {"grid": 500.0, "pv": None}
SAMPLE = {"t": 1000.0, "powers": POWERS, "soc": {"a": 55.5}, "battery_power": {"a": -300.0}}


def test_a_state_section_of_the_wrong_shape_starts_fresh_and_the_others_are_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.json"
    damaged = {
        "holds": [],
        "settings": {"battery:A": None, "battery:B": {"passive_power": 500}},
        "energy": {"totals": [], "baselines": {"a:in": 4.0}},
        "identities": {"battery:A": "AA:BB", "battery:B": 5},
        "optimiser": {"capacity": {"peaks": {}}},
    }
    path.write_text(json.dumps(damaged))
    store = StateStore(path)
    assert store.section("holds") == {}
    assert store.data["settings"] == {"battery:B": {"passive_power": 500}}
    assert store.data["energy"] == {"baselines": {"a:in": 4.0}}
    assert store.data["identities"] == {"battery:A": "AA:BB"}
    assert store.data["optimiser"] == damaged["optimiser"]
    assert json.loads((tmp_path / "state.broken").read_text()) == damaged  # one copy, as it was
    assert not (tmp_path / "state.broken.1").exists()
    assert f"state file {path}: section 'holds' is a list, not an object; starting it fresh" in caplog.text
    assert "settings['battery:A'] is null, not an object; forgetting it" in caplog.text
    assert "energy['totals'] is a list, not an object" in caplog.text
    assert "identities['battery:B'] is a number, not a string" in caplog.text
    assert len(store.problems) == 4
    store.save()
    assert StateStore(path).data == store.data  # the repaired file reads back clean


@pytest.mark.parametrize("text", ["[]", "null", "5", '{"holds": {', ""])
def test_a_state_file_that_is_no_object_is_set_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str
) -> None:
    path = tmp_path / "state.json"
    path.write_text(text)
    assert StateStore(path).data == {}
    assert (tmp_path / "state.broken").read_text() == text
    assert not path.exists()
    assert f"state file {path}: " in caplog.text
    assert "starting fresh; the file is kept as state.broken" in caplog.text


def test_earlier_damaged_state_files_are_kept_a_few_of_them(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    for n in range(KEPT_BROKEN + 1):
        path.write_text(f"damage {n}")
        StateStore(path)
    kept = [tmp_path / "state.broken", *(tmp_path / f"state.broken.{i}" for i in range(1, KEPT_BROKEN))]
    assert [p.read_text() for p in kept] == [f"damage {n}" for n in range(KEPT_BROKEN, 0, -1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in kept)  # the oldest is gone


async def test_the_bridge_starts_from_a_state_file_of_the_wrong_shape(
    broker: Broker, make_sim: SimFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim = await make_sim(1)
    host, port = sim.addresses[0]
    key = KEY.format(host=host, port=port)
    mac = sim.batteries[0].ble_mac
    state = {"holds": [], "settings": {key: None}, "energy": {"totals": []}, "identities": {key: mac}}
    (tmp_path / "state.json").write_text(json.dumps(state))
    async with bridge(broker, options(host, port, host), tmp_path) as runtime:
        await until(lambda: runtime.batteries[0].available, 20)
        assert runtime.batteries[0].settings["passive_power"] == 1000  # its settings start fresh
        shown = [p["text"] for p in runtime.problems() if p["source"] == "Saved state"]
        assert any("section 'holds' is a list" in text for text in shown), shown  # in the panel too
        runtime.state.save()
    saved = stored(tmp_path)
    assert saved["identities"][key] == mac  # the good section is kept
    assert isinstance(saved["settings"][key], dict)
    assert json.loads((tmp_path / "state.broken").read_text()) == state
    assert "section 'holds' is a list" in caplog.text


async def test_stored_battery_settings_out_of_range_go_back_to_their_defaults(
    broker: Broker, make_sim: SimFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim = await make_sim(1)
    host, port = sim.addresses[0]
    key = KEY.format(host=host, port=port)
    bad = {"passive_power": "x", "passive_duration": 99999, "depth_of_discharge": 500}
    (tmp_path / "state.json").write_text(json.dumps({"settings": {key: bad}}))
    async with bridge(broker, options(host, port, host), tmp_path) as runtime:
        device = runtime.batteries[0]
        assert device.settings == {"passive_power": 1000, "passive_duration": 30}
        assert device.link.client.soc_floor == pytest.approx(12.0)  # not 100 - 500
    assert "the stored depth_of_discharge 500 is not usable" in caplog.text


@pytest.mark.parametrize(
    "text",
    ["null", "[]", "{", json.dumps({"version": 1, "period_s": 60.0, "samples": {}}), '{"version": 0}'],
)
def test_a_chart_history_of_the_wrong_shape_is_set_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str
) -> None:
    path = tmp_path / "history.json"
    path.write_text(text)
    history = History()
    history.load(path, now=1030.0)
    assert not history.samples
    assert (tmp_path / "history.broken").read_text() == text
    assert f"chart history {path}: " in caplog.text
    assert "starting a new one; the file is kept as history.broken" in caplog.text


def test_a_damaged_chart_sample_is_dropped_and_the_others_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "history.json"
    samples = [
        SAMPLE,
        {**SAMPLE, "t": "yesterday"},
        {**SAMPLE, "powers": []},
        {**SAMPLE, "soc": {"a": "full"}},
        "junk",
    ]
    text = json.dumps({"version": 1, "period_s": 60.0, "samples": samples})
    path.write_text(text)
    history = History()
    history.load(path, now=1030.0)
    assert [s.t for s in history.samples] == [1000.0]
    series = history.series(1030.0)  # what `GET api/history` answers
    assert series["grid"] == [500.0]
    assert series["soc"] == {"a": [55.5]}
    assert "sample 1: its time is a string, not a number and 3 more; 4 of 5 samples dropped" in caplog.text
    assert (tmp_path / "history.broken").read_text() == text  # a copy: the file itself is still read


def fill_the_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)


def test_a_full_disk_keeps_the_last_chart_history_and_no_temporary_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "history.json"
    history = History()
    history.load(path, now=1030.0)  # none yet: no warning, nothing set aside
    history.observe(950.0, POWERS, {}, {})
    history.observe(1000.0, POWERS, {}, {})
    history.save(path)
    saved = path.read_text()
    history.observe(1100.0, POWERS, {}, {})
    fill_the_disk(monkeypatch)
    history.save(path)
    assert path.read_text() == saved
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json"]
    assert f"could not save the chart history to {path}: [Errno {errno.ENOSPC}]" in caplog.text


def test_a_full_disk_keeps_the_last_report_and_no_temporary_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "report.json"
    job = ReportJob(path)
    job.report, job.finished = {"days": 1}, "2026-03-01T12:00:00+01:00"
    job._save()
    saved = path.read_text()
    job.report, job.finished = {"days": 2}, "2026-03-02T12:00:00+01:00"
    fill_the_disk(monkeypatch)
    job._save()  # the report is shown all the same; only a restart would lose it
    assert path.read_text() == saved
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    assert f"savings report: could not keep it in {path}" in caplog.text
