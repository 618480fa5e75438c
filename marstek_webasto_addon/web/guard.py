"""The panel's doors: who may send a request, decided before any handler runs.

In the add-on the Supervisor's ingress proxy is the only peer let in: Home Assistant has logged the user in
and rewrites the headers, so nothing else is checked. Standalone nobody stands in front of the panel, so it
checks for itself what a web page cannot forge:

- the Host header must name this machine (localhost, its host name, its addresses, or a name given with
  `--panel-host`): any web page can point a name of its own at our address (DNS rebinding) and would
  otherwise read the state and drive the batteries;
- with a password (the MARSTEK_PANEL_PASSWORD environment variable), HTTP Basic with that password;
- a request that changes something must come from the panel's own origin when a browser sends it
  (`Sec-Fetch-Site`, `Origin`, else `Referer`); a client that sends none of them is not a browser, and a
  page on another site cannot leave them out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import re
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import ifaddr
from aiohttp import web
from yarl import URL

_LOG = logging.getLogger(__name__)
PASSWORD_ENV = "MARSTEK_PANEL_PASSWORD"
HOST_OPTION = "--panel-host"
LOOPBACK = frozenset({"127.0.0.1", "::1"})  # the container's HEALTHCHECK asks api/health from here
LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
MACHINE_REFRESH_S = (
    60.0  # a DHCP lease may change the addresses; a stranger's bad Host re-reads them this rarely
)
# The Supervisor's ingress path: its fixed prefix and a token from secrets.token_urlsafe.
_INGRESS_PATH = re.compile(r"/api/hassio_ingress/[A-Za-z0-9_-]{1,128}")
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
_REALM = 'Basic realm="Marstek & Webasto panel", charset="UTF-8"'


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str  # for the log, one word: peer, host, origin, password
    message: str  # for the client: what is wrong and how to get in
    headers: Mapping[str, str] = field(default_factory=dict)


def ingress_prefix(header: str | None) -> str:
    """The page's base path from X-Ingress-Path, only in the Supervisor's own form; anything else: none."""
    value = (header or "").rstrip("/")
    return value if _INGRESS_PATH.fullmatch(value) else ""


def normal_host(name: str) -> str:
    """One spelling per host: lower case, no trailing dot, an address in its canonical form, no zone."""
    name = name.strip().lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(name.split("%", 1)[0]))
    except ValueError:
        return name


def split_host(value: str) -> tuple[str, int | None] | None:
    """The host and port of a Host header (`name`, `name:port`, `[v6]:port`); None if it is none of these."""
    value = value.strip()
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:]
    else:
        name, _, port_text = value.partition(":")
    if not name or (port_text and (not port_text.isdigit() or int(port_text) > 65535)):
        return None  # a bare IPv6 address lands here too: its second colon makes the "port" no number
    return normal_host(name), int(port_text) if port_text else None


def machine_names() -> frozenset[str]:
    """Every name and address this machine is reached by on its own or a home network."""
    names = set(LOCAL_NAMES)
    hostname = normal_host(socket.gethostname())
    if hostname:
        short = hostname.split(".", 1)[0]
        names |= {hostname, short, f"{short}.local"}  # .local: how mDNS (and Home Assistant OS) names it
    try:
        adapters = ifaddr.get_adapters()
    except OSError as exc:
        _LOG.debug("panel: cannot list this machine's addresses: %s", exc)
        adapters = []
    for adapter in adapters:
        for ip in adapter.ips:
            names.add(normal_host(ip.ip[0] if isinstance(ip.ip, tuple) else ip.ip))
    return frozenset(names)


def _shown(text: str) -> str:
    """A client's header, safe and short enough to quote back in a message and the log."""
    return "".join(c if c.isprintable() else "?" for c in text)[:100]


def _same_origin(source: str, host: tuple[str, int | None]) -> bool:
    try:
        url = URL(source)
    except ValueError:
        return False
    if url.scheme not in ("http", "https") or url.host is None:
        return False
    name, port = host
    # No port in Host: the request came to the scheme's own port, so the Origin must name that one too.
    expected = port if port is not None else (443 if url.scheme == "https" else 80)
    return normal_host(url.host) == name and url.port == expected


def _digest(password: str) -> bytes:
    # Digests have one length, so comparing them tells nothing about the password's length.
    return hashlib.sha256(password.encode()).digest()


def _basic_password(header: str) -> str | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, colon, password = decoded.partition(":")
    return password if colon else None


class Doors:
    """The rules for one panel. `peers`: the add-on's ingress proxy; None: standalone."""

    def __init__(
        self, peers: Iterable[str] | None = None, hosts: Iterable[str] = (), password: str | None = None
    ) -> None:
        self.peers = frozenset(peers) if peers is not None else None
        self.hosts = frozenset(normal_host(h) for h in hosts)
        self.has_password = bool(password)
        self._password = _digest(password) if password else None
        self._machine = machine_names()
        self._machine_at = time.monotonic()

    def check(self, request: web.Request) -> Refusal | None:
        """None: let the request in; else why not."""
        health = request.path == "/api/health" and request.remote in LOOPBACK
        if self.peers is not None:
            if request.remote in self.peers or health:
                return None
            return Refusal(403, "peer", "only Home Assistant's ingress may open this panel")
        host = split_host(request.headers.get("Host", ""))
        return self._host(request, host) or self._pass(request, health) or self._origin(request, host)

    def allows_host(self, name: str) -> bool:
        if name in self.hosts or name in self._machine:
            return True
        if time.monotonic() - self._machine_at < MACHINE_REFRESH_S:
            return False
        self._machine = machine_names()
        self._machine_at = time.monotonic()
        return name in self._machine

    def _host(self, request: web.Request, host: tuple[str, int | None] | None) -> Refusal | None:
        if host is not None and self.allows_host(host[0]):
            return None
        if host is None:
            given = _shown(request.headers.get("Host", ""))
            return Refusal(
                403, "host", f"the Host header {given!r} names no host; open the panel by its address"
            )
        name = _shown(host[0])
        return Refusal(
            403,
            "host",
            f"the host name {name!r} is not allowed for this panel; to open it under that name, "
            f"start it with {HOST_OPTION} {name}",
        )

    def _origin(self, request: web.Request, host: tuple[str, int | None] | None) -> Refusal | None:
        if request.method in _READS or host is None:
            return None
        # Browsers set Sec-Fetch-Site themselves (no page can), and Origin is `null` on a same-origin POST
        # under some referrer policies: where it is sent it is the better witness.
        site = request.headers.get("Sec-Fetch-Site")
        if site == "same-origin":
            return None
        if site is not None:
            return Refusal(
                403, "origin", f"a {_shown(site)} request may not change anything here; use the panel"
            )
        source = request.headers.get("Origin")
        if source is None:
            source = request.headers.get("Referer")
        if source is None or _same_origin(source, host):
            return None
        return Refusal(
            403,
            "origin",
            f"a page from {_shown(source)!r} may not change anything here; use the panel itself",
        )

    def _pass(self, request: web.Request, health: bool) -> Refusal | None:
        if self._password is None or health:
            return None
        given = _basic_password(request.headers.get("Authorization", ""))
        if given is not None and hmac.compare_digest(_digest(given), self._password):
            return None
        what = "a wrong password" if given is not None else "no password"
        return Refusal(
            401,
            "password",
            f"{what}: this panel asks for its password (any user name)",
            {"WWW-Authenticate": _REALM},
        )
