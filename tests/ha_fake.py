"""A small fake Home Assistant: its WebSocket API on 127.0.0.1, as the Supervisor proxies it to an add-on.

It speaks the real protocol: auth_required/auth/auth_ok/auth_invalid, increasing ids, ping/pong,
subscribe_entities with the compressed `a`/`c`/`r` messages (the diff is computed the way Core's
websocket_api/messages.py does), subscribe_events state_changed, get_states, call_service with
return_response for weather.get_forecasts, and the Energy dashboard's energy/solar_forecast with
config_entries/get. The test changes states, drops connections and restarts it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

HA_VERSION = "2025.11.3"


@dataclass
class FakeState:
    state: str
    attributes: dict[str, Any]
    last_changed: float  # epoch seconds, as Core keeps them
    last_updated: float

    def compressed(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "s": self.state,
            "a": self.attributes,
            "c": uuid.uuid4().hex,
            "lc": self.last_changed,
        }
        if self.last_updated != self.last_changed:
            item["lu"] = self.last_updated
        return item

    def full(self, entity_id: str) -> dict[str, Any]:
        return {
            "entity_id": entity_id,
            "state": self.state,
            "attributes": self.attributes,
            "last_changed": datetime.fromtimestamp(self.last_changed, UTC).isoformat(),
            "last_reported": datetime.fromtimestamp(self.last_updated, UTC).isoformat(),
            "last_updated": datetime.fromtimestamp(self.last_updated, UTC).isoformat(),
            "context": {"id": uuid.uuid4().hex, "parent_id": None, "user_id": None},
        }


def state_diff(old: FakeState, new: FakeState) -> dict[str, Any]:
    """Core's `_state_diff_event` for a changed entity (context left out)."""
    additions: dict[str, Any] = {}
    if old.state != new.state:
        additions["s"] = new.state
    if old.last_changed != new.last_changed:
        additions["lc"] = new.last_changed
    elif old.last_updated != new.last_updated:
        additions["lu"] = new.last_updated
    diff: dict[str, Any] = {"+": additions}
    if added := {
        k: v for k, v in new.attributes.items() if k not in old.attributes or old.attributes[k] != v
    }:
        additions["a"] = added
    if removed := old.attributes.keys() - new.attributes.keys():
        diff["-"] = {"a": sorted(removed)}
    return diff


@dataclass
class Connection:
    ws: web.WebSocketResponse
    entity_subscriptions: dict[int, frozenset[str]] = field(default_factory=dict)
    event_subscriptions: set[int] = field(default_factory=set)
    last_id: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, message: object) -> None:
        async with self.lock:
            if not self.ws.closed:
                await self.ws.send_str(json.dumps(message))


