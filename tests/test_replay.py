"""The replay: household data from the wheels, and the optimiser against the simulated batteries."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from marstek_webasto_addon.optimiser.tariff import DEFAULT_TARIFF
from marstek_webasto_addon.replay.data import HouseholdYear, household_year, load_household, load_pv, load_try
from marstek_webasto_addon.replay.harness import SCENARIOS, run

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("pv-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MWA_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def year(cache: Path) -> HouseholdYear:
    return household_year("family", region=5, kwp=5.0)


def test_household_profiles_are_the_synpro_ones() -> None:
    family = load_household("family")
    assert len(family) == 35_040
    assert sum(family) / 4000 == pytest.approx(4173.5, abs=0.5)  # kWh/yr, as the reference measured
    assert max(family) == pytest.approx(4512, abs=1)  # a real household is spiky (peak shaving needs it)
    assert sum(load_household("2_persons_over65")) / 4000 == pytest.approx(2672.2, abs=0.5)


def test_weather_and_pv(year: HouseholdYear, cache: Path) -> None:
    weather = load_try(5)
    assert len(weather["ghi"]) == 8760
    assert sum(weather["ghi"]) / 1000 == pytest.approx(960, abs=5)  # kWh/m2, Essen
    per_kwp = sum(year.pv_w) / 4000 / year.kwp
    assert 900 <= per_kwp <= 960  # Belgian specific yield, with 7 % losses
    assert list(cache.glob("pv_*.json.gz"))  # computed once, then read from the cache
    assert load_pv(5, 1.0)[35_040 // 2] == pytest.approx(year.pv_w[35_040 // 2] / 5.0)
    summer = year.local_time(96 * 172 + 52)  # 21 June, 13:00 CET = 14:00 Brussels summer time
    assert year.pv_w[96 * 172 + 52] > 2500
    assert summer.hour == 14


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_short_replay_keeps_every_invariant(year: HouseholdYear, scenario: str) -> None:
    figures = run(scenario, year, DEFAULT_TARIFF, start_quarter=96 * 150, quarters=96 * 3)
    assert figures["limit_violations"] == 0
    assert figures["soc_violations"] == 0
    assert abs(figures["energy_balance_error_kwh"]) < 0.01  # load - PV - battery = grid, every minute
    assert figures["bill_eur"] == pytest.approx(
        figures["energy_cost_eur"] + figures["capacity_cost_eur"], abs=0.02
    )
    assert 0 <= figures["self_consumption"] <= 1
    if scenario == "optimiser":
        assert figures["max_switches_per_hour"] <= 4  # no flapping
        assert figures["minutes_with_two_in_auto"] <= 1  # only the start, before the first commands
        assert figures["decisions"] > 0
    if scenario == "no_battery":
        assert figures["battery_cycles"] == 0
        assert figures["import_kwh"] - figures["export_kwh"] == pytest.approx(
            figures["load_kwh"] - figures["pv_kwh"], abs=0.05
        )


def test_batteries_lower_the_bill_and_the_optimiser_uses_cheap_night_hours(year: HouseholdYear) -> None:
    winter = {s: run(s, year, DEFAULT_TARIFF, start_quarter=96 * 14, quarters=96 * 7) for s in SCENARIOS}
    assert winter["auto_one"]["bill_eur"] < winter["no_battery"]["bill_eur"]
    assert (
        winter["optimiser"]["bill_eur"] < winter["auto_all"]["bill_eur"]
    )  # night charging at super-off-peak
    # never a higher peak than without batteries, but for their standby (3 W each at an empty floor)
    assert winter["optimiser"]["mean_monthly_peak_kw"] <= winter["no_battery"]["mean_monthly_peak_kw"] + 0.01


def test_replay_command_prints_json_and_writes_the_plot(cache: Path, tmp_path: Path) -> None:
    plot = tmp_path / "week.png"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "marstek_webasto_addon",
            "replay",
            "--days",
            "2",
            "--start",
            "2021-06-07",
            "--json",
            "--plot",
            str(plot),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={**__import__("os").environ, "MWA_CACHE": str(cache)},
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert set(figures) == {"optimiser", "no_battery", "auto_one", "auto_all"}
    for scenario in figures.values():
        for key in (
            "bill_eur",
            "energy_cost_eur",
            "capacity_cost_eur",
            "import_kwh",
            "export_kwh",
            "self_consumption",
            "mean_monthly_peak_kw",
            "battery_cycles",
            "max_switches_per_hour",
        ):
            assert key in scenario
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_date_outside_the_data_year_is_a_clear_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "marstek_webasto_addon", "replay", "--start", "2025-01-01"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "not within the data year 2021" in result.stderr
