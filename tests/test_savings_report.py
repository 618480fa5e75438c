"""The savings report on a recorded demo history: the demo home's seeded past, three days over a month end."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from marstek_webasto_addon.addon.quarter_history import QuarterHistory
from marstek_webasto_addon.cli import main
from marstek_webasto_addon.demo.world import DemoWorld
from marstek_webasto_addon.optimiser.tariff import DEFAULT_TARIFF
from marstek_webasto_addon.replay.own_history import (
    REPORTED,
    HistoryError,
    from_snapshot,
    prepare,
    savings_report,
)
from marstek_webasto_addon.web import server
from marstek_webasto_addon.web.server import Panel

from .conftest import SimFactory, until
from .mqtt_fixtures import Broker, broker
from .test_panel_api import Setup, panel_setup
from .webasto_fixtures import BoxFactory, make_box

__all__ = ["broker", "make_box"]
pytestmark = pytest.mark.timeout(90)

DEMO_START = datetime(2025, 12, 2, 6, 0)  # three days back: 29 November 06:00 .. 2 December 06:00
DAYS = 3


async def seeded_history(days: int = DAYS, start: datetime = DEMO_START) -> dict[str, Any]:
    """The quarter history the demo seeds its state with (`DemoWorld.past_weeks`), as under /data."""
    world = DemoWorld(speed=1, start=start, sim_port=0)  # not started: only its household is used
    return world.past_weeks(days=days)


def demo_history(days: int = DAYS, start: datetime = DEMO_START) -> dict[str, Any]:
    return asyncio.run(seeded_history(days, start))


def scratch_files(folder: Path) -> list[Path]:
    return list(folder.glob("report-*.json"))


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    snapshot = demo_history()
    steps: list[float] = []
    result = savings_report(from_snapshot(snapshot), DEFAULT_TARIFF, batteries=3, progress=steps.append)
    result["_progress"] = steps
    return result


def test_the_report_covers_the_recorded_days_and_months(report: dict[str, Any]) -> None:
    assert report["from"] == "2025-11-29T06:00"
    assert report["to"] == "2025-12-02T06:00"
    assert report["quarters"] == DAYS * 96
    assert report["notes"] == []
    assert report["months"] == ["2025-11", "2025-12"]
    assert set(report["scenarios"]) == set(REPORTED)
    steps = report["_progress"]
    assert steps[0] == 0.0
    assert steps[-1] == 1.0
    assert steps == sorted(steps)
    assert len(steps) > 5


def test_no_battery_is_above_the_bound_and_every_scenario_too(report: dict[str, Any]) -> None:
    scenarios = report["scenarios"]
    bound = scenarios["bound"]["bill_eur"]
    assert scenarios["no_battery"]["bill_eur"] > bound
    for name in ("auto_all", "rules", "optimiser"):
        assert scenarios[name]["bill_eur"] >= bound - 0.01, name
    assert report["achievable_eur"] == round(scenarios["no_battery"]["bill_eur"] - bound, 2)


def test_each_bill_is_the_sum_of_its_months(report: dict[str, Any]) -> None:
    for name, result in report["scenarios"].items():
        months = result["months"]
        assert list(months) == report["months"], name
        assert result["bill_eur"] == pytest.approx(sum(m["bill_eur"] for m in months.values()), abs=1e-9)
        assert result["energy_eur"] == pytest.approx(sum(m["energy_eur"] for m in months.values()), abs=1e-9)
        for month in months.values():
            assert month["bill_eur"] == pytest.approx(month["energy_eur"] + month["capacity_eur"], abs=1e-9)
        # a partial month pays its share of the capacity tariff: November's 1.75 days of 30
        assert months["2025-11"]["capacity_eur"] == pytest.approx(
            DEFAULT_TARIFF.capacity_price
            / 12
            * max(DEFAULT_TARIFF.capacity_floor_kw, months["2025-11"]["peak_kw"])
            * 1.75
            / 30,
            abs=0.006,
        )


def test_the_shares_are_of_the_achievable_saving(report: dict[str, Any]) -> None:
    scenarios = report["scenarios"]
    baseline, best = scenarios["no_battery"]["bill_eur"], scenarios["bound"]["bill_eur"]
    for _name, result in scenarios.items():
        assert result["saving_eur"] == pytest.approx(baseline - result["bill_eur"], abs=1e-9)
        assert result["share"] == pytest.approx((baseline - result["bill_eur"]) / (baseline - best), abs=1e-4)
    assert scenarios["no_battery"]["share"] == 0
    assert scenarios["bound"]["share"] == 1


def test_gaps_are_filled_from_the_nearest_day_and_said() -> None:
    snapshot = demo_history()
    house = snapshot["watts"]["house"]
    for quarter in range(100, 108):  # two hours of the second day not seen
        house[quarter] = None
    snapshot["watts"]["pv"] = [None] * len(house)  # and no PV meter at all
    snapshot["watts"]["house"] = [None] * 5 + house[5:]  # the add-on started later: trimmed off
    prepared = prepare(from_snapshot(snapshot))
    assert len(prepared.year.load_w) == DAYS * 96 - 5
    assert prepared.filled["house"] == 8
    # quarter 100 of the recording (95 once trimmed): the day before was not seen either, the day after was
    assert prepared.year.load_w[95] == pytest.approx(house[196])
    assert prepared.year.load_w[100] == pytest.approx(house[9])  # recorded 105: the day before
    assert prepared.year.pv_w == [0.0] * (DAYS * 96 - 5)
    assert any("no pv recorded" in note for note in prepared.notes)
    assert any("8 of 283 quarter-hours were not recorded" in note for note in prepared.notes)


def test_too_little_history_is_refused() -> None:
    snapshot = demo_history(days=1)
    snapshot["watts"]["house"][:10] = [None] * 10
    with pytest.raises(HistoryError, match="86 quarter-hours of house load recorded"):
        prepare(from_snapshot(snapshot))
    with pytest.raises(HistoryError, match="no recorded quarter-hours"):
        from_snapshot({"watts": {}})


def test_the_cli_prints_the_table_from_a_state_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snapshot = demo_history(days=1, start=datetime(2025, 11, 16, 12, 0))
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"optimiser": {"history": snapshot}}))
    options = tmp_path / "options.json"
    options.write_text(json.dumps({"batteries": [{"name": "A"}, {"name": "B"}], "tariff": {}}))
    out = tmp_path / "report.json"
    assert main(["report", "--history", str(state), "--tariff", str(options), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    written = json.loads(out.read_text())
    assert written["batteries"] == 2
    assert written["days"] == 1
    assert "Savings report: recorded history 2025-11-15 12:00 to 2025-11-16 12:00" in printed
    for name, label in (("no_battery", "no battery"), ("optimiser", "planner"), ("bound", "best possible")):
        line = next(line for line in printed.splitlines() if line.startswith(label))
        assert f"{written['scenarios'][name]['bill_eur']:.2f}" in line
    assert main(["report", "--history", str(tmp_path / "missing.json")]) == 2
    assert "error: cannot read" in capsys.readouterr().err


def test_the_filled_values_are_finite(report: dict[str, Any]) -> None:
    for result in report["scenarios"].values():
        assert all(math.isfinite(m["bill_eur"]) for m in result["months"].values())


# the panel's background job ------------------------------------------------------------------------------


async def report_status(setup: Setup) -> Any:
    return await setup.get("api/report")


async def post_report(setup: Setup, content_type: str = "application/json") -> tuple[int, Any]:
    async with setup.http.post(
        setup.url + "api/report", data="{}", headers={"Content-Type": content_type}
    ) as response:
        return response.status, await response.json()


async def test_the_panel_runs_the_report_in_the_background_and_keeps_it(
    broker: Broker, make_sim: SimFactory, make_box: BoxFactory, tmp_path: Path
) -> None:
    kept = tmp_path / "report.json"
    async with panel_setup(broker, make_sim, make_box, tmp_path, report_path=kept) as setup:
        assert (await report_status(setup))["state"] == "idle"
        # a fresh add-on has no history yet: said, nothing started
        status, body = await post_report(setup)
        assert status == 409
        assert "quarter-hours of house load recorded so far" in body["error"]
        assert (await post_report(setup, "text/plain"))[0] == 415
        optimiser = setup.runtime.optimiser
        assert optimiser is not None
        optimiser.live.history = QuarterHistory.restored(await seeded_history(days=2))
        status, body = await post_report(setup)
        assert status == 202
        assert body["state"] == "running"
        assert (await post_report(setup))[0] == 409  # one at a time
        seen: list[float] = []
        for _ in range(1200):
            current = await report_status(setup)
            if current["state"] != "running":
                break
            seen.append(current["progress"])
            await asyncio.sleep(0.05)
        assert current["state"] == "done", current["error"]
        assert seen == sorted(seen)
        assert any(0 < p < 1 for p in seen)  # progress while it ran
        report = current["report"]
        assert report["batteries"] == 2  # the site's own count
        assert report["days"] == 2
        assert report["scenarios"]["no_battery"]["bill_eur"] >= report["scenarios"]["bound"]["bill_eur"]
        assert not scratch_files(tmp_path)  # the job's scratch files are gone
    # after a restart the last report is still there
    again = Panel(None, report_path=kept)
    assert again.report.status()["state"] == "done"
    assert again.report.status()["report"] == report


async def test_a_failing_report_says_why_and_keeps_the_last_one(
    broker: Broker,
    make_sim: SimFactory,
    make_box: BoxFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kept = tmp_path / "report.json"
    kept.write_text(json.dumps({"finished": "2025-11-16T12:00:00+01:00", "report": {"days": 1}}))
    monkeypatch.setattr(server, "REPORT_PROFILE", "no_such_battery")
    async with panel_setup(broker, make_sim, make_box, tmp_path, report_path=kept) as setup:
        assert (await report_status(setup))["report"] == {"days": 1}
        optimiser = setup.runtime.optimiser
        assert optimiser is not None
        optimiser.live.history = QuarterHistory.restored(await seeded_history(days=1))
        assert (await post_report(setup))[0] == 202
        await until(lambda: not setup.panel.report.running, 60)
        current = await report_status(setup)
        assert current["state"] == "failed"
        assert "invalid choice: 'no_such_battery'" in current["error"]
        assert current["report"] == {"days": 1}


async def test_a_running_report_can_be_cancelled_and_the_last_one_stays(
    broker: Broker, make_sim: SimFactory, make_box: BoxFactory, tmp_path: Path
) -> None:
    kept = tmp_path / "report.json"
    kept.write_text(json.dumps({"finished": "2025-11-16T12:00:00+01:00", "report": {"days": 1}}))
    async with panel_setup(broker, make_sim, make_box, tmp_path, report_path=kept) as setup:
        async with setup.http.delete(setup.url + "api/report") as response:
            assert response.status == 409  # nothing runs: nothing to cancel
            assert "no savings report is running" in (await response.json())["error"]
        optimiser = setup.runtime.optimiser
        assert optimiser is not None
        optimiser.live.history = QuarterHistory.restored(await seeded_history(days=14))
        assert (await post_report(setup))[0] == 202
        job = setup.panel.report
        await until(lambda: job._process is not None, 30)  # the replay's own process has started
        process = job._process
        assert process is not None
        async with setup.http.delete(setup.url + "api/report") as response:
            assert response.status == 200
            body = await response.json()
        assert body["state"] == "cancelled"
        assert body["error"] == ""
        assert body["report"] == {"days": 1}  # the last finished report is kept, with its time
        assert body["finished"] == "2025-11-16T12:00:00+01:00"
        assert process.returncode is not None  # the replay's process is gone
        assert not job.running
        assert not scratch_files(tmp_path)
        assert json.loads(kept.read_text())["report"] == {"days": 1}
        assert (await post_report(setup))[0] == 202  # and it can be run again
        assert await job.cancel()
