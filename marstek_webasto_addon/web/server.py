"""The ingress panel's server: the page, a JSON API under `api/`, and server-sent events.

Every URL the page uses is relative, and the page's `<base href>` comes from the `X-Ingress-Path` header, so
the same files work under Home Assistant's ingress prefix and on a bare port. Who may come in is `guard.py`'s
business: in the add-on only the ingress proxy (172.30.32.2), standalone a Host naming this machine, the
panel's own origin for changes, and the password when one is set. Commands go through the bridge's
CommandRouter, the path MQTT commands take, so the panel can do nothing MQTT could not.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import __version__
from ..addon import diagnostics
from ..addon.controller import EngineClock, RealClock
from ..bridge.devices import BridgedDevice
from ..bridge.exposes import OFF, ON
from ..replay.own_history import MIN_QUARTERS
from ..tasks import cancel_all
from . import labels, views
from .guard import PASSWORD_ENV, Doors, Refusal, ingress_prefix
from .history import History
from .report import ReportJob
from .server_log import ServerLog, ThrottledLog

if TYPE_CHECKING:
    from ..addon.runtime import Runtime

_LOG = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
# Third-party front-end files (uPlot) come from the npm registry through package.json, never from this
# repository: in a clone `scripts/bootstrap` runs `npm ci` into node_modules/ at the repository's root, and
# the image's Dockerfile copies uPlot's dist/ files to a folder that MWA_VENDOR_DIR names. The page is served
# without them (it says the chart library is missing) when neither is there.
VENDOR_ENV = "MWA_VENDOR_DIR"
VENDOR_FILES = {"uPlot.iife.min.js": "application/javascript", "uPlot.min.css": "text/css"}
INGRESS_PROXY = "172.30.32.2"  # the Supervisor's ingress proxy, the only peer allowed in the add-on
PUSH_INTERVAL_S = 0.5  # at most two state events a second, however busy the devices are
SAMPLE_INTERVAL_S = 2.0
HEARTBEAT_S = 15.0
COMMAND_WAIT_S = 30.0
REPORT_PROFILE = "venus_e3_v150"  # the simulated battery the savings report replays (the Venus E 3.0's)
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'self'; form-action 'none'"
)


class CommandRequest(BaseModel):
    """A control from the page: which device, which expose, and the value as the control produced it."""

    model_config = ConfigDict(extra="forbid")
    device: str = Field(min_length=1, max_length=80)
    key: str = Field(min_length=1, max_length=60)
    value: str | float | bool


def payload_of(value: str | float | bool) -> str:
    """The same text an MQTT command would carry, so both take exactly the same validation."""
    if isinstance(value, bool):
        return ON if value else OFF
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class _Client:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=32)

    def send(self, event: str, data: Any) -> None:
        message = f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"
        if self.queue.full():  # a stalled browser: drop the oldest, the next state supersedes it anyway
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
        self.queue.put_nowait(message)


class Panel:
    def __init__(
        self,
        runtime: Runtime | None,
        *,
        allowed: Iterable[str] | None = None,
        hosts: Iterable[str] = (),
        password: str | None = None,
        history_path: Path | None = None,
        clock: EngineClock | None = None,
        problems: Callable[[], list[dict[str, str]]] | None = None,
        vendor: Path | None = None,
        report_path: Path | None = None,
    ) -> None:
        self.runtime = runtime  # None: the options are invalid, the panel only shows why
        # allowed: the peers of the add-on's ingress; None: standalone, where hosts and password apply.
        self.doors = Doors(allowed, hosts, password)
        self.server_log = ServerLog(_LOG)
        self._refusals: dict[str, ThrottledLog] = {}
        self.history_path = history_path
        self.clock: EngineClock = clock or RealClock()
        self.extra_problems = problems or (lambda: [])
        self.vendor = vendor if vendor is not None else vendor_dir()
        self.history = History()
        self.report = ReportJob(report_path, now=lambda: self.clock.now().astimezone())
        self.clients: set[_Client] = set()
        self._wake = asyncio.Event()
        self.app = self._build()
        self._signature = ""
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0
        if history_path is not None:
            self.history.load(history_path, self.clock.now().timestamp())
        if runtime is not None:
            self.attach(runtime)

    def attach(self, runtime: Runtime) -> None:
        """The bridge is up: from now on the panel shows it (it served the start-up problems until then)."""
        self.runtime = runtime
        runtime.listeners.append(self.on_device)
        self._wake.set()

    # lifecycle ----------------------------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> int:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0, logger=self.server_log)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._tasks = [
            asyncio.create_task(self._pusher(), name="panel-push"),
            asyncio.create_task(self._sampler(), name="panel-history"),
        ]
        _LOG.info("panel on http://%s:%d/", host, self.port)
        if self.doors.peers is None and not self.doors.has_password and not _loopback(host):
            _LOG.warning(
                "panel: anyone on the network who can reach %s:%d may control the devices; "
                "set the %s environment variable to ask for a password",
                host,
                self.port,
                PASSWORD_ENV,
            )
        return self.port

    async def stop(self) -> None:
        await self.report.stop()
        await cancel_all(self._tasks)
        for client in list(self.clients):
            client.send("bye", {})
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.history_path is not None:
            self.history.save(self.history_path)

    async def __aenter__(self) -> Panel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def on_device(self, device: BridgedDevice) -> None:
        self._wake.set()

    # the app ------------------------------------------------------------------------------------------------

    def _build(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=64 * 1024)
        app.router.add_get("/", self._index)
        app.router.add_get("/api/state", self._state)
        app.router.add_get("/api/devices", self._devices)
        app.router.add_get("/api/history", self._history)
        app.router.add_get("/api/events", self._events)
        app.router.add_get("/api/health", self._health)
        app.router.add_get("/api/diagnostics", self._diagnostics)
        app.router.add_get("/api/plan", self._plan)
        app.router.add_post("/api/command", self._command)
        app.router.add_get("/api/report", self._report_status)
        app.router.add_post("/api/report", self._report_start)
        app.router.add_delete("/api/report", self._report_cancel)
        app.router.add_get("/vendor/{name}", self._vendor)
        app.router.add_static("/static/", STATIC, append_version=False)
        return app

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        refusal = self.doors.check(request)
        response = await handler(request) if refusal is None else self._refuse(request, refusal)
        response.headers.setdefault("Content-Security-Policy", _CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        # same-origin, not no-referrer: under no-referrer a browser sends `Origin: null` on the page's own
        # POSTs, and the doors would have one witness less. Other sites still get no Referer.
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if request.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    def _refuse(self, request: web.Request, refusal: Refusal) -> web.Response:
        # Anyone who reaches the port can repeat a refused request: one line a minute for each reason.
        if refusal.reason not in self._refusals:
            self._refusals[refusal.reason] = ThrottledLog(_LOG)
        self._refusals[refusal.reason].log(
            logging.WARNING,
            "panel: refused %s %s from %s: %s",
            request.method,
            request.path,
            request.remote,
            refusal.message,
        )
        if request.path.startswith("/api/"):
            response = _error(refusal.status, refusal.message)
        else:
            response = web.Response(status=refusal.status, text=f"{refusal.status}: {refusal.message}\n")
        response.headers.update(refusal.headers)
        return response

    async def _index(self, request: web.Request) -> web.Response:
        prefix = ingress_prefix(request.headers.get("X-Ingress-Path"))
        html = (STATIC / "index.html").read_text(encoding="utf-8")
        html = html.replace("{{BASE}}", _attribute(prefix + "/")).replace("{{VERSION}}", __version__)
        html = html.replace("{{VENDOR}}", self._vendor_tags())
        return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-cache"})

    def vendor_present(self) -> bool:
        return all((self.vendor / name).is_file() for name in VENDOR_FILES)

    def _vendor_tags(self) -> str:
        """uPlot's tags when its files are there; none otherwise, and no request for them fails."""
        if not self.vendor_present():
            return "<!-- uPlot is not installed (scripts/bootstrap runs npm ci): the chart is left out -->"
        return (
            '<link rel="stylesheet" href="vendor/uPlot.min.css">\n'
            '  <script src="vendor/uPlot.iife.min.js" defer></script>'
        )

    async def _vendor(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = self.vendor / name
        if name not in VENDOR_FILES or not path.is_file():  # only the listed files, never a path
            raise web.HTTPNotFound(text="not installed: run scripts/bootstrap (npm ci)\n")
        return web.FileResponse(
            path, headers={"Content-Type": VENDOR_FILES[name], "Cache-Control": "no-cache"}
        )

    # data ---------------------------------------------------------------------------------------------------

    def problems(self) -> list[dict[str, str]]:
        found = list(self.extra_problems())
        found += [{"source": "Saved state", "text": problem} for problem in self.history.problems]
        if self.runtime is not None:
            found += self.runtime.problems()
        return found

    def state(self) -> dict[str, Any]:
        now = self.clock.now().astimezone().isoformat(timespec="seconds")
        if self.runtime is None:
            return {
                "time": now,
                "batteries": [],
                "wallboxes": [],
                "site": None,
                "optimiser": None,
                "bridge": {"version": __version__},
                "waiting": [],
                "mqtt": {},
                "problems": self.problems(),
            }
        return views.state(self.runtime, self.problems(), now)

    def meta(self) -> dict[str, Any]:
        if self.runtime is None:
            return {"devices": [], "signature": "none"}
        return views.meta(self.runtime)

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state(), dumps=_dumps)

    async def _devices(self, request: web.Request) -> web.Response:
        # The enum labels in every language; `language` is what the request's Accept-Language asks for
        # (None: none of ours), the page may know Home Assistant's own choice better.
        body = {
            **self.meta(),
            "language": labels.pick_language(request.headers.get("Accept-Language")),
            "labels": {language: labels.table(language) for language in labels.LANGUAGES},
        }
        return web.json_response(body, dumps=_dumps)

    async def _history(self, request: web.Request) -> web.Response:
        return web.json_response(self.history.series(self.clock.now().timestamp()), dumps=_dumps)

    async def _plan(self, request: web.Request) -> web.Response:
        """The planner's quarter series: prices, forecasts, planned battery power and SOC, the grid."""
        optimiser = self.runtime.optimiser if self.runtime else None
        if optimiser is None:
            return web.json_response({"status": "no optimiser: no battery configured", "steps": []})
        return web.json_response(optimiser.plan_json(), dumps=_dumps)

    async def _diagnostics(self, request: web.Request) -> web.Response:
        report = diagnostics.collect(self.runtime, self.problems())
        stamp = self.clock.now().strftime("%Y%m%d-%H%M%S")
        return web.json_response(
            report,
            dumps=lambda data: json.dumps(data, indent=1, default=str),
            headers={
                "Content-Disposition": f'attachment; filename="marstek_webasto-diagnostics-{stamp}.json"'
            },
        )

    async def _health(self, request: web.Request) -> web.Response:
        runtime = self.runtime
        devices = [d for d in runtime.devices if d.kind in ("battery", "wallbox")] if runtime else []
        mqtt = runtime.mqtt.status() if runtime and runtime.mqtt else {"connected": False}
        body = {
            "ok": runtime is not None and bool(mqtt.get("connected")),
            "version": __version__,
            "mqtt": mqtt.get("connected", False),
            "devices_online": sum(1 for d in devices if d.available),
            "devices": len(devices),
            "problems": len(self.problems()),
        }
        return web.json_response(body)

    # the savings report -------------------------------------------------------------------------------------

    async def _report_status(self, request: web.Request) -> web.Response:
        return web.json_response(self.report.status(), dumps=_dumps)

    async def _report_start(self, request: web.Request) -> web.Response:
        """Start the savings report on the add-on's recorded history (one at a time); 202 and its status."""
        if request.content_type != "application/json":
            return _error(415, "send the request as application/json")
        optimiser = self.runtime.optimiser if self.runtime else None
        if self.runtime is None or optimiser is None:
            return _error(503, "no recorded history: the optimiser runs only with a battery configured")
        history = optimiser.live.history
        known = history.known_quarters("house")
        if known < MIN_QUARTERS:
            return _error(
                409,
                f"{known} quarter-hours of house load recorded so far; the report needs at least a day "
                f"({MIN_QUARTERS}) of the add-on's history",
            )
        options = self.runtime.options
        started = self.report.start(
            history.snapshot(),
            options.tariff.model_dump(mode="json"),
            batteries=len(options.batteries),
            profile=REPORT_PROFILE,
        )
        if not started:
            return _error(409, "a savings report is already running")
        return web.json_response(self.report.status(), status=202, dumps=_dumps)

    async def _report_cancel(self, request: web.Request) -> web.Response:
        """Cancel the running report; the last finished one stays."""
        if not await self.report.cancel():
            return _error(409, "no savings report is running")
        return web.json_response(self.report.status(), dumps=_dumps)

    # commands -----------------------------------------------------------------------------------------------

    async def _command(self, request: web.Request) -> web.Response:
        # Only JSON is accepted: a cross-site form cannot send it without a CORS preflight we never answer.
        if request.content_type != "application/json":
            return _error(415, "send the command as application/json")
        try:
            command = CommandRequest.model_validate_json(await request.read())
        except ValidationError as exc:
            problem = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
            return _error(400, f"invalid command: {problem}")
        if self.runtime is None or self.runtime.mqtt is None:
            return _error(503, "the bridge is not running (see the problems above)")
        result = await self.runtime.mqtt.router.run(
            command.device, command.key, payload_of(command.value), "panel", COMMAND_WAIT_S
        )
        self._wake.set()
        if result.rejected is not None:
            return _error(400, result.rejected)
        if result.replaced:
            return web.json_response(
                {"ok": True, "status": "replaced", "detail": "a newer command took its place"}
            )
        if result.outcome is None:
            return web.json_response({"ok": True, "status": "pending", "detail": "still running"}, status=202)
        outcome = result.outcome
        body = {
            "ok": outcome.ok,
            "status": outcome.status.value,
            "command": outcome.command,
            "detail": outcome.detail,
            "clamped": outcome.clamped or None,
        }
        return web.json_response(body)

    # server-sent events -------------------------------------------------------------------------------------

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",  # proxies must pass every event on at once
            }
        )
        await response.prepare(request)
        client = _Client()
        # The heartbeat is an event, not an SSE comment: a page sees only events, and it must tell a stream
        # that went silent (a proxy or a network that lost it, no error raised) from a quiet one.
        client.send("hello", {"version": __version__, "retry_ms": 3000, "heartbeat_ms": HEARTBEAT_S * 1000})
        client.send("devices", {"signature": self.meta()["signature"]})
        client.send("state", self.state())
        self.clients.add(client)
        try:
            while True:
                try:
                    message = await asyncio.wait_for(client.queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    message = "event: ping\ndata: {}\n\n"
                await response.write(message.encode())
                if message.startswith("event: bye"):
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.clients.discard(client)
        return response

    def broadcast(self, event: str, data: Any) -> None:
        for client in list(self.clients):
            client.send(event, data)

    async def _pusher(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.clients:
                try:
                    signature = self.meta()["signature"]
                    if signature != self._signature:
                        self._signature = signature
                        self.broadcast("devices", {"signature": signature})
                    self.broadcast("state", self.state())
                except Exception:  # a bad value must not end the live updates for everyone
                    _LOG.exception("panel: could not build the state")
            await asyncio.sleep(PUSH_INTERVAL_S)

    async def _sampler(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL_S)
            if self.runtime is None or self.runtime.site is None:
                continue
            try:
                sample = self._observe(self.runtime)
            except Exception:
                _LOG.exception("panel: history sample failed")
                continue
            if sample is not None:
                self.broadcast("sample", asdict(sample))

    def _observe(self, runtime: Runtime) -> Any:
        assert runtime.site is not None
        site = runtime.site.values()
        powers = {
            "grid": site.get("grid_power"),
            "pv": site.get("pv_power"),
            "load": site.get("house_load"),
            "battery": site.get("battery_power"),
            "wallbox": site.get("wallbox_power"),
        }
        soc: dict[str, float | None] = {}
        power: dict[str, float | None] = {}
        for battery in runtime.batteries:
            if battery.device_id is None or not battery.available:
                continue
            snapshot = battery.link.snapshot
            soc[battery.device_id] = snapshot.soc
            power[battery.device_id] = snapshot.ac_power
        return self.history.observe(self.clock.now().timestamp(), powers, soc, power)


def vendor_dir() -> Path:
    """Where uPlot's files are: MWA_VENDOR_DIR (the image sets it), else node_modules/ of this clone."""
    configured = os.environ.get(VENDOR_ENV, "").strip()
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "node_modules" / "uplot" / "dist"


def _dumps(data: Any) -> str:
    return json.dumps(data, default=str)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"ok": False, "error": message}, status=status)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _attribute(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
