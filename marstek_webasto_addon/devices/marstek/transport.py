"""One UDP socket shared by every battery on a local port; replies are routed by source IP and id.

Several batteries (and discovery) share one socket, as on a real LAN where they all answer on the API port.
Replies are accepted from any source port of the device, since firmware differs in which port it answers
from (reference section 1.6).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Self, cast

from .protocol import MAX_DATAGRAM, MAX_ID, Echo, MalformedReply, Reply, decode_datagram, encode_request

_LOG = logging.getLogger(__name__)
MALFORMED_LOG_S = 60.0  # at most one warning a minute per sender of malformed datagrams
MALFORMED_SENDERS_KEPT = 256  # senders remembered; beyond, forgotten (a LAN has fewer devices)

Address = tuple[str, int]
Listener = Callable[[Reply, Address], None]


@dataclass
class _Pending:
    future: asyncio.Future[Reply]
    method: str


class UdpEndpoint(asyncio.DatagramProtocol):
    """Use `await UdpEndpoint.open(...)`; close with `close()` or `async with`."""

    def __init__(self) -> None:
        self._transport: asyncio.DatagramTransport | None = None
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._listeners: dict[int, Listener] = {}
        self._recent: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._next_id = 0
        self.malformed_from: dict[str, tuple[float, str]] = {}  # ip -> (monotonic time, reason)
        self._malformed_logged: dict[str, float] = {}  # ip -> when its last warning went out
        self._malformed_skipped: dict[str, int] = {}  # ip -> malformed datagrams since, not logged
        self.local_address: Address = ("", 0)
        self.bind_note = ""
        self.stats = {
            "received": 0,
            "malformed": 0,
            "late_or_duplicate": 0,
            "unsolicited": 0,
            "parse_errors": 0,
        }

    # lifecycle ------------------------------------------------------------------------------------

    @classmethod
    async def open(cls, local_host: str = "0.0.0.0", local_port: int = 30000) -> Self:
        """Bind the API port with address reuse; when it is taken, fall back to an ephemeral port.

        Early HMG-50 firmware only answers to port 30000 (Q18), so the API port is tried first; other
        software on the host (the Daikin integration, Q19) may hold it, hence the fallback.
        """
        sock, note = _bind(local_host, local_port)
        endpoint = cls()
        endpoint.bind_note = note
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: endpoint, sock=sock)
        return endpoint

    async def __aenter__(self) -> UdpEndpoint:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector transport is a DatagramTransport in behaviour, not by inheritance.
        self._transport = cast(asyncio.DatagramTransport, transport)
        host, port = transport.get_extra_info("sockname")[:2]
        self.local_address = (host, port)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        for pending in self._pending.values():
            if not pending.future.done():
                # not cancel(): the caller's task was not cancelled, its socket went away
                pending.future.set_exception(ConnectionError("the UDP endpoint was closed"))
        self._pending.clear()

    @property
    def is_open(self) -> bool:
        return self._transport is not None

    # sending --------------------------------------------------------------------------------------

    def allocate_id(self) -> int:
        """Ids 1..65535, wrapping, never 0 (the firmware's parse-error id) and never one still in flight."""
        in_flight = {req_id for _, req_id in self._pending} | set(self._listeners)
        for _ in range(MAX_ID):
            self._next_id = self._next_id % MAX_ID + 1
            if self._next_id not in in_flight:
                return self._next_id
        raise RuntimeError("all request ids are in flight")

    def send(self, address: Address, data: bytes) -> None:
        if self._transport is None:
            raise ConnectionError("endpoint is closed")
        if not data:
            raise ValueError("refusing to send an empty datagram (it can freeze pre-150 firmware)")
        self._transport.sendto(data, address)

    async def request(
        self, address: Address, request_id: int, method: str, params: dict[str, Any], timeout: float
    ) -> Reply:
        """One attempt: send and wait for the matching reply (or a parse error from that device)."""
        key = (address[0], request_id)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[key] = _Pending(future, method)
        try:
            self.send(address, encode_request(request_id, method, params))
            # Not wait_for: on Python 3.11 it swallows a cancellation that comes with the reply, and a
            # poll loop cancelled at that moment would never stop.
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._pending.pop(key, None)
            self._remember(key)

    @contextlib.contextmanager
    def listen(self, request_id: int, listener: Listener) -> Iterator[None]:
        """Route every reply with this id, from any address, to `listener` (used by discovery)."""
        self._listeners[request_id] = listener
        try:
            yield
        finally:
            self._listeners.pop(request_id, None)

    # receiving ------------------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        address: Address = (str(addr[0]), int(addr[1]))
        self.stats["received"] += 1
        try:
            message = decode_datagram(data)
        except MalformedReply as exc:
            self.stats["malformed"] += 1
            now = time.monotonic()
            self._warn_malformed(address, str(exc), now)
            self.malformed_from[address[0]] = (now, str(exc))
            return
        if isinstance(message, Echo):
            return  # our own broadcast, or another client's request on a shared port
        if message.is_parse_error:
            self._route_parse_error(message, address)
            return
        key = (address[0], message.id)
        pending = self._pending.get(key)
        if pending is not None and not pending.future.done():
            pending.future.set_result(message)
            return
        listener = self._listeners.get(message.id)
        if listener is not None:
            try:
                listener(message, address)
            except Exception as exc:  # a reply nobody foresaw must not stop the socket
                self.stats["malformed"] += 1
                now = time.monotonic()
                self._warn_malformed(address, f"reply not understood: {exc!r}", now)
                self.malformed_from[address[0]] = (now, str(exc))
            return
        if pending is not None or key in self._recent:
            self.stats["late_or_duplicate"] += 1
            _LOG.debug("ignoring late or duplicate reply id=%s from %s:%s", message.id, *address)
        else:
            self.stats["unsolicited"] += 1
            _LOG.debug("ignoring unsolicited reply id=%s from %s:%s", message.id, *address)

    def _warn_malformed(self, address: Address, reason: str, now: float) -> None:
        """One warning per sender a minute, with a count of the others: any host on the LAN can send
        datagrams to this port, and a log line for each would fill the log."""
        host = address[0]
        # Spoofed senders must not grow it: a new sender that would be one too many starts it afresh (this
        # runs before `datagram_received` records the sender in `malformed_from`).
        if host not in self._malformed_logged and len(self._malformed_logged) >= MALFORMED_SENDERS_KEPT:
            self._malformed_logged.clear()
            self._malformed_skipped.clear()
        if host not in self.malformed_from and len(self.malformed_from) >= MALFORMED_SENDERS_KEPT:
            self.malformed_from.clear()
        if now - self._malformed_logged.get(host, -math.inf) < MALFORMED_LOG_S:
            self._malformed_skipped[host] = self._malformed_skipped.get(host, 0) + 1
            return
        skipped = self._malformed_skipped.pop(host, 0)
        more = f" ({skipped} more from it since the last warning)" if skipped else ""
        _LOG.warning("ignoring malformed datagram from %s:%s: %s%s", *address, reason, more)
        self._malformed_logged[host] = now

    def _route_parse_error(self, message: Reply, address: Address) -> None:
        """A -32700 comes back with id 0, so it can only be tied to the device: fail its attempt now."""
        self.stats["parse_errors"] += 1
        for (host, _), pending in self._pending.items():
            if host == address[0] and not pending.future.done():
                pending.future.set_result(message)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: the attempt simply times out and is retried.
        _LOG.debug("UDP error: %s", exc)

    def _remember(self, key: tuple[str, int]) -> None:
        self._recent[key] = None
        while len(self._recent) > 1024:
            self._recent.popitem(last=False)


def _bind(local_host: str, local_port: int) -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setblocking(False)
    note = f"bound {local_host}:{local_port}"
    try:
        sock.bind((local_host, local_port))
    except OSError as exc:
        if local_port == 0 or exc.errno not in (errno.EADDRINUSE, errno.EACCES):
            sock.close()
            raise
        sock.bind((local_host, 0))
        note = (
            f"port {local_port} is in use on {local_host} ({exc.strerror}); using ephemeral port "
            f"{sock.getsockname()[1]}. Batteries that only answer to port {local_port} will not be reached."
        )
        _LOG.warning("%s", note)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, MAX_DATAGRAM * 4)
    return sock, note
