"""The panel's doors outside the Supervisor: the Host allow-list, the Origin check, the password, the ingress
path, and malformed HTTP from strangers. Real HTTP on 127.0.0.1; Host and Origin are headers a client
chooses, so a foreign name needs no foreign network."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import ifaddr
import pytest
from aiohttp import web
from playwright.async_api import async_playwright

from marstek_webasto_addon.web.guard import PASSWORD_ENV, split_host
from marstek_webasto_addon.web.server import INGRESS_PROXY, Panel

from .conftest import SimFactory, free_port, until
from .mqtt_fixtures import Broker, broker
from .test_panel_api import panel_setup
from .test_panel_browser import CHROMIUM_FLAGS, chromium
from .webasto_fixtures import BoxFactory, make_box

__all__ = ["broker", "make_box"]
pytestmark = pytest.mark.timeout(90)
EVIL = "evil.example"
PASSWORD = "correct horse battery staple"
COMMAND = {"device": "battery_x", "key": "mode", "value": "Auto"}


@contextlib.asynccontextmanager
async def standalone(**doors: Any) -> AsyncIterator[tuple[Panel, str, aiohttp.ClientSession]]:
    """A panel without a bridge, as `run` starts it outside the Supervisor: a command that passes the doors
    gets 503 (no bridge), one that does not gets 403 or 401."""
    panel = Panel(None, **doors)
    port = await panel.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as http:
            yield panel, f"http://127.0.0.1:{port}/", http
    finally:
        await panel.stop()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_a_foreign_host_name_reads_nothing_and_drives_nothing(
    broker: Broker, make_sim: SimFactory, make_box: BoxFactory, tmp_path: Path
) -> None:
    async with panel_setup(broker, make_sim, make_box, tmp_path) as s:
        port = s.panel.port
        device = s.battery_id(0)
        command = {"device": device, "key": "charge_now", "value": "PRESS"}
        writes = [len(b.setmode_log) for b in s.sim.batteries]
        # DNS rebinding: the page's own name, its own origin, our address
        rebound = {"Host": f"{EVIL}:{port}", "Origin": f"http://{EVIL}:{port}"}
        for path in ("api/state", "api/devices", "api/events", ""):
            async with s.http.get(s.url + path, headers=rebound) as response:
                assert response.status == 403, path
                text = await response.text()
                assert EVIL in text
                assert f"--panel-host {EVIL}" in text
        async with s.http.post(s.url + "api/command", json=command, headers=rebound) as response:
            assert response.status == 403
            body = await response.json()
            assert body["ok"] is False
            assert EVIL in body["error"]
        # the right name, but a page on another site
        cross = {"Origin": f"http://{EVIL}", "Sec-Fetch-Site": "cross-site"}
        async with s.http.post(s.url + "api/command", json=command, headers=cross) as response:
            assert response.status == 403
        await asyncio.sleep(1.0)  # a command that slipped through would have reached the battery by now
        assert [len(b.setmode_log) for b in s.sim.batteries] == writes

        # the panel's own page: same Host, same origin
        own = {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"}
        async with s.http.post(s.url + "api/command", json=command, headers=own) as response:
            body = await response.json()
            assert response.status == 200, body
            assert body["status"] in ("applied", "accepted")
        assert s.sim.batteries[0].mode == "Passive"


async def test_this_machines_names_and_addresses_are_let_in() -> None:
    hostname = socket.gethostname()
    short = hostname.split(".")[0]
    names = ["localhost", "LocalHost.", "127.0.0.1", "[::1]", hostname, f"{short}.local"]
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            names.append(f"[{ip.ip[0]}]" if isinstance(ip.ip, tuple) else ip.ip)
    async with standalone() as (_, url, http):
        for name in names:
            for host in (name, f"{name}:8099"):
                async with http.get(url + "api/state", headers={"Host": host}) as response:
                    assert response.status == 200, host
        for host in (EVIL, f"{EVIL}:8099", f"{short}.{EVIL}", "127.0.0.1.nip.io", "::1", "", "a:b:c"):
            async with http.get(url + "api/state", headers={"Host": host}) as response:
                assert response.status == 403, host


def test_host_headers_are_read_as_name_and_port() -> None:
    assert split_host("Panel.Home.Arpa.:8099") == ("panel.home.arpa", 8099)
    assert split_host("[0:0::1]:443") == ("::1", 443)
    assert split_host("192.168.1.5") == ("192.168.1.5", None)
    for bad in ("", ":80", "[::1", "[::1]x", "host:port", "host:99999", "fe80::1"):
        assert split_host(bad) is None, bad


async def test_a_configured_host_name_is_let_in() -> None:
    async with standalone(hosts=["panel.home.arpa", "10.9.8.7"]) as (_, url, http):
        for host in ("panel.home.arpa", "PANEL.home.arpa:8443", "10.9.8.7:80"):
            async with http.get(url + "api/state", headers={"Host": host}) as response:
                assert response.status == 200, host
            async with http.post(url + "api/command", json=COMMAND, headers={"Host": host}) as response:
                assert response.status == 503, host  # through the doors; no bridge behind them
        async with http.get(url + "api/state", headers={"Host": "other.home.arpa"}) as response:
            assert response.status == 403


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 503),  # no browser (curl, a script, Home Assistant's rest_command)
        ({"Origin": "http://127.0.0.1:{port}"}, 503),
        ({"Origin": "http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"}, 503),
        ({"Origin": "null", "Sec-Fetch-Site": "same-origin"}, 503),  # the browser is the witness
        ({"Referer": "http://127.0.0.1:{port}/"}, 503),
        ({"Origin": f"http://{EVIL}"}, 403),
        ({"Origin": "null"}, 403),
        ({"Origin": "http://127.0.0.1:{other}"}, 403),  # another program on this machine
        ({"Origin": "https://127.0.0.1:{port}"}, 503),
        ({"Origin": "http://127.0.0.1"}, 403),
        ({"Referer": f"http://{EVIL}/page"}, 403),
        ({"Origin": "http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-site"}, 403),
        ({"Sec-Fetch-Site": "cross-site"}, 403),
    ],
)
async def test_a_change_must_come_from_the_panels_own_origin(headers: dict[str, str], status: int) -> None:
    async with standalone() as (panel, url, http):
        sent = {k: v.format(port=panel.port, other=panel.port + 1) for k, v in headers.items()}
        async with http.post(url + "api/command", json=COMMAND, headers=sent) as response:
            assert response.status == status, await response.text()
        async with http.get(url + "api/state", headers=sent) as response:
            assert response.status == 200  # reading is not changing: CORS keeps the answer from other sites


async def test_a_password_when_one_is_set(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with standalone(password=PASSWORD) as (_, url, http):
        for path in ("api/state", "api/events", "", "static/app.js"):
            async with http.get(url + path) as response:
                assert response.status == 401, path
                assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
        for wrong in (basic("me", "correct horse"), basic("me", PASSWORD + " "), "Basic !!!", "Bearer x"):
            async with http.get(url + "api/state", headers={"Authorization": wrong}) as response:
                assert response.status == 401, wrong
                assert "password" in (await response.json())["error"]
        for user in ("me", ""):
            good = {"Authorization": basic(user, PASSWORD)}
            async with http.get(url + "api/state", headers=good) as response:
                assert response.status == 200
            async with http.post(url + "api/command", json=COMMAND, headers=good) as response:
                assert response.status == 503
        async with http.post(url + "api/command", json=COMMAND) as response:
            assert response.status == 401
        async with http.get(url + "api/health") as response:
            assert response.status == 200  # the container's HEALTHCHECK, over loopback, has no password
        async with http.get(url + "api/health", headers={"Host": EVIL}) as response:
            assert response.status == 403
    assert PASSWORD not in caplog.text
    assert "correct horse" not in caplog.text


async def test_refusals_log_one_line_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with standalone() as (_, url, http):
        for _ in range(5):
            async with http.get(url + "api/state", headers={"Host": EVIL}) as response:
                assert response.status == 403
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1
    assert refusals[0].levelno == logging.WARNING
    assert EVIL in refusals[0].getMessage()


@pytest.mark.parametrize(
    ("header", "base"),
    [
        ("/api/hassio_ingress/Ab12-_xYz", "/api/hassio_ingress/Ab12-_xYz/"),
        ("/api/hassio_ingress/Ab12/", "/api/hassio_ingress/Ab12/"),
        ("//evil.example", "/"),
        ("/api/hassio_ingress/../x", "/"),
        ("/api/hassio_ingress/a/b", "/"),
        ("/api/hassio_ingress/", "/"),
        ('/api/hassio_ingress/x"><script>alert(1)</script>', "/"),
        ("https://evil.example/api/hassio_ingress/x", "/"),
        ("/x", "/"),
    ],
)
async def test_only_the_supervisors_ingress_path_becomes_the_base(header: str, base: str) -> None:
    async with standalone() as (_, url, http), http.get(url, headers={"X-Ingress-Path": header}) as response:
        html = await response.text()
        assert f'<base href="{base}">' in html
        assert "<script>alert" not in html
        assert "evil.example" not in html


async def raw_request(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


@pytest.mark.parametrize("allowed", [None, {INGRESS_PROXY}], ids=["standalone", "add-on"])
async def test_malformed_http_is_one_short_debug_line_a_window(
    caplog: pytest.LogCaptureFixture, allowed: set[str] | None
) -> None:
    caplog.set_level(logging.DEBUG)
    duplicated = b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n"
    async with standalone(allowed=allowed) as (panel, _, _):
        for _ in range(5):
            assert (await raw_request(panel.port, duplicated)).startswith(b"HTTP/1.0 400")
        assert (await raw_request(panel.port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")).startswith(
            b"HTTP/1.0 400"
        )
        await asyncio.sleep(0.1)
        lines = [r for r in caplog.records if "malformed" in r.getMessage()]
        assert [(r.levelno, r.getMessage().count("\n")) for r in lines] == [(logging.DEBUG, 0)]
        assert "Duplicate 'Host' header" in lines[0].getMessage()
        assert "127.0.0.1" in lines[0].getMessage()

        panel.server_log.malformed.window_s = 0.0  # the next window: one line, and how many were left out
        await asyncio.sleep(0.01)
        await raw_request(panel.port, duplicated)
        lines = [r for r in caplog.records if "malformed" in r.getMessage()]
        assert len(lines) == 2
        assert "5 more" in lines[1].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [r for r in caplog.records if r.exc_info or r.exc_text]
    assert "Traceback" not in caplog.text


async def test_malformed_http_logs_nothing_when_debug_is_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with standalone() as (panel, _, _):
        await raw_request(panel.port, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        await asyncio.sleep(0.1)
    assert [r.getMessage() for r in caplog.records if r.levelno > logging.INFO or r.exc_info] == []
    assert "malformed" not in caplog.text


async def test_run_takes_the_host_names_and_the_password(tmp_path: Path) -> None:
    # Invalid options keep `run` showing the problems on its panel, and contact nothing else.
    options = tmp_path / "options.json"
    options.write_text(json.dumps({"colour": "red"}))
    port = free_port(socket.SOCK_STREAM)
    env = {k: v for k, v in os.environ.items() if k != "SUPERVISOR_TOKEN"} | {PASSWORD_ENV: PASSWORD}
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "marstek_webasto_addon", "run", "--options", str(options)),
        *("--state-dir", str(tmp_path)),
        *("--panel-port", str(port), "--panel-host", "panel.home.arpa"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/api/state"
    try:
        async with aiohttp.ClientSession() as http:

            async def answers() -> bool:
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    async with http.get(url):
                        return True
                return False

            for _ in range(150):
                if await answers():
                    break
                await asyncio.sleep(0.1)
            good = {"Host": "panel.home.arpa:8099", "Authorization": basic("me", PASSWORD)}
            async with http.get(url, headers=good) as response:
                assert response.status == 200
                assert "colour: unknown option" in json.dumps(await response.json())
            async with http.get(url, headers={"Host": "panel.home.arpa"}) as response:
                assert response.status == 401
            async with http.get(url, headers={**good, "Host": EVIL}) as response:
                assert response.status == 403
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), 20)
    assert PASSWORD not in output.decode()


@contextlib.asynccontextmanager
async def foreign_site(target: str) -> AsyncIterator[str]:
    """Another program's page on this machine (another port: same site, other origin) that tries to
    switch a battery through the panel, as any page the user visits could."""
    script = (
        f"fetch({json.dumps(target + 'api/command')}, {{method: 'POST', mode: 'no-cors', "
        f"credentials: 'include', body: {json.dumps(json.dumps(COMMAND))}, "
        "headers: {'Content-Type': 'text/plain'}})"
        ".then(() => document.title = 'sent', () => document.title = 'failed');"
    )

    async def page(request: web.Request) -> web.Response:
        return web.Response(
            text=f"<html><body><script>{script}</script></body></html>", content_type="text/html"
        )

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


async def test_in_a_real_browser(caplog: pytest.LogCaptureFixture) -> None:
    """Chromium: the panel's own page passes every door with the password, a rebound name does not, and
    another site's page cannot post a command."""
    caplog.set_level(logging.INFO)
    async with standalone(password=PASSWORD) as (panel, url, _), async_playwright() as playwright:
        rules = f"--host-resolver-rules=MAP {EVIL} 127.0.0.1"  # DNS rebinding without DNS
        browser = await playwright.chromium.launch(executable_path=chromium(), args=[*CHROMIUM_FLAGS, rules])
        try:
            context = await browser.new_context(http_credentials={"username": "me", "password": PASSWORD})
            page = await context.new_page()
            response = await page.goto(url)
            assert response is not None
            assert response.status == 200
            status = await page.evaluate(
                """async (body) => (await fetch("api/command", {method: "POST", body,
                       headers: {"Content-Type": "application/json"}})).status""",
                json.dumps(COMMAND),
            )
            assert status == 503  # through every door; no bridge behind them

            response = await page.goto(f"http://{EVIL}:{panel.port}/api/state")
            assert response is not None
            assert response.status == 403

            async with foreign_site(url) as site:
                await page.goto(site)
                await until(lambda: "refused POST /api/command" in caplog.text, 10)
            assert "same-site request may not change anything" in caplog.text
        finally:
            await browser.close()