class FakeHomeAssistant:
    def __init__(self, token: str = "test-token", *, subscribe_entities: bool = True) -> None:
        self.token = token
        self.subscribe_entities = subscribe_entities  # False: an old Core that answers unknown_command
        self.answer_pings = True
        self.states: dict[str, FakeState] = {}
        self.forecasts: dict[str, list[dict[str, Any]]] = {}
        # the Energy dashboard's solar forecasts, as energy/solar_forecast answers them (by config entry)
        self.solar_forecasts: dict[str, Any] = {}
        self.config_entries: dict[str, str] = {}  # entry id -> domain, for config_entries/get
        self.hanging_services: set[str] = set()  # "domain.service" that never get an answer
        self.received: list[dict[str, Any]] = []  # every command after auth, in order
        self.auth_attempts: list[float] = []  # time.monotonic() of each auth message
        self.core_down = False  # the Supervisor's proxy answers 502 while Core is not up
        # The Supervisor's proxy accepts the add-on's token (auth_ok) before it connects to Core; when that
        # fails it closes the socket at once.
        self.close_after_auth = False
        self.upgrades: list[float] = []  # time.monotonic() of each connection attempt that reached us
        self.connections: list[Connection] = []
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Condition()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/core/websocket"

    # lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on 127.0.0.1 (a random port the first time, the same one after a restart)."""
        app = web.Application()
        app.router.add_get("/core/websocket", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        await self.drop_connections()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def drop_connections(self) -> None:
        """What the Supervisor does to the add-on's socket when Core goes away."""
        for connection in list(self.connections):
            await connection.ws.close(code=1001, message=b"Home Assistant is stopping")

    # what the test waits for ---------------------------------------------------------------------------

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    def commands(self, kind: str) -> list[dict[str, Any]]:
        return [message for message in self.received if message.get("type") == kind]

    async def _note(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # states --------------------------------------------------------------------------------------------

    def preset(self, entity_id: str, state: str, attributes: dict[str, Any] | None = None) -> None:
        """A state that exists before anyone connects, last reported a moment ago (a live sensor: its age
        counts from Home Assistant's timestamps)."""
        now = time.time()
        self.states[entity_id] = FakeState(state, dict(attributes or {}), now - 60, now)

    async def set_state(
        self, entity_id: str, state: str, attributes: dict[str, Any] | None = None, *, keep: bool = True
    ) -> None:
        """Change (or create) an entity and tell every subscriber, the way Core's state machine does.

        keep: the attributes are merged into the old ones; False replaces them (so keys can disappear).
        """
        now = time.time()
        old = self.states.get(entity_id)
        merged = (dict(old.attributes) if old and keep else {}) | dict(attributes or {})
        last_changed = old.last_changed if old and old.state == state else now
        new = FakeState(state, merged, last_changed, now)
        self.states[entity_id] = new
        entities = (
            {"a": {entity_id: new.compressed()}} if old is None else {"c": {entity_id: state_diff(old, new)}}
        )
        event = self._state_changed(entity_id, old, new)
        await self._publish(entity_id, entities, event)

    async def remove_state(self, entity_id: str) -> None:
        old = self.states.pop(entity_id)
        await self._publish(entity_id, {"r": [entity_id]}, self._state_changed(entity_id, old, None))

    @staticmethod
    def _state_changed(entity_id: str, old: FakeState | None, new: FakeState | None) -> dict[str, Any]:
        return {
            "event_type": "state_changed",
            "data": {
                "entity_id": entity_id,
                "old_state": old.full(entity_id) if old else None,
                "new_state": new.full(entity_id) if new else None,
            },
            "origin": "LOCAL",
            "time_fired": datetime.now(UTC).isoformat(),
            "context": {"id": uuid.uuid4().hex, "parent_id": None, "user_id": None},
        }

    async def _publish(self, entity_id: str, entities: dict[str, Any], event: dict[str, Any]) -> None:
        for connection in list(self.connections):
            for sub_id, entity_ids in connection.entity_subscriptions.items():
                if entity_id in entity_ids:
                    await connection.send({"id": sub_id, "type": "event", "event": entities})
            for sub_id in connection.event_subscriptions:
                await connection.send({"id": sub_id, "type": "event", "event": event})

    async def push_raw(self, message: dict[str, Any]) -> None:
        """Send anything to every client, to see how it copes with it."""
        for connection in list(self.connections):
            await connection.send(message)

    # the protocol --------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.upgrades.append(time.monotonic())
        await self._note()
        if self.core_down:
            return web.Response(status=502, text="502: Bad Gateway")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "auth_required", "ha_version": HA_VERSION})
        hello = await ws.receive()
        if hello.type is not WSMsgType.TEXT:
            return ws
        auth = json.loads(hello.data)
        self.auth_attempts.append(time.monotonic())
        await self._note()
        if auth.get("type") != "auth" or auth.get("access_token") != self.token:
            await ws.send_json({"type": "auth_invalid", "message": "Invalid access"})
            await ws.close()
            return ws
        await ws.send_json({"type": "auth_ok", "ha_version": HA_VERSION})
        if self.close_after_auth:
            await ws.close(code=1011, message=b"Core unreachable")
            return ws
        connection = Connection(ws)
        self.connections.append(connection)
        try:
            async for raw in ws:
                if raw.type is WSMsgType.TEXT:
                    message = json.loads(raw.data)
                    self.received.append(message)
                    await self._command(connection, message)
                    await self._note()
        finally:
            self.connections.remove(connection)
            await self._note()
        return ws

    async def _command(self, connection: Connection, message: dict[str, Any]) -> None:
        msg_id = message.get("id")
        if not isinstance(msg_id, int) or msg_id <= connection.last_id:
            await connection.send(_error(msg_id, "id_reuse", "Identifier values have to increase."))
            return
        connection.last_id = msg_id
        kind = message.get("type")
        if kind == "ping":
            if self.answer_pings:
                await connection.send({"id": msg_id, "type": "pong"})
        elif kind == "subscribe_entities" and self.subscribe_entities:
            entity_ids = frozenset(message.get("entity_ids") or self.states)
            connection.entity_subscriptions[msg_id] = entity_ids
            await connection.send(_result(msg_id))
            initial = {e: s.compressed() for e, s in self.states.items() if e in entity_ids}
            await connection.send({"id": msg_id, "type": "event", "event": {"a": initial}})
        elif kind == "subscribe_events" and message.get("event_type") == "state_changed":
            connection.event_subscriptions.add(msg_id)
            await connection.send(_result(msg_id))
        elif kind == "get_states":
            await connection.send(_result(msg_id, [s.full(e) for e, s in self.states.items()]))
        elif kind == "call_service":
            await self._call_service(connection, msg_id, message)
        elif kind == "energy/solar_forecast":
            await connection.send(_result(msg_id, self.solar_forecasts))
        elif kind == "config_entries/get":
            entries = [
                {"entry_id": entry_id, "domain": domain, "title": domain, "source": "user", "state": "loaded"}
                for entry_id, domain in self.config_entries.items()
            ]
            await connection.send(_result(msg_id, entries))
        else:
            await connection.send(_error(msg_id, "unknown_command", "Unknown command."))

    async def _call_service(self, connection: Connection, msg_id: int, message: dict[str, Any]) -> None:
        name = f"{message.get('domain')}.{message.get('service')}"
        if name in self.hanging_services:
            return
        if name in ("persistent_notification.create", "persistent_notification.dismiss"):
            context = {"id": uuid.uuid4().hex, "parent_id": None, "user_id": None}
            await connection.send(_result(msg_id, {"context": context}))
            await self._note()
            return
        if name != "weather.get_forecasts":
            await connection.send(_error(msg_id, "not_found", f"Action {name} not found."))
            return
        if not message.get("return_response"):
            await connection.send(
                _error(
                    msg_id,
                    "service_validation_error",
                    "Validation error: The action requires responses and must be called with "
                    "return_response=True",
                )
            )
            return
        entity_ids = (message.get("target") or {}).get("entity_id", [])
        entity_ids = [entity_ids] if isinstance(entity_ids, str) else entity_ids
        kind = (message.get("service_data") or {}).get("type")
        response = {e: {"forecast": self.forecasts[e]} for e in entity_ids if e in self.forecasts}
        if kind != "hourly":
            response = {e: {"forecast": []} for e in response}
        context = {"id": uuid.uuid4().hex, "parent_id": None, "user_id": None}
        await connection.send(_result(msg_id, {"context": context, "response": response}))


def _result(msg_id: int, result: Any = None) -> dict[str, Any]:
    return {"id": msg_id, "type": "result", "success": True, "result": result}


def _error(msg_id: Any, code: str, message: str) -> dict[str, Any]:
    return {"id": msg_id, "type": "result", "success": False, "error": {"code": code, "message": message}}
