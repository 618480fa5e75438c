"""An MQTT broker for the demo: Mosquitto when it is installed, otherwise amqtt inside this process.

Either listens on 127.0.0.1 only, on a free port, without persistence: the demo leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Literal

_LOG = logging.getLogger(__name__)
BrokerKind = Literal["auto", "mosquitto", "embedded"]
HOST = "127.0.0.1"


class BrokerError(Exception):
    pass


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None


class DemoBroker:
    def __init__(self, prefer: BrokerKind = "auto", port: int | None = None) -> None:
        self.prefer = prefer
        self.port = port or free_tcp_port()
        self.host = HOST
        self.kind = ""
        self._process: asyncio.subprocess.Process | None = None
        self._embedded: Any = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def describe(self) -> str:
        return f"{self.kind} on {self.host}:{self.port}"

    async def __aenter__(self) -> DemoBroker:
        binary = mosquitto_binary()
        if self.prefer == "mosquitto" and binary is None:
            raise BrokerError("mosquitto is not installed (apt-get install mosquitto), use --broker embedded")
        if binary is not None and self.prefer != "embedded":
            await self._start_mosquitto(binary)
        else:
            await self._start_embedded()
        await self._wait_listening()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _start_mosquitto(self, binary: str) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="mwa-demo-broker-")
        config = Path(self._dir.name) / "mosquitto.conf"
        config.write_text(f"listener {self.port} {self.host}\nallow_anonymous true\npersistence false\n")
        self._process = await asyncio.create_subprocess_exec(
            binary, "-c", str(config), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        self.kind = "Mosquitto"

    async def _start_embedded(self) -> None:
        try:
            from amqtt.broker import Broker
        except ImportError as exc:
            raise BrokerError(
                "no MQTT broker: install Mosquitto, or the demo extra (pip install -e '.[demo]')"
            ) from exc
        # amqtt reports every client session at INFO; the demo's own log says what matters.
        logging.getLogger("amqtt").setLevel(logging.WARNING)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self._embedded = Broker(config)
        await self._embedded.start()
        self.kind = "embedded amqtt broker"

    async def _wait_listening(self, timeout: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            if self._process is not None and self._process.returncode is not None:
                message = await self._process.stderr.read() if self._process.stderr else b""
                raise BrokerError(f"mosquitto exited: {message.decode(errors='replace').strip()}")
            try:
                _, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                if asyncio.get_running_loop().time() > deadline:
                    raise BrokerError(f"the broker did not listen on {self.host}:{self.port}") from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), 5)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        self._process = None
        if self._embedded is not None:
            with contextlib.suppress(Exception):  # a broker that cannot stop cleanly must not block the exit
                await self._embedded.shutdown()
            self._embedded = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
