"""Async client for one Marstek Venus battery.

One request in flight per device, a minimum gap between requests and a longer one between writes,
timeouts with retries and backoff, methods the firmware does not serve remembered and skipped, and
writes verified by their effect. Many clients share one `UdpEndpoint` and poll concurrently.

The device is held for one attempt at a time, not for a whole retry loop, so reads and writes interleave:
a poll waits behind at most one attempt of a write, never behind its retries, backoff or verify delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from ..outcome import WriteOutcome, WriteStatus
from .commands import (
    DOD_MAX,
    DOD_MIN,
    AiMode,
    AutoMode,
    CommandError,
    ManualSlot,
    ModeCommand,
    Observation,
    PassiveMode,
    prepare,
    to_config,
    unmet_expectation,
)
from .datapoints import BATTERY_POINTS, READ_METHODS, Method
from .decode import BatterySnapshot
from .firmware import Mode, PowerLimits, parse_mode
from .models import SetResult, validate_result
from .protocol import (
    IdentityMismatch,
    InvalidParams,
    InvalidRequest,
    MalformedReply,
    MarstekError,
    MethodNotFound,
    ParseError,
    Reply,
    RequestTimeout,
    UnsupportedMethod,
    mac_from_src,
    rpc_error,
)
from .transport import UdpEndpoint

_LOG = logging.getLogger(__name__)

DEFAULT_PORT = 30000
DEFAULT_SOC_FLOOR = 12.0  # DOD 88 by default
_RESOLVE_EVERY_S = 300.0
# Reads a firmware may simply not serve (reference section 2); everything else is never given up on.
_SILENCE_MAY_MEAN_UNSUPPORTED = frozenset(
    {
        Method.BAT_STATUS,
        Method.PV_STATUS,
        Method.EM_STATUS,
        Method.WIFI_STATUS,
        Method.BLE_STATUS,
        Method.ES_STATUS,
    }
)


# Per method, its fields that feed a data point some other method is the better source of.
_RANKED_BELOW: dict[Method, list[tuple[str, frozenset[Method]]]] = {}
for _point in BATTERY_POINTS:
    for _rank, _source in enumerate(_point.sources):
        _better = frozenset(s.method for s in _point.sources[:_rank] if s.method is not _source.method)
        if _better:
            _RANKED_BELOW.setdefault(_source.method, []).append((_source.field, _better))

# The device (or another one at its address) refused: resending cannot help.
_REFUSALS = (InvalidParams, InvalidRequest, MethodNotFound, UnsupportedMethod, IdentityMismatch)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Pacing:
    """Timing per device. Defaults follow the reference's recommendations (section 1.8)."""

    request_gap: float = 1.0
    write_gap: float = 5.0
    timeout: float = 3.0  # per write attempt
    # Per read attempt; None = half of `timeout`. Answers take 0.1-0.25 s, and a retry of a read reuses its
    # request id, so a reply later than this still counts while the read is retried.
    read_timeout: float | None = None
    attempts: int = 3
    backoff: tuple[float, ...] = (1.5, 3.0)
    verify_delay: float = 5.0  # after an accepted write, before reading its effect back
    write_attempts: int = 3  # sends of one command until its effect is seen
    clear_attempts: int = 6  # per slot when clearing schedules; the first write is often rejected
    clear_passes: int = 2  # slots cannot be read back and a write can be acked yet ignored (Q12)
    silences_before_unsupported: int = 3  # full timeouts while the device answers other methods
    unsupported_recheck: float = 3600.0

    @property
    def read_attempt_timeout(self) -> float:
        return self.timeout / 2 if self.read_timeout is None else self.read_timeout

    @property
    def shortest_attempt(self) -> float:
        """Less time than this left before a deadline: not worth a request."""
        return self.read_attempt_timeout / 5


class OutOfTime(MarstekError):
    """The caller's deadline (a poll's budget) came before the device answered or could be asked."""

    def __init__(self, message: str, attempts: int = 0) -> None:
        super().__init__(message)
        self.attempts = attempts  # requests sent before the time ran out


@dataclass(frozen=True)
class _Lost:
    """An attempt that drew no usable reply."""

    error: MarstekError
    shortened: bool  # its wait was cut by the deadline: the silence says nothing about the method


