"""A real Home Assistant for the tests: the release scripts/homeassistant-venv caches, run as a subprocess.

It listens on 127.0.0.1 only, loads nothing but its bootstrap defaults, `http`, `api`, `websocket_api` and
`mqtt` (a config entry against the test's broker, discovery on), and never installs anything at run time
(`--skip-pip`: the install script put every requirement in place). A fresh instance is onboarded through
its own API, which returns the owner's authorization code; that is exchanged for an access token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .conftest import free_port
from .mqtt_fixtures import Broker, recording

ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / "scripts" / "homeassistant-venv"
BIRTH_TOPIC = "homeassistant/status"  # Home Assistant's default birth message: "online", not retained
# "2026-01-01 12:00:00.123 WARNING (MainThread) [homeassistant.components.mqtt.sensor] message"
RECORD = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ (?P<level>[A-Z]+) \([^)]*\) \[(?P<logger>[^\]]+)\] "
)


def installed_python() -> Path:
    """The cached venv's interpreter; skips the test, saying why, when the install script has not run."""
    try:
        result = subprocess.run(
            ["bash", str(INSTALL), "--check"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"no real Home Assistant: {error}")
    if result.returncode != 0:
        pytest.skip(f"no real Home Assistant: {result.stderr.strip() or result.stdout.strip()}")
    return Path(result.stdout.strip().splitlines()[-1]) / "bin" / "python"


@dataclass
class LogRecord:
    level: str
    logger: str
    text: str  # the whole record, continuation lines (tracebacks) included


def log_records(path: Path) -> list[LogRecord]:
    records: list[LogRecord] = []
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        match = RECORD.match(line)
        if match:
            records.append(LogRecord(match["level"], match["logger"], line))
        elif records:
            records[-1].text += "\n" + line
    return records


@dataclass
class HomeAssistant:
    python: Path
    config_dir: Path
    broker: Broker
    port: int = field(default_factory=lambda: free_port(socket.SOCK_STREAM))
    process: asyncio.subprocess.Process | None = None
    token: str = ""
    session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.config_dir / "home-assistant.log"

    def write_config(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "configuration.yaml").write_text(
            "homeassistant:\n"
            "  name: Test home\n"
            "  latitude: 51.0\n  longitude: 4.4\n  elevation: 10\n"  # set: nothing is looked up online
            "  time_zone: Europe/Brussels\n  unit_system: metric\n  currency: EUR\n  country: BE\n"
            "  language: en\n"
            f"http:\n  server_host: 127.0.0.1\n  server_port: {self.port}\n"
            "api:\n"
            "websocket_api:\n"
            "logger:\n  default: warning\n"
        )
        # Storage format 1.1, the oldest that Home Assistant still migrates: it fills in the fields that later
        # minor versions added. The MQTT entry is written as its config flow writes it (entry version 1.2,
        # discovery settings in the options).
        entry = {
            "entry_id": "01marstekwebastotestmqtt0",
            "domain": "mqtt",
            "title": "Test broker",
            "source": "user",
            "version": 1,
            "minor_version": 2,
            "data": {"broker": self.broker.host, "port": self.broker.port},
            "options": {"discovery": True, "discovery_prefix": "homeassistant"},
        }
        storage = self.config_dir / ".storage"
        storage.mkdir(exist_ok=True)
        # Only the loopback adapter: the shared mDNS instance its HTTP client sessions create then joins no
        # multicast group on the machine's network.
        (storage / "core.network").write_text(
            json.dumps({"version": 1, "key": "core.network", "data": {"configured_adapters": ["lo"]}})
        )
        (storage / "core.config_entries").write_text(
            json.dumps(
                {
                    "version": 1,
                    "minor_version": 1,
                    "key": "core.config_entries",
                    "data": {"entries": [entry]},
                }
            )
        )

    async def start(self) -> None:
        """A fresh instance: configuration, start, onboarding; returns once it announced itself on MQTT."""
        self.write_config()
        self.session = aiohttp.ClientSession()
        await self._launch(onboard=True)

    async def restart(self) -> None:
        """Stop and start again with the same configuration and storage, as after an update or a reboot."""
        await self._terminate()
        await self._launch(onboard=False)

    async def _launch(self, *, onboard: bool, timeout: float = 120) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("SUPERVISOR", "SUPERVISOR_TOKEN")}
        async with recording(self.broker, (BIRTH_TOPIC,)) as births:
            with (self.config_dir / "stdout.txt").open("ab") as out:
                self.process = await asyncio.create_subprocess_exec(
                    str(self.python),
                    "-m",
                    "homeassistant",
                    "--config",
                    str(self.config_dir),
                    "--skip-pip",
                    "--log-file",
                    str(self.log_file),
                    "--log-no-color",
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,  # its own process group: stopped with everything it started
                )
            deadline = time.monotonic() + timeout
            while not await self._answers():
                if self.process.returncode is not None:
                    raise AssertionError(
                        f"Home Assistant exited with {self.process.returncode}:\n{self.log_tail()}"
                    )
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"Home Assistant did not answer within {timeout:g} s:\n{self.log_tail()}"
                    )
                await asyncio.sleep(0.25)
            if onboard:
                await self._onboard()
            # Started, and its MQTT integration has subscribed, processed the retained discovery and said so
            # (after a 5 s quiet period): from here on it behaves as an instance that has been running.
            await births.wait_for(
                lambda: any(t == BIRTH_TOPIC and p == b"online" for t, p, _ in births.messages),
                max(1.0, deadline - time.monotonic()),
                "Home Assistant's MQTT birth message",
            )

    async def _answers(self) -> bool:
        assert self.session is not None
        with contextlib.suppress(aiohttp.ClientError):
            # Needs no authentication, so probing it logs no failed login.
            async with self.session.get(f"{self.url}/api/onboarding") as reply:
                return reply.status == 200
        return False

    async def _onboard(self) -> None:
        """Create the owner through onboarding and take an access token with the code it returns."""
        assert self.session is not None
        client_id = f"{self.url}/"
        async with self.session.post(
            f"{self.url}/api/onboarding/users",
            json={
                "client_id": client_id,
                "name": "Test owner",
                "username": "owner",
                "password": "a test password",
                "language": "en",
            },
        ) as reply:
            assert reply.status == 200, await reply.text()
            code = (await reply.json())["auth_code"]
        async with self.session.post(
            f"{self.url}/auth/token",
            data={"grant_type": "authorization_code", "code": code, "client_id": client_id},
        ) as reply:
            assert reply.status == 200, await reply.text()
            self.token = (await reply.json())["access_token"]

    async def stop(self) -> None:
        await self._terminate()
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def _terminate(self) -> None:
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)  # a clean stop, which also flushes the log
        try:
            await asyncio.wait_for(process.wait(), 60)
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    def log_files(self) -> list[Path]:
        """Its log, oldest first: at each start Home Assistant moves the previous one to `.1`."""
        older = self.log_file.with_name(self.log_file.name + ".1")
        return [path for path in (older, self.log_file) if path.exists()]

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        out = self.config_dir / "stdout.txt"
        text = text or (out.read_text(errors="replace") if out.exists() else "")
        return "\n".join(text.splitlines()[-lines:])

    @property
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def states(self) -> dict[str, dict[str, Any]]:
        assert self.session is not None
        async with self.session.get(f"{self.url}/api/states", headers=self._headers) as reply:
            assert reply.status == 200, await reply.text()
            return {state["entity_id"]: state for state in await reply.json()}

    async def call(self, domain: str, service: str, **data: Any) -> None:
        """A service call through the REST API, as a dashboard or an automation makes it."""
        assert self.session is not None
        async with self.session.post(
            f"{self.url}/api/services/{domain}/{service}", headers=self._headers, json=data
        ) as reply:
            assert reply.status == 200, f"{domain}.{service} {data}: {reply.status} {await reply.text()}"

    async def websocket(self, command: str) -> Any:
        """One WebSocket API command (the registries have no REST API); returns its result."""
        assert self.session is not None
        async with self.session.ws_connect(f"{self.url}/api/websocket", max_msg_size=64 * 2**20) as ws:
            assert (await ws.receive_json())["type"] == "auth_required"
            await ws.send_json({"type": "auth", "access_token": self.token})
            assert (await ws.receive_json())["type"] == "auth_ok"
            await ws.send_json({"id": 1, "type": command})
            reply = await ws.receive_json()
            assert reply["success"], reply
            return reply["result"]


@contextlib.asynccontextmanager
async def running_homeassistant(
    python: Path, config_dir: Path, broker: Broker
) -> AsyncIterator[HomeAssistant]:
    instance = HomeAssistant(python, config_dir, broker)
    try:
        await instance.start()
        yield instance
    finally:
        await instance.stop()
