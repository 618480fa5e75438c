"""The MQTT side of the bridge: one session to the broker, kept alive for as long as the add-on runs.

The message loop never waits for a device: commands are validated and handed to the command router's
per-device queues, Home Assistant's birth message and the listeners' topics (a P1 meter) are handled on
the spot. A rejected command is reported on the device's last command, at most once per `outcome_window`
however many arrive; only a command that ran republishes the whole device.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiomqtt

from ..devices.outcome import WriteOutcome
from ..tasks import cancel_all
from .commands import CommandRouter
from .devices import BridgedDevice
from .discovery import announceable, discovery_messages
from .topics import Topics

_LOG = logging.getLogger(__name__)

# Back within this long of the broker's return, however long it was away (the add-on restarts Mosquitto
# on updates; Home Assistant's entities are unavailable until the bridge is back).
RECONNECT_MAX = 8.0
PUBLISH_RETRY_S = 1.0
# At a stop, how long the broker may take to confirm the bridge's `offline` (the bound the stop always had).
# It is spent before the batteries are put back in Auto: runtime.SHUTDOWN_BUDGET_S leaves room for it under
# s6's grace time, a longer wait would not.
OFFLINE_CONFIRM_S = 3.0


@dataclass(frozen=True)
class BrokerSettings:
    host: str
    port: int = 1883
    username: str = ""
    password: str = ""

    def describe(self) -> str:
        user = f" as {self.username}" if self.username else ""
        return f"{self.host}:{self.port}{user}"


class MqttBridge:
    """`await bridge.run()` until cancelled. Devices call `notify(device)` when they have news."""

    def __init__(
        self,
        broker: BrokerSettings,
        topics: Topics,
        devices: Iterable[BridgedDevice],
        *,
        refresh_interval: float = 300.0,
        scan_seconds: float = 2.0,
        reconnect_max: float = RECONNECT_MAX,
        birth_delay: tuple[float, float] = (0.5, 2.0),
        outcome_window: float = 1.0,
        keep_unconfigured: bool = False,
    ) -> None:
        self.broker = broker
        # Device entries were left out of the options (invalid): the entities of devices not configured stay
        # in Home Assistant, offline, with the user's customisations, until the entries are corrected.
        self.keep_unconfigured = keep_unconfigured
        self._kept_offline: set[str] = set()
        self.topics = topics
        self.devices = list(devices)
        self.refresh_interval = refresh_interval
        self.scan_seconds = scan_seconds
        self.reconnect_max = reconnect_max
        self.birth_delay = birth_delay
        self.outcome_window = outcome_window
        self.router = CommandRouter(self.devices_by_id, self._after_command, self._after_rejection)
        self.connected = asyncio.Event()
        self.last_error = ""
        self.sessions = 0
        self._client: aiomqtt.Client | None = None
        self._dirty: set[int] = set()
        self._wake = asyncio.Event()
        self._published: dict[str, str] = {}  # state, availability and attributes topics -> payload
        self._rejections_due: dict[int, asyncio.TimerHandle] = {}  # device -> its coalesced report
        self._rejections_quiet_until: dict[int, float] = {}
        self._published_discovery: dict[str, dict[str, str]] = {}  # device id -> topic -> payload
        self._unpublishable: set[int] = set()  # id(device) whose last publish failed (logged once)
        self._announced_as: dict[int, str] = {}  # id(device) -> the device id its topics were published under
        self._found_configs: set[str] = set()
        self._scanning = False
        self._listeners: dict[str, Callable[[bytes], None]] = {}

    def add_listener(self, topic: str, callback: Callable[[bytes], None]) -> None:
        """Deliver every message on `topic` (e.g. a P1 meter's power) to `callback`, across reconnects."""
        self._listeners[topic] = callback

    def devices_by_id(self) -> dict[str, BridgedDevice]:
        return {d.device_id: d for d in self.devices if d.device_id is not None}

    # lifecycle --------------------------------------------------------------------------------------------

    async def run(self) -> None:
        delay = 1.0
        while True:
            sessions = self.sessions
            try:
                await self._session()
            except aiomqtt.MqttError as exc:
                self.last_error = str(exc)
                if self.sessions != sessions:
                    delay = 1.0  # it was up: the broker restarting comes back quickly
                _LOG.warning("MQTT broker %s: %s; reconnecting in %.0f s", self.broker.describe(), exc, delay)
            finally:
                self._client = None
                self.connected.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max)

    async def _session(self) -> None:
        will = aiomqtt.Will(self.topics.bridge_status, "offline", qos=1, retain=True)
        identifier = f"{self.topics.namespace}-{random.getrandbits(32):08x}"
        async with aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            username=self.broker.username or None,
            password=self.broker.password or None,
            identifier=identifier,
            will=will,
            keepalive=30,
        ) as client:
            try:
                await self._connected_session(client)
            except asyncio.CancelledError:
                # A clean stop: say so now (the will only fires when the connection is lost uncleanly).
                await self._say_offline(client)
                raise

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        """Publish `offline` and wait, for at most OFFLINE_CONFIRM_S, until the broker confirms it.

        cancel_all cancels a stopping task again after RECANCEL_S: that cut the wait short, and to a slow
        broker the publish was lost with the disconnect that followed. Home Assistant then showed every
        device available after the add-on had stopped. Within the bound the repeated cancellations are let
        pass here (the stop under way is the one they ask for); past it the stop goes on regardless."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + OFFLINE_CONFIRM_S
        status = self.topics.bridge_status
        publish = asyncio.ensure_future(
            client.publish(status, "offline", qos=1, retain=True, timeout=OFFLINE_CONFIRM_S)
        )
        while not publish.done() and (left := deadline - loop.time()) > 0:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({publish}, timeout=left)
        if not publish.done():
            publish.cancel()  # ends at its next step; the disconnect need not wait for that
            problem = f"not confirmed by the broker within {OFFLINE_CONFIRM_S:g} s"
        elif publish.cancelled():
            problem = "cancelled"
        elif (error := publish.exception()) is not None:
            problem = f"not published ({error})"
        else:
            return
        _LOG.warning(
            "MQTT: the bridge's offline status was %s; Home Assistant may show the devices available until "
            "the broker notices the connection is gone",
            problem,
        )

    async def _connected_session(self, client: aiomqtt.Client) -> None:
        self._client = client
        self.sessions += 1
        self.last_error = ""
        _LOG.info("connected to the MQTT broker %s", self.broker.describe())
        await client.subscribe(self.topics.command_filter, qos=1)
        await client.subscribe(self.topics.ha_status, qos=1)
        for topic in self._listeners:
            await client.subscribe(topic, qos=0)
        self._found_configs.clear()
        self._scanning = True
        await client.subscribe(self.topics.discovery_filter, qos=1)
        await self.publish_everything()
        await client.publish(self.topics.bridge_status, "online", qos=1, retain=True)
        self.connected.set()
        tasks = [
            asyncio.create_task(self._publisher(), name="mqtt-publisher"),
            asyncio.create_task(self._end_scan(), name="mqtt-scan"),
        ]
        try:
            async for message in client.messages:
                self._on_message(message)
        finally:
            await cancel_all(tasks)

    async def close(self) -> None:
        """Say goodbye cleanly (the will only fires on an unclean loss)."""
        for timer in self._rejections_due.values():
            timer.cancel()
        self._rejections_due.clear()
        await self.router.close()
        if self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.publish(self.topics.bridge_status, "offline", qos=1, retain=True)

    # publishing -------------------------------------------------------------------------------------------

    async def _publish(self, topic: str, payload: str | None, *, retain: bool = True, qos: int = 0) -> None:
        client = self._client
        if client is None:
            return  # everything is published again after the next connect
        await client.publish(topic, "" if payload is None else payload, qos=qos, retain=retain)

    async def publish_everything(self) -> None:
        # The map of what is announced stays whole while everything goes out again: the stale-topic
        # clean-up reads it meanwhile, and a half-rebuilt map made it delete our own entities.
        self._published.clear()
        for device in self.devices:
            await self.publish_device(device, force=True)

    async def publish_device(self, device: BridgedDevice, *, force: bool = False) -> None:
        """Discovery first, then availability, state and attributes: those that changed, or all (force)."""
        device_id = device.device_id
        if device_id is None:
            return
        before = self._announced_as.get(id(device))
        self._announced_as[id(device)] = device_id
        if before is not None and before != device_id:
            # A box known by its address until it answered as a UNITE is known by its serial from then on:
            # the address-named device would otherwise stay in Home Assistant as a ghost, unavailable
            # forever (no later scan sees topics published in this run as stale).
            await self._retract(before)
        messages: list[tuple[str, str, int]] = []
        if device.kind in ("battery", "wallbox"):
            # Not yet announceable means not usable either; and a retained "online" from the last run
            # must not leave its entities looking alive while it does not answer.
            online = "online" if device.available and announceable(device) else "offline"
            messages.append((self.topics.availability(device_id), online, 1))
        if announceable(device):  # no state before the discovery it needs, no discovery before the model
            await self._publish_discovery(device, force=force)
            state = json.dumps(device.state(), separators=(",", ":"), default=str)
            messages.append((self.topics.state(device_id), state, 0))
            for key, attributes in device.attributes().items():
                payload = json.dumps(attributes, default=str)
                messages.append((self.topics.attributes(device_id, key), payload, 0))
        for topic, payload, qos in messages:
            if force or self._published.get(topic) != payload:
                await self._publish(topic, payload, qos=qos)
                self._published[topic] = payload

    async def _publish_discovery(self, device: BridgedDevice, *, force: bool = False) -> None:
        assert device.device_id is not None
        wanted = {
            topic: json.dumps(payload, separators=(",", ":"))
            for topic, payload in discovery_messages(device, self.topics)
        }
        before = self._published_discovery.get(device.device_id, {})
        if wanted == before and not force:
            return
        for topic in before.keys() - wanted.keys():
            await self._publish(topic, None, qos=1)  # an entity the device no longer has
        for topic, payload in wanted.items():
            if force or before.get(topic) != payload:
                await self._publish(topic, payload, qos=1)
        self._published_discovery[device.device_id] = wanted

    async def _retract(self, device_id: str) -> None:
        """Clear every retained topic published under a device id that is no longer in use."""
        _LOG.info("%s is known by another id now: removing its old entities", device_id)
        for topic in self._published_discovery.pop(device_id, {}):
            await self._publish(topic, None, qos=1)
            self._found_configs.discard(topic)
        for topic in self._device_topics(device_id):
            self._published.pop(topic, None)
            await self._publish(topic, None, qos=1)

    def _device_topics(self, device_id: str) -> list[str]:
        """The retained topics of a device besides its discovery."""
        return [
            self.topics.state(device_id),
            self.topics.availability(device_id),
            *(self.topics.attributes(device_id, key) for key in ("last_command", "connection", "problem")),
        ]

    def notify(self, device: BridgedDevice) -> None:
        """Called by device links after each poll: publish what changed soon."""
        self.router.forget(device)
        self._dirty.add(id(device))
        self._wake.set()

    async def _publisher(self) -> None:
        next_refresh = time.monotonic() + self.refresh_interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_refresh - time.monotonic()))
            self._wake.clear()
            refresh = time.monotonic() >= next_refresh
            if refresh:
                next_refresh = time.monotonic() + self.refresh_interval
            dirty, self._dirty = self._dirty, set()
            try:
                for device in self.devices:
                    if refresh or id(device) in dirty:
                        await self._publish_guarded(device, force=refresh)
                if dirty and not self._scanning:
                    await self._clear_stale()  # identities learned since: nodes may now be known
            except aiomqtt.MqttError as exc:
                # A publish not acknowledged in time (a stalled broker) while the connection lives on: this
                # task must not end with it, or no state would be published again until a reconnect and
                # Home Assistant would show every entity's last value as live. A lost connection ends the
                # session anyway. What did not go out is still unpublished, so it goes out next round.
                _LOG.warning("MQTT publishing failed (%s); trying again in %.0f s", exc, PUBLISH_RETRY_S)
                self._dirty |= dirty if not refresh else {id(d) for d in self.devices}
                await asyncio.sleep(PUBLISH_RETRY_S)
                self._wake.set()

    async def _publish_guarded(self, device: BridgedDevice, *, force: bool) -> None:
        """One device's topics. An error that is not the broker's (a bug, a value no one foresaw) is
        logged once and costs that device its update, not every device theirs: it ended the publishing
        task, and no state reached Home Assistant again until a reconnect."""
        try:
            await self.publish_device(device, force=force)
        except aiomqtt.MqttError:
            raise
        except Exception:
            if id(device) not in self._unpublishable:
                self._unpublishable.add(id(device))
                _LOG.exception("MQTT: the state of %s could not be published", device.device_id)
            return
        self._unpublishable.discard(id(device))

    async def _after_command(self, device: BridgedDevice, outcome: WriteOutcome) -> None:
        # A command ran: the whole device again, so Home Assistant snaps to what the device now reports.
        with contextlib.suppress(aiomqtt.MqttError):
            await self.publish_device(device, force=True)

    def _after_rejection(self, device: BridgedDevice) -> None:
        """Report a rejection on the device's last command: at once, then at most once per window.

        Nothing else needs publishing: the device did not change, and Home Assistant keeps showing the
        true value of a control it sent a bad value for (its state only follows the state topic).
        """
        key = id(device)
        if key in self._rejections_due:
            return  # the report already due will carry this one
        delay = max(0.0, self._rejections_quiet_until.get(key, 0.0) - time.monotonic())
        self._rejections_due[key] = asyncio.get_running_loop().call_later(
            delay, self._report_rejections, device
        )

    def _report_rejections(self, device: BridgedDevice) -> None:
        self._rejections_due.pop(id(device), None)
        self._rejections_quiet_until[id(device)] = time.monotonic() + self.outcome_window
        self.notify(device)  # the publisher sends what changed: the last command's state and attributes

    # receiving --------------------------------------------------------------------------------------------

    def _on_message(self, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        payload = (
            message.payload if isinstance(message.payload, bytes | str) else str(message.payload).encode()
        )
        if topic == self.topics.ha_status:
            if payload in (b"online", "online"):
                asyncio.get_running_loop().call_later(
                    random.uniform(*self.birth_delay),
                    lambda: asyncio.ensure_future(self._republish_after_birth()),
                )
            return
        try:
            self._dispatch(topic, payload, message.retain)
        except Exception:
            # One message must never end the session (and with it every device's link to Home Assistant).
            _LOG.exception("a message on %s could not be handled; it is ignored", topic)

    def _dispatch(self, topic: str, payload: bytes | str, retained: bool) -> None:
        listener = self._listeners.get(topic)
        if listener is not None:
            # A retained reading is the broker's copy of an old one, delivered on every (re)subscribe: as a
            # fresh reading it would steer the batteries by a meter that may have stopped minutes ago.
            # Live readings reach a subscriber unretained, whatever flag their publisher set.
            if not retained:
                listener(payload if isinstance(payload, bytes) else payload.encode())
            return
        command = self.topics.parse_command(topic)
        if command is not None:
            if retained:
                _LOG.warning("ignoring a retained command on %s (commands must never be retained)", topic)
                return
            self.router.offer(*command, payload, source="mqtt")
            return
        if self._scanning and self.topics.parse_discovery(topic) is not None and payload:
            self._found_configs.add(topic)

    async def _republish_after_birth(self) -> None:
        _LOG.info("Home Assistant came online: publishing discovery and states again")
        with contextlib.suppress(aiomqtt.MqttError):
            await self.publish_everything()

    # stale topics -----------------------------------------------------------------------------------------

    async def _end_scan(self) -> None:
        await asyncio.sleep(self.scan_seconds)
        self._scanning = False
        try:
            if self._client is not None:
                await self._client.unsubscribe(self.topics.discovery_filter)
            await self._clear_stale()
        except aiomqtt.MqttError as exc:
            # Not acknowledged in time (a stalled broker): the clean-up runs again with the next news of
            # any device. Ending this task with the error would, on a stop, replace the cancellation and
            # leave the bridge's retained status `online`.
            _LOG.warning("MQTT: ending the discovery scan failed (%s); the clean-up is retried later", exc)

    async def _clear_stale(self) -> None:
        """Clear retained discovery of devices no longer configured and entities no longer offered."""
        if not self._found_configs:
            return
        known = self.devices_by_id()
        pending_kinds = {d.kind for d in self.devices if d.device_id is None}
        expected = {topic for wanted in self._published_discovery.values() for topic in wanted}
        for topic in sorted(self._found_configs - expected):
            parsed = self.topics.parse_discovery(topic)
            assert parsed is not None
            device_id = parsed[0].removeprefix(f"{self.topics.namespace}_")
            kind = device_id.split("_", 1)[0]
            if device_id not in known and self.keep_unconfigured:
                if device_id not in self._kept_offline:
                    self._kept_offline.add(device_id)
                    await self._publish(self.topics.availability(device_id), "offline", qos=1)
                continue
            if device_id not in known and kind in pending_kinds:
                continue  # may belong to a configured device that has not answered yet
            if device_id in known and not (known[device_id].available and announceable(known[device_id])):
                continue  # an offline device only offers part of its entities until it answers again
            if device_id in known and device_id not in self._published_discovery:
                continue  # ours, not announced in this run yet: what it offers is not known until then
            _LOG.info("removing stale discovery topic %s", topic)
            await self._publish(topic, None, qos=1)
            self._found_configs.discard(topic)
            if device_id not in known:
                for leftover in self._device_topics(device_id):
                    await self._publish(leftover, None, qos=1)

    # panel / tests ----------------------------------------------------------------------------------------

    async def submit(self, device_id: str, key: str, payload: str) -> str | None:
        return self.router.offer(device_id, key, payload, source="panel")

    def status(self) -> dict[str, Any]:
        return {
            "connected": self.connected.is_set(),
            "broker": self.broker.describe(),
            "last_error": self.last_error,
            "sessions": self.sessions,
        }