@dataclass
class ReadReport:
    """Result of reading a set of methods: what answered, what failed and why."""

    results: dict[Method, dict[str, Any]] = field(default_factory=dict)
    errors: dict[Method, MarstekError] = field(default_factory=dict)
    skipped: list[Method] = field(default_factory=list)
    unread: list[Method] = field(default_factory=list)  # the deadline came first: owed to the next read
    problems: list[str] = field(default_factory=list)

    @property
    def any_answer(self) -> bool:
        return bool(self.results)


class MarstekClient:
    """Talks to one battery. Create with an endpoint, or use `MarstekClient.connect()` in scripts."""

    def __init__(
        self,
        host: str,
        port: int = DEFAULT_PORT,
        *,
        endpoint: UdpEndpoint,
        pacing: Pacing | None = None,
        limits: PowerLimits | None = None,
        ble_mac: str | None = None,
        learned: str | None = None,
    ) -> None:
        self.host = host  # an IP address or a host name (resolved, and re-resolved now and then)
        self.identity = ble_mac.lower() if ble_mac else None  # learned from the first GetDevice otherwise
        self.port = port
        self.endpoint = endpoint
        self.pacing = pacing or Pacing()
        self.limits_override = limits
        self.snapshot = BatterySnapshot()
        self.soc_floor = DEFAULT_SOC_FLOOR
        self.schedule: dict[int, ManualSlot] = {}  # slots this client wrote; the device cannot be read back
        self._lock = asyncio.Lock()
        self._last_request = -1e9
        self._last_write = -1e9
        self._unsupported: dict[Method, float] = {}
        self._silences: dict[Method, int] = {}
        self._answers = 0
        self._answers_at_silence: dict[Method, int] = {}
        self.last_round_trip: float | None = None
        self.last_answer_at: float | None = None  # time.monotonic() of the last reply from this battery
        self.last_replies: dict[Method, dict[str, Any]] = {}
        self.last_src: str | None = None
        # The BLE MAC of another battery that answered at our address (two batteries that swapped their
        # DHCP leases): no write goes there until ours answers there again or is found elsewhere.
        self.stranger: str | None = None
        self._ip: str | None = None
        self._resolved_at = -1e9
        if learned is not None and learned != host:
            self._start_at(learned)

    def _start_at(self, learned: str) -> None:
        """Where to start, given the IP a previous run last found this battery at (`learned`, kept under
        /data) and the configured `host`.

        A configured IP is stale once the battery has moved: start at the learned one. A host name follows
        the battery by itself (DHCP with DNS or mDNS), while the learned IP may be years old (a previous
        version replaced the name with it): the name is asked first, and the learned IP only stands in
        while the name cannot be looked up. A search by BLE MAC still follows a move either way.
        """
        if not _is_ip(learned):
            _LOG.warning("%s: ignoring the stored address %r: it is not an IP address", self.host, learned)
            return
        if _is_ip(self.host):
            _LOG.info("%s: starting at %s, where the battery was last found", self.host, learned)
            self.host = learned
            return
        _LOG.info(
            "%s: the name is asked first; %s, where the battery was last found, stands in while the name "
            "cannot be looked up",
            self.host,
            learned,
        )
        self._ip = learned  # `_resolved_at` stays in the past: the first request looks the name up

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls, host: str, port: int = DEFAULT_PORT, *, local_host: str = "0.0.0.0", pacing: Pacing | None = None
    ) -> AsyncIterator[MarstekClient]:
        """A client with its own endpoint, bound to the API port if free: for scripts and `probe`."""
        endpoint = await UdpEndpoint.open(local_host, port)
        try:
            yield cls(host, port, endpoint=endpoint, pacing=pacing)
        finally:
            endpoint.close()

    transport: Literal["udp"] = "udp"
    transports: tuple[Literal["udp"], ...] = ("udp",)

    async def close(self) -> None:
        """Nothing to hand back: the endpoint is shared, and every Passive sent ends by its countdown."""

    @property
    def address(self) -> tuple[str, int]:
        """Where requests go: the resolved IP (replies are matched on it)."""
        return (self._ip or self.host, self.port)

    async def _resolve(self) -> str:
        """Host names are resolved off the event loop, and again every few minutes (DHCP, DNS changes)."""
        if _is_ip(self.host):
            self._ip = self.host
            return self.host
        if self._ip is None or time.monotonic() - self._resolved_at > _RESOLVE_EVERY_S:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    self.host, self.port, family=socket.AF_INET, type=socket.SOCK_DGRAM
                )
            except OSError as exc:
                if self._ip is None:
                    raise MarstekError(f"cannot resolve {self.host}: {exc}") from None
                _LOG.warning("%s: name lookup failed (%s); keeping %s", self.host, exc, self._ip)
            else:
                self._ip = str(infos[0][4][0])
            self._resolved_at = time.monotonic()
        return self._ip

    @property
    def limits(self) -> PowerLimits:
        """The model's limits, lowered (never raised) by a configured limit."""
        model = self.snapshot.firmware.power_limits
        if self.limits_override is None:
            return model
        return PowerLimits(
            min(model.charge_w, self.limits_override.charge_w),
            min(model.discharge_w, self.limits_override.discharge_w),
        )

    def move_to(self, host: str) -> None:
        """The battery answered from a new IP (DHCP, subnet change): talk to it there from now on."""
        _LOG.info("battery %s moved from %s to %s", self.snapshot.ble_mac or "?", self.host, host)
        self.host = host
        self._ip = None
        self.stranger = None  # found by its own BLE MAC at the new address

    async def found_at(self, ip: str) -> bool:
        """A search found this battery, by its BLE MAC, at `ip`: whether the configured address leads there
        (an IP as it is, a host name looked up afresh: the name may follow a new DHCP lease sooner than the
        periodic lookup sees it). When it does, the battery is where requests go, and commands may too."""
        if _is_ip(self.host):
            here = self.host == ip
        else:
            self._resolved_at = -1e9
            try:
                here = await self._resolve() == ip
            except MarstekError:
                here = False
        if here:
            self.stranger = None
        return here

    # unsupported-method memory --------------------------------------------------------------------

    def is_unsupported(self, method: Method) -> bool:
        marked = self._unsupported.get(method)
        if marked is None:
            return False
        if time.monotonic() - marked > self.pacing.unsupported_recheck:
            del self._unsupported[method]  # ask again now and then: an OTA update may have added it
            return False
        return True

    @property
    def unsupported_methods(self) -> list[Method]:
        return [m for m in self._unsupported if self.is_unsupported(m)]

    def forget_unsupported(self) -> None:
        self._unsupported.clear()
        self._silences.clear()

    def _mark_unsupported(self, method: Method, why: str) -> None:
        if method is Method.GET_DEVICE or method in self._unsupported:
            return
        _LOG.info(
            "%s: %s is not served by this firmware (%s); not asking again for a while", self.host, method, why
        )
        self._unsupported[method] = time.monotonic()

    def _count_silence(self, method: Method) -> None:
        # Silence only counts against optional reads, and only while the device answers other methods:
        # a battery that is offline altogether says nothing about what its firmware supports, and the
        # methods everything depends on (identity, mode, writes) are never given up on.
        if method not in _SILENCE_MAY_MEAN_UNSUPPORTED:
            return
        if self._answers > self._answers_at_silence.get(method, -1):
            self._silences[method] = self._silences.get(method, 0) + 1
            self._answers_at_silence[method] = self._answers
        if self._silences.get(method, 0) >= self.pacing.silences_before_unsupported:
            self._mark_unsupported(
                method, f"no answer {self._silences[method]} times while other methods answer"
            )

    # requests -------------------------------------------------------------------------------------

    async def call(
        self,
        method: Method,
        params: dict[str, Any] | None = None,
        *,
        write: bool = False,
        deadline: float | None = None,
        until_deadline: bool = False,
    ) -> dict[str, Any]:
        """One paced request with retries; returns the `result` object or raises a MarstekError.

        A read waits `read_attempt_timeout` per attempt and resends under the same id; a write waits
        `timeout`, backs off and takes a new id each time. With a `deadline` (time.monotonic()), a read
        stops there with `OutOfTime`; `until_deadline` retries it until then instead of `attempts` times.
        """
        if self.is_unsupported(method):
            raise UnsupportedMethod(f"{method} is not served by the battery at {self.host}")
        if until_deadline and deadline is None:
            raise ValueError("until_deadline needs a deadline")
        if params is None:
            params = {"ble_mac": "0"} if method is Method.GET_DEVICE else {"id": 0}
        pacing = self.pacing
        await self._resolve()
        timeout = pacing.timeout if write else pacing.read_attempt_timeout
        request_id = self.endpoint.allocate_id()
        last_error: MarstekError | None = None
        attempt = 0
        while until_deadline or attempt < pacing.attempts:
            if write and attempt:
                request_id = self.endpoint.allocate_id()  # a late ack must not pass for a later send's
            attempt += 1
            try:
                outcome = await self._exchange(method, params, request_id, timeout, write, deadline)
            except OutOfTime:
                raise self._out_of_time(method, attempt - 1, last_error) from None
            if isinstance(outcome, _Lost):
                last_error = outcome.error
                if outcome.shortened:
                    raise self._out_of_time(method, attempt, last_error)
                if write:
                    await self._backoff(attempt - 1)
                continue
            reply = outcome
            self.last_src = reply.src or self.last_src
            self._check_identity(reply.src)
            self.last_answer_at = time.monotonic()
            # The latest raw answer per method, as it came: what a maintainer asks for in a bug report.
            self.last_replies[method] = (
                {"result": reply.result}
                if reply.error is None
                else {"error": {"code": reply.error.code, "message": reply.error.message}}
            )
            if reply.error is not None:
                error = rpc_error(method, reply.error.code, reply.error.message, reply.error.data)
                if isinstance(error, ParseError):
                    # Sporadic on valid requests under load (Q10): just ask again.
                    last_error = error
                    continue
                self._answers += 1
                if isinstance(error, MethodNotFound):
                    self._mark_unsupported(method, "Method not found")
                raise error
            self._answers += 1
            self._silences.pop(method, None)
            assert reply.result is not None
            return reply.result
        if isinstance(last_error, RequestTimeout):
            self._count_silence(method)
            raise RequestTimeout(f"{method}: no reply from {self.host}:{self.port} after {attempt} attempts")
        assert last_error is not None
        raise last_error

    async def _exchange(
        self,
        method: Method,
        params: dict[str, Any],
        request_id: int,
        timeout: float,
        write: bool,
        deadline: float | None,
    ) -> Reply | _Lost:
        """One attempt. The device is held only while this attempt is on the wire."""
        pacing = self.pacing
        while True:
            if write:
                # The long gap between writes is waited without holding the device: polls go on meanwhile.
                await self._sleep_until(self._last_write + pacing.write_gap, deadline)
            async with self._turn(deadline):
                if write and time.monotonic() < self._last_write + pacing.write_gap:
                    continue  # another write went first
                if write and self.stranger is not None:
                    # Checked here, with the device held: a poll may have seen the stranger meanwhile. Only
                    # the acknowledgement would show it otherwise, after the other battery carried it out.
                    raise IdentityMismatch(
                        f"{method} not sent: another battery ({self.stranger}) answers at {self.host}; "
                        f"commands wait until {self.identity} answers there again or is found elsewhere"
                    )
                await self._sleep_until(self._last_request + pacing.request_gap, deadline)
                wait = timeout if deadline is None else min(timeout, deadline - time.monotonic())
                sent = time.monotonic()
                answered = False
                try:
                    reply = await self.endpoint.request(self.address, request_id, method, params, wait)
                    answered = True
                except TimeoutError:
                    return _Lost(self._timeout_error(method, sent), shortened=wait < timeout)
                except ConnectionError as exc:  # the endpoint is gone: retrying cannot help
                    raise MarstekError(f"{method}: {exc}") from None
                except OSError as exc:  # e.g. network unreachable: like a lost packet
                    return _Lost(
                        MarstekError(f"{method}: sending to {self.host} failed: {exc}"), shortened=False
                    )
                finally:
                    now = time.monotonic()
                    # Silence since the send is as good as a gap: a lost request did not load the device.
                    self._last_request = now if answered else max(self._last_request, sent)
                    if write:
                        self._last_write = now
                self.last_round_trip = time.monotonic() - sent
                return reply

    @contextlib.asynccontextmanager
    async def _turn(self, deadline: float | None) -> AsyncIterator[None]:
        """The device, for one attempt; a wait that would outlast the deadline ends in `OutOfTime`."""
        if deadline is None:
            await self._lock.acquire()
        else:
            try:
                async with asyncio.timeout(deadline - self.pacing.shortest_attempt - time.monotonic()):
                    await self._lock.acquire()
            except TimeoutError:
                raise OutOfTime("the device was busy until the deadline") from None
        try:
            yield
        finally:
            self._lock.release()

    async def _sleep_until(self, when: float, deadline: float | None) -> None:
        now = time.monotonic()
        if deadline is not None and deadline - max(when, now) < self.pacing.shortest_attempt:
            raise OutOfTime("no time left for a request before the deadline")
        if when > now:
            await asyncio.sleep(when - now)

    def _out_of_time(self, method: Method, attempts: int, last_error: MarstekError | None) -> OutOfTime:
        if last_error is None:
            return OutOfTime(f"{method}: not asked, the time for this read ran out", attempts)
        return OutOfTime(
            f"{last_error} (the time for this read ran out after {attempts} attempt(s))", attempts
        )

    def _timeout_error(self, method: Method, since: float) -> MarstekError:
        """No usable reply: say so, or say what the device sent instead if it was garbage."""
        seen = self.endpoint.malformed_from.get(self.address[0])
        if seen is not None and seen[0] >= since:
            return MalformedReply(f"{method}: {self.host} sent an invalid reply: {seen[1]}")
        return RequestTimeout(f"{method}: no reply from {self.host}:{self.port}")

    def _check_identity(self, src: str | None) -> None:
        """Replies carry `<model>-<ble_mac>`: an address now used by another battery is caught at once."""
        mac = mac_from_src(src)
        if not self.identity or not mac:
            return
        if mac == self.identity:
            self.stranger = None
            return
        self.stranger = mac
        raise IdentityMismatch(f"another battery ({mac}) answers at {self.host}; expected {self.identity}")

    async def _backoff(self, attempt: int) -> None:
        if attempt + 1 < self.pacing.attempts and self.pacing.backoff:
            await asyncio.sleep(self.pacing.backoff[min(attempt, len(self.pacing.backoff) - 1)])

    # reads ----------------------------------------------------------------------------------------

    async def read(
        self,
        methods: Iterable[Method] = READ_METHODS,
        *,
        deadline: float | None = None,
        persist: bool = False,
        give_up_after: int = 2,
        on_first_answer: Callable[[], None] | None = None,
        only: Mapping[Method, Collection[str]] | None = None,
    ) -> ReadReport:
        """Read these methods one after the other, in the order given; errors are collected, not raised.

        Each answer goes into `snapshot` as it comes. With a `deadline`, what could not be read by then
        is listed in `unread`. `persist` retries the first method until the battery answers or the
        deadline comes, so lost packets cost retries rather than freshness. When nothing has answered and
        `give_up_after` methods in a row were silent, the rest is skipped. `on_first_answer` is called at
        the first answer, before the rest is read. `only` names, per method, the wire fields of its answer
        that go into `snapshot`: the rest of that answer is in the report but leaves the snapshot's values
        (and their ages) as they were, e.g. a lesser source's copies of what a poll read from a better one.
        A method it does not name goes in whole.
        """
        report = ReadReport()
        wanted = list(dict.fromkeys(methods))
        if self.snapshot.firmware.ver is None and Method.GET_DEVICE not in wanted:
            wanted.insert(0, Method.GET_DEVICE)  # scaling depends on the firmware: identify first
        before = self.snapshot
        silent_in_a_row = 0
        asked = 0
        for index, method in enumerate(wanted):
            if silent_in_a_row >= give_up_after and not report.results:
                # Nothing answers at all: the device is away, not missing methods. Don't hammer it.
                report.skipped.extend(wanted[index:])
                break
            if self.is_unsupported(method):
                report.skipped.append(method)
                continue
            insist = persist and deadline is not None and asked == 0
            asked += 1
            try:
                raw = await self.call(method, deadline=deadline, until_deadline=insist)
            except UnsupportedMethod:
                report.skipped.append(method)
                continue
            except OutOfTime as exc:
                report.errors[method] = exc
                report.unread.extend(wanted[index:])
                break
            except IdentityMismatch as exc:
                report.errors[method] = exc
                report.results.clear()  # whatever answered belongs to another battery
                self.snapshot = before
                break
            except MarstekError as exc:
                report.errors[method] = exc
                silent_in_a_row = silent_in_a_row + 1 if isinstance(exc, RequestTimeout) else 0
                continue
            silent_in_a_row = 0
            fields, problems = validate_result(method, raw)
            first = not report.results
            report.results[method] = fields
            report.problems.extend(problems)
            for problem in problems:
                _LOG.warning("%s: %s", self.host, problem)
            if method is Method.GET_DEVICE and self.identity is None:
                # Some HMG-50 Venus C builds leave the MACs out; the reply's src still ends in it.
                mac = str(fields.get("ble_mac") or mac_from_src(self.last_src) or "").lower()
                self.identity = mac or None
            self._merge(method, fields, report, None if only is None else only.get(method))
            if first and on_first_answer is not None:
                on_first_answer()
        return report

    def _merge(
        self, method: Method, fields: dict[str, Any], report: ReadReport, keep: Collection[str] | None = None
    ) -> None:
        """Into the snapshot at once: its age is the age of the last answer, not of the last full read.

        Within one read the table's ranking of sources still holds: a value a better source has already
        given is not overwritten by a lesser one that answered later. With `keep`, only those fields go in.
        """
        answered = report.results.keys() - {method}
        outranked = {name for name, better in _RANKED_BELOW.get(method, ()) if better & answered}
        fresh = {
            name: value
            for name, value in fields.items()
            if name not in outranked and (keep is None or name in keep)
        }
        previous_ver = self.snapshot.firmware.ver
        self.snapshot = self.snapshot.merged({method: fresh}, list(report.problems))
        if previous_ver is not None and self.snapshot.firmware.ver != previous_ver:
            _LOG.info("%s: firmware changed %s -> %s", self.host, previous_ver, self.snapshot.firmware.ver)
            self.forget_unsupported()

    async def get_device(self) -> dict[str, Any]:
        """Marstek.GetDevice: identity and firmware."""
        report = await self.read([Method.GET_DEVICE])
        if Method.GET_DEVICE in report.errors:
            raise report.errors[Method.GET_DEVICE]
        return report.results.get(Method.GET_DEVICE, {})

    async def observe(self) -> Observation:
        """ES.GetMode as an Observation (mode, AC power, SOC) for write verification.

        Power and SOC as the snapshot took them from this very reply, decoded and screened: an implausible
        one (a SOC of 250 % that would excuse a charge that does not flow) is unknown, not evidence."""
        raw = await self.call(Method.ES_MODE)
        fields, _ = validate_result(Method.ES_MODE, raw)
        self.snapshot = snapshot = self.snapshot.merged({Method.ES_MODE: fields}, [])

        def fresh(key: str) -> float | None:
            return snapshot.number(key) if snapshot.seen.get(key) == snapshot.updated_at else None

        return Observation(parse_mode(fields.get("mode")), fresh("ac_power"), fresh("soc"))

    # writes ---------------------------------------------------------------------------------------

    async def _refuse_blind_write(self, command: str) -> WriteOutcome | None:
        """Limits and scaling depend on the model: identify the battery before the first write."""
        if self.snapshot.firmware.ver is None:
            await self.read([Method.GET_DEVICE])
        if self.snapshot.firmware.ver is None:
            return self._outcome(
                WriteStatus.REJECTED, command, 0, "the battery has not identified itself yet", ""
            )
        return None

    async def set_mode(self, command: ModeCommand) -> WriteOutcome:
        """ES.SetMode, resent until the effect is seen or the attempts run out."""
        described = command.describe()
        if (refusal := await self._refuse_blind_write(described)) is not None:
            return refusal
        try:
            command, clamped = prepare(command, self.snapshot.firmware, self.limits)
        except CommandError as exc:
            return self._outcome(WriteStatus.REJECTED, described, 0, str(exc), "")
        if clamped:
            _LOG.warning("%s: %s", self.host, clamped)
        params = {"id": 0, "config": to_config(command)}
        described = command.describe()
        detail = ""
        accepted = refused = attempts = 0
        for attempts in range(1, self.pacing.write_attempts + 1):
            try:
                result = SetResult.model_validate(await self.call(Method.SET_MODE, params, write=True))
            except _REFUSALS as exc:
                return self._outcome(WriteStatus.REJECTED, described, attempts, str(exc), clamped)
            except RequestTimeout as exc:
                # The acknowledgements may all have been lost, or come too late, while the battery took the
                # command: what it does now is the answer (a Manual slot's content cannot be read back).
                if isinstance(command, ManualSlot) or not await self._seen_applied(command):
                    detail = str(exc)
                    continue
                return self._outcome(
                    WriteStatus.APPLIED,
                    described,
                    attempts,
                    "no acknowledgement in time, but ES.GetMode shows it applied",
                    clamped,
                )
            except (MarstekError, ValueError) as exc:
                detail = str(exc)
                continue
            if not result.set_result:
                refused += 1
                detail = "device answered set_result false"
                continue
            accepted += 1
            if isinstance(command, ManualSlot):
                self.schedule[command.slot] = command
            await asyncio.sleep(self.pacing.verify_delay)
            try:
                seen = await self.observe()
            except IdentityMismatch as exc:
                return self._outcome(WriteStatus.REJECTED, described, attempts, str(exc), clamped)
            except MarstekError as exc:
                detail = f"accepted, but the effect could not be read back: {exc}"
                continue
            active_slot = self._slot_active(command)
            unmet = unmet_expectation(command, seen, self.soc_floor, slot_active=active_slot)
            if unmet is None:
                power = "" if seen.ac_power is None else f", AC {seen.ac_power:+.0f} W"
                if isinstance(command, ManualSlot) and not active_slot:
                    # The mode is confirmed; a slot that is not running now cannot be checked by its power.
                    return self._outcome(
                        WriteStatus.ACCEPTED,
                        described,
                        attempts,
                        f"mode Manual confirmed{power}; the slot cannot be read back",
                        clamped,
                    )
                if seen.ac_power is None and (isinstance(command, PassiveMode) or active_slot):
                    # Not reported, or reported implausibly: the mode is all that was seen.
                    return self._outcome(
                        WriteStatus.ACCEPTED,
                        described,
                        attempts,
                        f"mode {command.mode.value} confirmed; its AC power could not be read back",
                        clamped,
                    )
                return self._outcome(
                    WriteStatus.APPLIED, described, attempts, f"verified by ES.GetMode{power}", clamped
                )
            detail = f"accepted but not applied: {unmet}"
        status = WriteStatus.REJECTED if refused and not accepted else WriteStatus.NOT_APPLIED
        return self._outcome(status, described, attempts, detail, clamped)

    @staticmethod
    def _slot_active(command: ModeCommand) -> bool:
        return isinstance(command, ManualSlot) and command.enabled and command.covers(datetime.now())

    async def _seen_applied(self, command: ModeCommand) -> bool:
        """Whether ES.GetMode shows the command's mode and, for Passive, its power (a power that cannot
        be read is no proof)."""
        try:
            seen = await self.observe()
        except MarstekError:
            return False
        if isinstance(command, PassiveMode) and seen.ac_power is None:
            return False
        return unmet_expectation(command, seen, self.soc_floor) is None

    def _outcome(
        self, status: WriteStatus, command: str, attempts: int, detail: str, clamped: str
    ) -> WriteOutcome:
        outcome = WriteOutcome(status, command, attempts, detail, clamped)
        level = logging.INFO if outcome.ok else logging.WARNING
        _LOG.log(
            level, "%s: %s -> %s after %d attempt(s): %s", self.host, command, status.value, attempts, detail
        )
        return outcome

    async def _simple_write(self, method: Method, params: dict[str, Any], described: str) -> WriteOutcome:
        """Setters without a getter: "accepted" is all that can be known."""
        if (refusal := await self._refuse_blind_write(described)) is not None:
            return refusal
        last = ""
        for attempt in range(1, self.pacing.write_attempts + 1):
            try:
                result = SetResult.model_validate(await self.call(method, params, write=True))
            except _REFUSALS as exc:
                return self._outcome(WriteStatus.REJECTED, described, attempt, str(exc), "")
            except (MarstekError, ValueError) as exc:
                last = str(exc)
                continue
            if result.set_result:
                return self._outcome(
                    WriteStatus.ACCEPTED, described, attempt, "accepted; it cannot be read back", ""
                )
            last = "device answered set_result false"
        return self._outcome(WriteStatus.NOT_APPLIED, described, self.pacing.write_attempts, last, "")

    async def set_dod(self, depth_percent: int) -> WriteOutcome:
        """DOD.SET: depth of discharge 30..88 %, i.e. a SOC floor of 70..12 %."""
        value = max(DOD_MIN, min(DOD_MAX, int(depth_percent)))
        outcome = await self._simple_write(Method.SET_DOD, {"value": value}, f"depth of discharge {value} %")
        if outcome.ok:
            self.soc_floor = 100.0 - value
        return outcome

    async def set_led(self, on: bool) -> WriteOutcome:
        return await self._simple_write(Method.LED_CTRL, {"state": int(on)}, f"LED {'on' if on else 'off'}")

    async def set_ble_advertising(self, on: bool) -> WriteOutcome:
        # Inverted on the wire: enable 0 = advertising ON.
        return await self._simple_write(
            Method.BLE_ADV, {"enable": 0 if on else 1}, f"BLE advertising {'on' if on else 'off'}"
        )

    # manual schedules -----------------------------------------------------------------------------

    async def write_slot(self, slot: ManualSlot) -> WriteOutcome:
        return await self.set_mode(slot)

    async def write_schedule(self, slots: Iterable[ManualSlot]) -> list[WriteOutcome]:
        """Write all slots: the given ones, and a disabled placeholder in every other slot."""
        by_slot = {s.slot: s for s in slots}
        count = self.snapshot.firmware.manual_slots
        return [await self.set_mode(by_slot.get(i, ManualSlot.disabled(i))) for i in range(count)]

    async def clear_schedules(self, *, restore: bool = True) -> WriteOutcome:
        """Disable every slot (the first writes are often rejected, so each slot is retried patiently).

        Writing slots leaves the battery in Manual with nothing scheduled, i.e. idle; with `restore` the
        mode it had before (Auto or AI) is set again.
        """
        if (refusal := await self._refuse_blind_write("clear schedules")) is not None:
            return refusal
        before = self.snapshot.mode
        failed: set[int] = set()
        sends = 0
        for _ in range(self.pacing.clear_passes):
            for slot in range(self.snapshot.firmware.manual_slots):
                params = {"id": 0, "config": to_config(ManualSlot.disabled(slot))}
                for _ in range(self.pacing.clear_attempts):
                    sends += 1
                    try:
                        reply = await self.call(Method.SET_MODE, params, write=True)
                        if SetResult.model_validate(reply).set_result:
                            self.schedule[slot] = ManualSlot.disabled(slot)
                            failed.discard(slot)
                            break
                    except _REFUSALS as exc:
                        return self._outcome(WriteStatus.REJECTED, "clear schedules", sends, str(exc), "")
                    except (MarstekError, ValueError):
                        pass
                else:
                    failed.add(slot)
        if failed:
            return self._outcome(
                WriteStatus.NOT_APPLIED,
                "clear schedules",
                sends,
                f"slots {sorted(failed)} not confirmed by the battery",
                "",
            )
        passes = self.pacing.clear_passes
        slots = self.snapshot.firmware.manual_slots
        detail = f"{slots} disabled slots accepted {passes}x (slots cannot be read back)"
        if restore and before in (Mode.AUTO, Mode.AI):
            restored = await self.set_mode(AutoMode() if before is Mode.AUTO else AiMode())
            detail += f"; {before.value} mode restored: {restored.status.value}"
            if not restored.ok:
                return self._outcome(WriteStatus.NOT_APPLIED, "clear schedules", sends, detail, "")
        return self._outcome(WriteStatus.ACCEPTED, "clear schedules", sends, detail, "")
