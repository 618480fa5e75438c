"""Broadcast discovery (Marstek.GetDevice with ble_mac "0"), deduplicated on ble_mac."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import ifaddr

from .datapoints import Method
from .models import validate_result
from .protocol import Reply, encode_request, mac_from_src
from .transport import Address, UdpEndpoint

_LOG = logging.getLogger(__name__)
MAX_EXPANDED_HOSTS = 1024


@dataclass(frozen=True)
class DiscoveredBattery:
    host: str  # the address it answered from: the one to talk to
    port: int
    ble_mac: str | None
    model: str | None
    firmware: int | None
    wifi_mac: str | None
    reported_ip: str | None  # what the device says; may be its other interface (LAN + WiFi)
    src: str | None

    @property
    def key(self) -> str:
        return self.ble_mac or self.host


def broadcast_addresses() -> list[str]:
    """255.255.255.255 plus each IPv4 interface's directed broadcast (some routers drop the former)."""
    found = ["255.255.255.255"]
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if not isinstance(ip.ip, str):
                continue
            network = ipaddress.ip_network(f"{ip.ip}/{ip.network_prefix}", strict=False)
            if network.is_loopback or network.prefixlen >= 31:
                continue
            address = str(network.broadcast_address)
            if address not in found:
                found.append(address)
    return found


def expand_targets(specs: Iterable[str], default_port: int) -> list[Address]:
    """Targets as ADDR, ADDR:PORT or a CIDR block (every host in it, for loopback tests and scans)."""
    targets: list[Address] = []
    for spec in specs:
        host, _, port_text = spec.partition(":") if spec.count(":") == 1 else (spec, "", "")
        port = int(port_text) if port_text else default_port
        if "/" in host:
            network = ipaddress.ip_network(host, strict=False)
            if network.num_addresses > MAX_EXPANDED_HOSTS:
                raise ValueError(
                    f"{host} has {network.num_addresses} addresses; at most {MAX_EXPANDED_HOSTS}"
                )
            hosts = list(network.hosts()) if network.num_addresses > 2 else list(network)
            targets.extend((str(h), port) for h in hosts)
        else:
            targets.append((str(ipaddress.ip_address(host)), port))
    return targets


def _parse(reply: Reply, address: Address) -> tuple[DiscoveredBattery | None, list[str]]:
    """The battery a reply describes, and what is wrong with the reply (for the log)."""
    if reply.result is None or not reply.src:
        return None, []
    fields, problems = validate_result(Method.GET_DEVICE, reply.result)
    ver = fields.get("ver")
    # Some HMG-50 Venus C builds leave the MACs out; the reply's src still ends in it (as the client reads).
    src_mac = mac_from_src(reply.src)
    mac = str(fields.get("ble_mac") or src_mac or "").lower() or None
    bare = "".join(c for c in mac or "" if c in "0123456789abcdef")  # a MAC written with separators
    if src_mac is not None and bare != src_mac:
        # A battery's every reply names it in `src`, which is what the client checks each reply against: a
        # device whose result claims another MAC is not that battery (a stranger, a relay, a spoof), and a
        # search that followed it would poll it in vain and never find the battery.
        problems.append(f"it claims BLE MAC {mac} but its src {reply.src!r} names {src_mac}; ignored")
        return None, problems
    battery = DiscoveredBattery(
        host=address[0],
        port=address[1],
        ble_mac=mac,
        model=fields.get("device"),
        firmware=int(ver) if isinstance(ver, int | float) and math.isfinite(ver) else None,
        wifi_mac=fields.get("wifi_mac"),
        reported_ip=fields.get("ip"),
        src=reply.src,
    )
    return battery, problems


async def discover(
    endpoint: UdpEndpoint,
    targets: Sequence[Address],
    *,
    timeout: float = 10.0,
    repeat: float = 2.0,
    stop_when: Callable[[DiscoveredBattery], bool] | None = None,
) -> list[DiscoveredBattery]:
    """Ask every target every `repeat` seconds until `timeout`; returns the batteries that answered."""
    found: dict[str, DiscoveredBattery] = {}
    done = asyncio.Event()
    request_id = endpoint.allocate_id()

    warned: set[str] = set()  # a device answers every repeat: its problems are logged once per search

    def on_reply(reply: Reply, address: Address) -> None:
        battery, problems = _parse(reply, address)
        if problems and address[0] not in warned:
            warned.add(address[0])
            for problem in problems:
                _LOG.warning("discovery reply from %s: %s", address[0], problem)
        if battery is None:
            return
        if battery.key not in found:
            _LOG.debug("discovered %s at %s", battery.key, battery.host)
        found[battery.key] = battery
        if stop_when is not None and stop_when(battery):
            done.set()

    payload = encode_request(request_id, Method.GET_DEVICE, {"ble_mac": "0"})
    deadline = time.monotonic() + timeout
    with endpoint.listen(request_id, on_reply):
        while not done.is_set():
            for target in targets:
                try:
                    endpoint.send(target, payload)
                except OSError as exc:
                    _LOG.debug("discovery to %s:%s failed: %s", *target, exc)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), min(repeat, left))
    return sorted(found.values(), key=lambda b: tuple(int(x) for x in b.host.split(".")))
