"""JSON-RPC over UDP: request encoding, datagram decoding and typed errors.

Pure functions, no sockets: the transport and the simulator both build on this module.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

MAX_DATAGRAM = 65_535
# Real replies are a few hundred bytes; anything far larger is garbage and is not worth parsing.
MAX_REPLY_BYTES = 16_384
MAX_ID = 65_535  # the firmware keeps ids as uint16
PARSE_ERROR_ID = 0  # the firmware answers unparsable requests with id 0, so we never use it


class MarstekError(Exception):
    """Base class for everything that goes wrong talking to a battery."""


class MalformedReply(MarstekError):
    """A datagram that is not a valid JSON-RPC reply."""


class RequestTimeout(MarstekError):
    """No reply after every attempt."""


class IdentityMismatch(MarstekError):
    """Another battery answers at this address (its `src` carries a different BLE MAC)."""


class UnsupportedMethod(MarstekError):
    """The firmware does not serve this method (remembered per device, not asked again every poll)."""


class RpcError(MarstekError):
    """An error object in a reply."""

    code = 0

    def __init__(self, method: str, code: int, message: str, data: object = None) -> None:
        super().__init__(f"{method}: {message} (code {code}{'' if data is None else f', data {data}'})")
        self.method = method
        self.code = code
        self.message = message
        self.data = data


class ParseError(RpcError):
    code = -32700


class InvalidRequest(RpcError):
    code = -32600


class MethodNotFound(RpcError):
    code = -32601


class InvalidParams(RpcError):
    code = -32602


class InternalError(RpcError):
    code = -32603


class ServerError(RpcError):
    """Reserved range -32000..-32099."""


_ERRORS_BY_CODE: dict[int, type[RpcError]] = {
    cls.code: cls for cls in (ParseError, InvalidRequest, MethodNotFound, InvalidParams, InternalError)
}


def rpc_error(method: str, code: int, message: str, data: object = None) -> RpcError:
    if code in _ERRORS_BY_CODE:
        return _ERRORS_BY_CODE[code](method, code, message, data)
    if -32099 <= code <= -32000:
        return ServerError(method, code, message, data)
    return RpcError(method, code, message, data)


def encode_request(request_id: int, method: str, params: dict[str, Any]) -> bytes:
    if not 1 <= request_id <= MAX_ID:
        raise ValueError(f"request id {request_id} outside 1..{MAX_ID}")
    return json.dumps({"id": request_id, "method": method, "params": params}, separators=(",", ":")).encode()


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    code: int
    message: str = ""
    data: Any = None


class Reply(BaseModel):
    """A reply envelope. Unknown top-level fields are tolerated."""

    model_config = ConfigDict(extra="allow")
    id: int
    src: str | None = None
    result: dict[str, Any] | None = None
    error: ErrorBody | None = None

    @model_validator(mode="after")
    def _one_of_result_or_error(self) -> Reply:
        if (self.result is None) == (self.error is None):
            raise ValueError("a reply carries exactly one of 'result' and 'error'")
        return self

    @property
    def is_parse_error(self) -> bool:
        return self.error is not None and self.error.code == ParseError.code and self.id == PARSE_ERROR_ID


def mac_from_src(src: str | None) -> str | None:
    """`VenusE 3.0-02a1b2c3d4e5` -> `02a1b2c3d4e5` (None when the src carries no MAC)."""
    if not src or "-" not in src:
        return None
    mac = src.rsplit("-", 1)[1].lower()
    return mac if len(mac) == 12 and all(c in "0123456789abcdef" for c in mac) else None


class Echo(BaseModel):
    """A request seen on our own socket (our broadcast coming back, or another client on the port)."""

    model_config = ConfigDict(extra="allow")
    method: str


def decode_datagram(data: bytes) -> Reply | Echo:
    """Parse one datagram; raises MalformedReply with a readable reason for anything else."""
    if not data:
        raise MalformedReply("empty datagram")
    if len(data) > MAX_REPLY_BYTES:
        raise MalformedReply(f"datagram of {len(data)} bytes exceeds the {MAX_REPLY_BYTES}-byte limit")
    try:
        obj = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError as exc:
        raise MalformedReply(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise MalformedReply(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise MalformedReply("JSON nested too deeply") from None
    except ValueError as exc:  # NaN/Infinity, or an integer too long to convert
        raise MalformedReply(f"not usable JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise MalformedReply(f"JSON {type(obj).__name__} where an object was expected")
    if "method" in obj and "result" not in obj and "error" not in obj:
        try:
            return Echo.model_validate(obj)
        except ValidationError as exc:
            raise MalformedReply(describe_validation_error("request echo", exc)) from None
    try:
        return Reply.model_validate(obj)
    except ValidationError as exc:
        raise MalformedReply(describe_validation_error("reply", exc)) from None


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number a device may send")


def describe_validation_error(what: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{where}: {err['msg']}")
    more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return f"invalid {what}: " + "; ".join(parts) + more
