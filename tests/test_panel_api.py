"""The panel's JSON API, events and guard, against simulated devices, a real broker and real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from marstek_webasto_addon.addon.runtime import Runtime
from marstek_webasto_addon.devices.marstek.simulator import MarstekSimulator
from marstek_webasto_addon.devices.webasto.registers import WallboxModel
from marstek_webasto_addon.devices.webasto.simulator import WallboxSim
from marstek_webasto_addon.web import server
from marstek_webasto_addon.web.guard import Doors
from marstek_webasto_addon.web.labels import LABELS, LANGUAGES, exposed_values, label, pick_language
from marstek_webasto_addon.web.server import Panel

from .conftest import SimFactory, until
from .mqtt_fixtures import Broker, Recorder, broker, recording
from .test_bridge_mqtt import bridge
from .webasto_fixtures import BoxFactory, make_box

__all__ = ["broker", "make_box"]
pytestmark = pytest.mark.timeout(90)
P1, PV = "home/p1/power", "home/pv/power"


@dataclass
class Setup:
    runtime: Runtime
    panel: Panel
    sim: MarstekSimulator
    box: WallboxSim
    recorder: Recorder
    url: str
    http: aiohttp.ClientSession

    async def get(self, path: str, **kwargs: Any) -> Any:
        async with self.http.get(self.url + path, **kwargs) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def command(self, body: object, content_type: str = "application/json") -> tuple[int, Any]:
        data = body if isinstance(body, str) else json.dumps(body)
        async with self.http.post(
            self.url + "api/command", data=data, headers={"Content-Type": content_type}
        ) as response:
            return response.status, await response.json()

    def battery_id(self, index: int) -> str:
        device_id = self.runtime.batteries[index].device_id
        assert device_id is not None
        return device_id


def options(sim: MarstekSimulator, box_port: int) -> dict[str, Any]:
    return {
        "batteries": [
            {"name": f"Fase{'ABC'[i]}", "host": host, "port": port}
            for i, (host, port) in enumerate(sim.addresses)
        ],
        "wallboxes": [{"name": "Carport", "host": "127.0.0.1", "port": box_port, "model": "next"}],
        "marstek_bind": "127.0.0.1",
        "battery_poll_interval": 1,
        "wallbox_poll_interval": 1,
        "offline_after": 1,
        "timing": {"request_gap": 0.01, "write_gap": 0.05, "timeout": 0.3, "verify_delay": 0.2},
        "grid_source": {"type": "mqtt", "topic": P1},
        "pv_power": {"type": "mqtt", "topic": PV},
    }


@contextlib.asynccontextmanager
async def panel_setup(
    broker: Broker, make_sim: SimFactory, make_box: BoxFactory, tmp_path: Path, **panel: Any
) -> AsyncIterator[Setup]:
    sim = await make_sim(2, socs=[60.0, 30.0])
    box, server = await make_box(WallboxModel.NEXT)
    async with (
        recording(broker) as recorder,
        bridge(broker, options(sim, server.port), tmp_path) as runtime,
        aiohttp.ClientSession() as http,
    ):
        instance = Panel(runtime, history_path=tmp_path / "history.json", **panel)
        port = await instance.start("127.0.0.1", 0)
        try:
            setup = Setup(runtime, instance, sim, box, recorder, f"http://127.0.0.1:{port}/", http)
            await until(lambda: all(b.device_id and b.available for b in runtime.batteries), 15)
            yield setup
        finally:
            await instance.stop()


async def test_the_state_has_every_device_with_its_values(
    broker: Broker, make_sim: SimFactory, make_box: BoxFactory, tmp_path: Path
) -> None:
    async with panel_setup(broker, make_sim, make_box, tmp_path) as s:
        await until(lambda: s.runtime.wallboxes[0].available)
        s.sim.frozen = True  # the SOC must not move between the reading and the comparison
        await asyncio.sleep(1.5)
        state = await s.get("api/state")
        assert [b["name"] for b in state["batteries"]] == ["FaseA", "FaseB"]
        for reported, simulated in zip(state["batteries"], s.sim.batteries, strict=True):
            assert reported["soc"] == pytest.approx(simulated.physics.soc, abs=1)
            assert reported["available"] is True
            assert reported["connection"] == "online"
            assert reported["id"].startswith("battery_")
        assert state["wallboxes"][0]["name"] == "Carport"
        assert state["wallboxes"][0]["available"] is True
        assert state["site"]["batteries_online"] == 2
        assert state["optimiser"]["enabled"] == "OFF"  # never on by surprise
        assert isinstance(state["optimiser"]["roles"], dict)
        assert state["mqtt"]["connected"] is True
        assert isinstance(state["problems"], list)


async def test_the_site_shows_the_meter_the_pv_and_the_house_load(
    broker: Broker, make_sim: SimFactory, make_box: BoxFactory, tmp_path: Path
) -> None:
    async with panel_setup(broker, make_sim, make_box, tmp_path) as s:
        await s.recorder.publish(P1, "500")
        await s.recorder.publish(PV, "2000")
        await until(lambda: s.runtime.site is not None and s.runtime.site.values()["pv_power"] == 2000)
        site = (await s.get("api/state"))["site"]
        assert site["grid_power"] == 500
        battery, wallbox = site["battery_power"], site["wallbox_power"] or 0
        assert site["house_load"] == pytest.approx(500 + 2000 + battery - wallbox, abs=1)


async def test_the_device_list_is_generated_from_the_exposes(
    broker: Broker, make_sim: SimFactory, make_box: BoxFactory, tmp_path: Path
) -> None:
    async with panel_setup(broker, make_sim, make_box, tmp_path) as s:
        meta = await s.get("api/devices")
        battery = next(d for d in meta["devices"] if d["id"] == s.battery_id(0))
        exposes = {e["key"]: e for e in battery["exposes"]}
        limits = s.runtime.batteries[0].link.client.limits
        assert exposes["mode"]["component"] == "select"
        assert "Passive" in exposes["mode"]["options"]
        assert exposes["passive_power"]["minimum"] == -limits.charge_w
        assert exposes["passive_power"]["maximum"] == limits.discharge_w
        assert exposes["charge_now"]["commandable"] is True
        assert exposes["soc"]["commandable"] is False
        kinds = {d["kind"] for d in meta["devices"]}
        assert {"battery", "wallbox", "site", "optimiser", "bridge"} <= kinds
        # every enum option the live devices expose has a label in every language
        assert meta["language"] is None  # the client asked for no language
        for device in meta["devices"]:
            for expose in device["exposes"]:
                for option in expose.get("options", ()):
                    for language in LANGUAGES:
                        assert option in meta["labels"][language], (device["id"], expose["key"], option)
        dutch = await s.get("api/devices", headers={"Accept-Language": "en;q=0.5, nl-BE;q=0.9"})
        assert dutch["language"] == "nl"
        assert dutch["labels"]["nl"]["Passive"] == "Passief"
        assert dutch["devices"] == meta["devices"]  # the raw values stay what they are


def test_every_enum_option_of_the_device_tables_has_a_label_in_every_language() -> None:
    values = exposed_values()
    # the tables the values come from: marstek data points, webasto registers, the controls' and the
    # optimiser's select options, the plan's actions (a sample of each, so an empty gathering fails)
    assert {"Passive", "vehicle_locked", "suspended_ev", "min_pv", "car_first", "limit_charge"} <= values
    missing = sorted(values - LABELS.keys())
    assert not missing, f"enum values without a label in web/labels.py: {missing}"
    unused = sorted(LABELS.keys() - values)
    assert not unused, f"labels for values no table has: {unused}"
    for value, texts in LABELS.items():
        assert set(texts) == set(LANGUAGES), value
        assert all(text.strip() for text in texts.values()), value


def test_the_language_and_the_fallback_for_values_without_a_label() -> None:
    assert pick_language("nl-NL,nl;q=0.9,en-US;q=0.8") == "nl"
    assert pick_language("fr-FR, de;q=0.7, en;q=0.3") == "de"
    assert pick_language("de;q=0.2, nl;q=0.4") == "nl"
    assert pick_language("fr, *;q=0.1") is None
    assert pick_language(None) is None
    assert label("off_peak", "de") == "Niedertarif"
    assert label("my_night_rate", "nl") == "My night rate"  # a period the user named: readable


async def test_a_control_reaches_the_battery_through_the_command_path(
    broker: Broker, make_sim: SimFactory, make_box: BoxFactory, tmp_path: Path
) -> None:
    async with panel_setup(broker, make_sim, make_box, tmp_path) as s:
        device = s.battery_id(1)
        status, body = await s.command({"device": device, "key": "passive_power", "value": 800})
        assert (status, body["ok"], body["status"]) == (200, True, "applied")
        status, body = await s.command({"device": device, "key": "charge_now", "value": "PRESS"})
        assert status == 200
        assert body["ok"] is True
        assert body["status"] in ("applied", "accepted")
        battery = s.sim.batteries[1]
        assert battery.mode == "Passive"
        assert battery.passive_power == -800
        state = await s.get("api/state")
        assert state["batteries"][1]["last_command"].startswith(body["status"])


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        ("mode=Auto", "application/x-www-form-urlencoded", 415, "application/json"),
        ("{not json", "application/json", 400, "invalid command"),
        ({"device": "x", "key": "mode"}, "application/json", 400, "value"),
        ({"device": "x", "key": "mode", "value": "Auto", "extra": 1}, "application/json", 400, "extra"),
        (
            {"device": "battery_nope", "key": "mode", "value": "Auto"},
            "application/json",
            400,
            "unknown device",
        ),
        ({"device": "{0}", "key": "passive_power", "value": 99999}, "application/json", 400, "between"),
        ({"device": "{0}", "key": "mode", "value": "Turbo"}, "application/json", 400, "is not one of"),
        ({"device": "{0}", "key": "soc", "value": 50}, "application/json", 400, "has no control"),
    ],
)
async def test_bad_commands_get_a_clear_error_and_reach_no_device(
    broker: Broker,
    make_sim: SimFactory,
    make_box: BoxFactory,
    tmp_path: Path,
    body: Any,
    content_type: str,
    status: int,
    message: str,
) -> None:
    async with panel_setup(broker, make_sim, make_box, tmp_path) as s:
        if isinstance(body, dict):
            body = {k: (v.format(s.battery_id(0)) if k == "device" else v) for k, v in body.items()}
        writes = [len(b.setmode_log) for b in s.sim.batteries]
        got_status, got = await s.command(body, content_type)
        assert got_status == status
        assert got["ok"] is False
        assert message in got["error"]
        assert [len(b.setmode_log) for b in s.sim.batteries] == writes


async def test_events_push_the_state_when_a_device_changes(
    broker: Broker, make_sim: SimFactory, make_box: BoxFactory, tmp_path: Path
) -> None:
    async with (
        panel_setup(broker, make_sim, make_box, tmp_path) as s,
        s.http.get(s.url + "api/events") as response,
    ):
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = read_events(response)
        first = [await anext(events) for _ in range(3)]
        assert [name for name, _ in first] == ["hello", "devices", "state"]
        s.sim.frozen = True
        s.sim.batteries[0].physics.soc = 42.0
        async with asyncio.timeout(10):
            async for name, data in events:
                if name == "state" and data["batteries"][0]["soc"] == 42:
                    break


async def read_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    name, data = "", ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif not line and name:
            yield name, json.loads(data)
            name, data = "", ""


async def test_an_offline_battery_is_a_problem_and_refuses_commands(
    broker: Broker, make_sim: SimFactory, make_box: BoxFactory, tmp_path: Path
) -> None:
    async with panel_setup(broker, make_sim, make_box, tmp_path) as s:
        s.sim.outage(0, 60)
        await until(lambda: not s.runtime.batteries[0].available, 15)
        state = await s.get("api/state")
        assert any(p["source"] == "FaseA" and "offline" in p["text"] for p in state["problems"])
        status, body = await s.command({"device": s.battery_id(0), "key": "stop", "value": "PRESS"})
        assert status == 400
        assert "offline" in body["error"]
        health = await s.get("api/health")
        assert health["devices_online"] == 2  # one battery and the wallbox
        assert health["devices"] == 3


async def test_the_page_follows_the_ingress_path(
    broker: Broker, make_sim: SimFactory, make_box: BoxFactory, tmp_path: Path
) -> None:
    # Paths that are not the Supervisor's own form: test_panel_doors.py
    async with panel_setup(broker, make_sim, make_box, tmp_path) as s:
        async with s.http.get(s.url, headers={"X-Ingress-Path": "/api/hassio_ingress/Ab12"}) as response:
            html = await response.text()
            assert '<base href="/api/hassio_ingress/Ab12/">' in html
            assert "Content-Security-Policy" in response.headers
        for path in ("static/app.js", "static/style.css", "static/icon.svg"):
            async with s.http.get(s.url + path) as response:
                assert response.status == 200, path


async def test_only_the_allowed_peer_may_open_the_panel(
    broker: Broker, make_sim: SimFactory, make_box: BoxFactory, tmp_path: Path
) -> None:
    async with panel_setup(broker, make_sim, make_box, tmp_path, allowed={"172.30.32.2"}) as s:
        for path in ("", "api/state", "api/events", "static/app.js"):
            async with s.http.get(s.url + path) as response:
                assert response.status == 403, path
        async with s.http.post(s.url + "api/command", json={}) as response:
            assert response.status == 403
        s.panel.doors = Doors({"127.0.0.1"})
        async with s.http.get(s.url + "api/state") as response:
            assert response.status == 200


async def test_without_a_runtime_the_panel_shows_why(tmp_path: Path) -> None:
    problems = [{"source": "Options", "text": "batteries[0].host: must be an IP address or a host name"}]
    panel = Panel(None, problems=lambda: problems)
    port = await panel.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/api/state") as response:
                assert (await response.json())["problems"] == problems
            async with http.post(
                f"http://127.0.0.1:{port}/api/command", json={"device": "a", "key": "b", "value": 1}
            ) as response:
                assert response.status == 503
            async with http.get(f"http://127.0.0.1:{port}/api/health") as response:
                assert (await response.json())["ok"] is False
    finally:
        await panel.stop()


async def test_the_chart_library_is_served_from_the_npm_install_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vendor = tmp_path / "dist"
    vendor.mkdir()
    (vendor / "uPlot.iife.min.js").write_text("var uPlot = function () {};")
    (vendor / "uPlot.min.css").write_text(".uplot {}")
    (vendor / "uPlot.esm.js").write_text("export default 1;")  # there, but not one the panel serves
    (tmp_path / "secret.txt").write_text("no")
    for present in (True, False):
        panel = Panel(None, vendor=vendor if present else tmp_path / "missing")
        port = await panel.start("127.0.0.1", 0)
        url = f"http://127.0.0.1:{port}/"
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(url) as response:
                    html = await response.text()
                assert ('src="vendor/uPlot.iife.min.js"' in html) is present
                assert ('href="vendor/uPlot.min.css"' in html) is present
                async with http.get(url + "vendor/uPlot.iife.min.js") as response:
                    assert response.status == (200 if present else 404)
                    if present:
                        assert response.content_type == "application/javascript"
                        assert "Content-Security-Policy" in response.headers
                for path in ("vendor/uPlot.esm.js", "vendor/..%2Fsecret.txt", "vendor/%2E%2E/secret.txt"):
                    async with http.get(url + path) as response:
                        assert response.status == 404, path
        finally:
            await panel.stop()

    # where the files are looked for: the image's folder when set, else node_modules/ of this clone
    monkeypatch.setenv(server.VENDOR_ENV, str(vendor))
    assert server.vendor_dir() == vendor
    monkeypatch.delenv(server.VENDOR_ENV)
    root = Path(server.__file__).parents[2]
    assert server.vendor_dir() == root / "node_modules" / "uplot" / "dist"
    lock = json.loads((root / "package-lock.json").read_text())
    wanted = json.loads((root / "package.json").read_text())["dependencies"]["uplot"]
    assert lock["packages"]["node_modules/uplot"]["version"] == wanted  # an exact version, locked
