"""A real Mosquitto broker for the tests (Debian's package; scripts/test installs it), and a recorder."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import pytest

from .conftest import free_port


@dataclass
class Broker:
    port: int
    config: Path
    process: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"
    username: str | None = None  # for a broker that refuses anonymous clients
    password: str | None = None

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            pytest.fail("mosquitto is not installed (scripts/test installs it with apt-get)")
        self.process = subprocess.Popen(
            [binary, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                __import__("socket").create_connection((self.host, self.port), 0.2),
            ):
                return
            time.sleep(0.05)
        pytest.fail("mosquitto did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    port = free_port(__import__("socket").SOCK_STREAM)
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    instance = Broker(port, config)
    instance.start()
    yield instance
    instance.stop()


@contextlib.contextmanager
def password_broker(password: str, username: str = "addons") -> Iterator[Broker]:
    """Mosquitto as the broker add-on runs it: no anonymous access, only `username` with `password`."""
    port = free_port(socket.SOCK_STREAM)
    with tempfile.TemporaryDirectory() as folder:
        Path(folder).chmod(0o755)  # started as root, Mosquitto reads the file as the `mosquitto` user
        passwords = Path(folder) / "passwd"
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), username, password], check=True)
        passwords.chmod(0o644)
        config = Path(folder) / "mosquitto.conf"
        config.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous false\n"
            f"password_file {passwords}\npersistence false\n"
        )
        instance = Broker(port, config, username=username, password=password)
        instance.start()
        try:
            yield instance
        finally:
            instance.stop()


@dataclass
class Recorder:
    """Subscribes to everything and keeps the latest payload per topic (and every message)."""

    broker: Broker
    latest: dict[str, bytes] = field(default_factory=dict)
    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)
    client: aiomqtt.Client | None = None

    async def wait_for(self, predicate: object, timeout: float = 10.0, what: str = "") -> None:
        assert callable(predicate)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what or predicate}")

    def json(self, topic: str) -> object:
        import json

        return json.loads(self.latest[topic])

    async def publish(self, topic: str, payload: str, retain: bool = False) -> None:
        assert self.client is not None
        await self.client.publish(topic, payload, qos=1, retain=retain)


@contextlib.asynccontextmanager
async def recording(broker: Broker, topics: tuple[str, ...] = ("#",)) -> AsyncIterator[Recorder]:
    recorder = Recorder(broker)

    async def pump(client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            recorder.messages.append((message.topic.value, payload, message.retain))
            if payload:
                recorder.latest[message.topic.value] = payload
            else:
                recorder.latest.pop(message.topic.value, None)

    async with aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=f"recorder-{id(recorder)}",
        username=broker.username,
        password=broker.password,
    ) as client:
        recorder.client = client
        for topic in topics:
            await client.subscribe(topic, qos=1)
        task = asyncio.create_task(pump(client))
        try:
            yield recorder
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
