"""What a restart keeps under /data: where a battery moved to, the manual slots written to it, and the
month's peak the capacity tariff bills."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from marstek_webasto_addon.addon.runtime import restore_schedule
from marstek_webasto_addon.devices.marstek.client import MarstekClient
from marstek_webasto_addon.devices.marstek.commands import ManualSlot
from marstek_webasto_addon.devices.outcome import WriteStatus
from marstek_webasto_addon.optimiser.tariff import KEPT_MONTHS, CapacityTracker

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
