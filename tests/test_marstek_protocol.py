"""The JSON-RPC envelope and reply validation, without sockets."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marstek_webasto_addon.devices.marstek.datapoints import Method
from marstek_webasto_addon.devices.marstek.models import validate_result
from marstek_webasto_addon.devices.marstek.protocol import (
    MAX_REPLY_BYTES,
    Echo,
    InvalidParams,
    MalformedReply,
    MethodNotFound,
    ParseError,
    Reply,
    RpcError,
    ServerError,
    decode_datagram,
    encode_request,
    rpc_error,
)


def test_request_is_compact_json_with_integer_id_and_params() -> None:
    data = encode_request(17, "ES.GetStatus", {"id": 0})
    assert json.loads(data) == {"id": 17, "method": "ES.GetStatus", "params": {"id": 0}}
    assert b" " not in data


@pytest.mark.parametrize("bad_id", [0, -1, 65_536])
def test_request_ids_stay_within_uint16_and_never_zero(bad_id: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        encode_request(bad_id, "ES.GetMode", {"id": 0})


def test_pretty_printed_cjson_reply_is_parsed() -> None:
    data = (
        b'{\n\t"id":\t0,\n\t"src":\t"VenusE 3.0-02a1b2c3d4e5",\n\t"error":\t{\n\t\t"code":\t-32700,'
        b'\n\t\t"message":\t"Parse error",\n\t\t"data":\t403\n\t}\n}'
    )
    reply = decode_datagram(data)
    assert isinstance(reply, Reply)
    assert reply.is_parse_error
    assert reply.src == "VenusE 3.0-02a1b2c3d4e5"


def test_own_broadcast_echo_is_recognised() -> None:
    echo = decode_datagram(encode_request(5, "Marstek.GetDevice", {"ble_mac": "0"}))
    assert isinstance(echo, Echo)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b'{"id": 3, "src": "VenusE-1", "result": {"soc": 5', "not JSON"),
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"[1, 2, 3]", "JSON list"),
        (b'{"id": "abc", "result": {}}', "id"),
        (b'{"id": 3, "src": "x"}', "exactly one"),
        (b'{"id": 3, "result": {}, "error": {"code": 1}}', "exactly one"),
        (b'{"id": 3, "error": {"message": "no code"}}', "error.code"),
        (b"[" * 10_000 + b"]" * 10_000, "exceeds"),
    ],
)
def test_malformed_datagrams_raise_a_readable_error(data: bytes, reason: str) -> None:
    with pytest.raises(MalformedReply, match=reason):
        decode_datagram(data)


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1" * 5000])
def test_non_numbers_and_absurd_integers_are_malformed(literal: bytes) -> None:
    with pytest.raises(MalformedReply, match="not usable JSON"):
        decode_datagram(b'{"id": 1, "src": "VenusE-02a1b2c3d400", "result": {"bat_soc": ' + literal + b"}}")


def test_huge_datagram_is_refused_before_parsing() -> None:
    data = json.dumps({"id": 1, "result": {"pad": "x" * MAX_REPLY_BYTES}}).encode()
    with pytest.raises(MalformedReply, match="exceeds"):
        decode_datagram(data)


def test_deep_nesting_is_a_malformed_reply_not_a_crash() -> None:
    with pytest.raises(MalformedReply):
        decode_datagram(b"[" * 5000 + b"]" * 5000)


def test_unknown_fields_are_tolerated() -> None:
    reply = decode_datagram(b'{"id": 9, "src": "VenusA-bc2a33000000", "result": {"soc": 5}, "extra": true}')
    assert isinstance(reply, Reply)
    assert reply.result == {"soc": 5}


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (-32700, ParseError),
        (-32601, MethodNotFound),
        (-32602, InvalidParams),
        (-32050, ServerError),
        (7, RpcError),
    ],
)
def test_error_codes_map_to_typed_exceptions(code: int, cls: type[RpcError]) -> None:
    error = rpc_error("PV.GetStatus", code, "Method not found", 424)
    assert type(error) is cls
    assert "PV.GetStatus" in str(error)
    assert error.code == code


def test_a_bad_field_loses_only_that_field() -> None:
    fields, problems = validate_result(
        Method.BAT_STATUS, {"id": 0, "soc": "lots", "bat_temp": 24.0, "rated_capacity": 5120.0, "unknown": 1}
    )
    assert fields == {"bat_temp": 24.0, "rated_capacity": 5120.0}
    assert len(problems) == 1
    assert "soc" in problems[0]
    assert "'lots'" in problems[0]


def test_numbers_arrive_as_strings_or_floats() -> None:
    fields, problems = validate_result(
        Method.BAT_STATUS, {"soc": "57", "bat_capacity": 716.0, "charg_flag": 1}
    )
    assert problems == []
    assert fields == {"soc": 57.0, "bat_capacity": 716.0, "charg_flag": True}


def test_missing_fields_are_simply_absent() -> None:
    fields, problems = validate_result(Method.ES_STATUS, {"id": 0})
    assert fields == {}
    assert problems == []


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.binary(max_size=2048))
def test_any_bytes_either_parse_or_raise_malformed_reply(data: bytes) -> None:
    try:
        result = decode_datagram(data)
    except MalformedReply:
        return
    assert isinstance(result, Reply | Echo)


@given(json_values)
def test_any_json_either_parses_or_raises_malformed_reply(value: object) -> None:
    with contextlib.suppress(MalformedReply):
        decode_datagram(json.dumps(value).encode())


@given(
    st.integers(min_value=1, max_value=65_535),
    st.dictionaries(st.sampled_from(["soc", "bat_temp", "charg_flag", "x"]), json_values, max_size=4),
    st.booleans(),
)
def test_valid_replies_round_trip(request_id: int, result: dict[str, object], pretty: bool) -> None:
    reply = {"id": request_id, "src": "VenusE-02a1b2c3d400", "result": result}
    text = json.dumps(reply, indent="\t" if pretty else None)
    parsed = decode_datagram(text.encode())
    assert isinstance(parsed, Reply)
    assert parsed.id == request_id
    assert parsed.result == result
    # validating any result never raises; it only reports problems
    fields, problems = validate_result(Method.BAT_STATUS, result)
    assert set(fields) <= {"soc", "bat_temp", "charg_flag"}
    assert all(isinstance(p, str) for p in problems)
