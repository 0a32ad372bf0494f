"""Requests made by hand on the wire: each caller mistake gets a precise status, never INTERNAL.

Whatever is sent, the answer is OK, INVALID_ARGUMENT (with a google.rpc.BadRequest
naming the field when one field is at fault) or RESOURCE_EXHAUSTED; a request
that fails stores nothing, and the server keeps serving.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2

from faultsvc.app import FaultServer
from faultsvc.v1 import fault_pb2
from faultsvc.v1 import fault_service_pb2 as pb
from tests.robustness.outcomes import named_field, outcome, stored_rows
from tests.robustness.wire import (
    END_GROUP,
    FIXED32,
    FIXED64,
    START_GROUP,
    VARINT,
    length_delimited,
    number,
    raw_method,
    tag,
    varint,
)
from tests.support.calls import ADMIN, Stub, bad_request_fields, record
from tests.support.latency import HEALTH_CHECK_BOUND_SECONDS, slowest_health_check_during
from tests.support.rpcs import SERVICE

PREFIX = f"/{SERVICE.full_name}/"

# A valid request of every RPC; the tests append bad fields to its bytes (the
# last value of a field wins, and every one of them must parse).
VALID: dict[str, Message] = {
    "RecordFault": pb.RecordFaultRequest(instance_id="i-valid", message="m"),
    "GetLatestFault": pb.GetLatestFaultRequest(instance_id="i-valid"),
    "BatchGetLatestFaults": pb.BatchGetLatestFaultsRequest(instance_ids=["i-valid"]),
    "ListFaults": pb.ListFaultsRequest(instance_id="i-valid"),
    "ClearFaults": pb.ClearFaultsRequest(instance_id="i-valid"),
    "SearchFaults": pb.SearchFaultsRequest(filter='request_id = "req-1"'),
    "WatchFaults": pb.WatchFaultsRequest(filter='instance_id = "i-valid"'),
    "RankFaults": pb.RankFaultsRequest(start_time=timestamp_pb2.Timestamp(seconds=1_795_000_000)),
}

STRING_FIELDS = [
    (method.name, field.name)
    for method in SERVICE.methods
    for field in method.input_type.fields
    if field.type == FieldDescriptor.TYPE_STRING
]

NOT_UTF8 = {
    "latin-1": b"caf\xe9",
    "lone continuation byte": b"\x80",
    "0xff": b"\xff\xfe",
    "cut multi-byte character": b"\xe2\x82",
    "overlong NUL": b"\xc0\x80",
    "UTF-16 surrogate": b"\xed\xa0\x80",
    "beyond U+10FFFF": b"\xf4\x90\x80\x80",
}


@pytest.fixture
async def channel(server: FaultServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.target) as channel:
        yield channel


@pytest.fixture(autouse=True)
async def still_serving_afterwards(stub: Stub) -> AsyncIterator[None]:
    yield
    instance = f"after-{uuid.uuid4()}"
    recorded = await record(stub, instance, "still serving")
    latest = await stub.GetLatestFault(pb.GetLatestFaultRequest(instance_id=instance))
    assert latest.fault == recorded


async def call_raw(
    channel: grpc.aio.Channel, method: str, data: bytes
) -> tuple[grpc.StatusCode, list[str], bytes]:
    """The status, the fields a BadRequest names, and the response's bytes."""
    answer = await outcome(raw_method(channel, PREFIX + method)(data, timeout=30))
    if not isinstance(answer, grpc.aio.AioRpcError):
        return grpc.StatusCode.OK, [], answer
    invalid = answer.code() == grpc.StatusCode.INVALID_ARGUMENT
    return answer.code(), bad_request_fields(answer) if invalid else [], b""


@pytest.mark.parametrize(("method", "field"), STRING_FIELDS)
async def test_invalid_utf8_in_any_string_field_is_invalid_argument_naming_it(
    server: FaultServer, stub: Stub, channel: grpc.aio.Channel, method: str, field: str
) -> None:
    descriptor = SERVICE.methods_by_name[method].input_type.fields_by_name[field]
    await record(stub, "i-valid", "must stay stored and live")
    rows = await stored_rows(server.engine, live_only=True)
    for bad in NOT_UTF8.values():
        data = VALID[method].SerializeToString() + length_delimited(descriptor.number, b"ok" + bad)
        code, named, _ = await call_raw(channel, method, data)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, bad
        # The valid request already holds one instance id: the bad one is the second.
        assert named == [f"{field}[1]" if descriptor.is_repeated else field], bad
    assert await stored_rows(server.engine, live_only=True) == rows


async def test_invalid_utf8_in_the_health_check_names_the_field(
    channel: grpc.aio.Channel,
) -> None:
    check = raw_method(channel, "/grpc.health.v1.Health/Check")
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await check(length_delimited(1, b"\xff"))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(failure.value) == ["service"]
    healthy = health_pb2.HealthCheckResponse.FromString(
        await check(health_pb2.HealthCheckRequest().SerializeToString())
    )
    assert healthy.status == health_pb2.HealthCheckResponse.SERVING


async def test_nul_characters_are_stored_verbatim(stub: Stub) -> None:
    instance = f"nul\x00{uuid.uuid4()}"
    fields = {"details": "a\x00b\x00", "source": "\x00", "host": "h\x00st"}
    recorded = await record(stub, instance, "\x00 message \x00", **fields)
    latest = await stub.GetLatestFault(
        pb.GetLatestFaultRequest(instance_id=instance), metadata=ADMIN
    )
    assert latest.fault.id == recorded.id
    assert (latest.fault.instance_id, latest.fault.message) == (instance, "\x00 message \x00")
    assert (latest.fault.details, latest.fault.source, latest.fault.host) == (
        "a\x00b\x00",
        "\x00",
        "h\x00st",
    )


@pytest.mark.parametrize(
    "unknown",
    [
        length_delimited(99, b"\xff not UTF-8 is fine in an unknown field"),
        number(99, 2**63),
        tag(99, FIXED64) + bytes(8),
        tag(99, FIXED32) + bytes(4),
        tag(99, START_GROUP) + number(1, 7) + tag(99, END_GROUP),
        # A known field with another wire type is an unknown field too.
        number(3, 42),
    ],
    ids=["string", "varint", "fixed64", "fixed32", "group", "details-as-varint"],
)
async def test_unknown_fields_are_ignored_as_protobuf_says(
    channel: grpc.aio.Channel, unknown: bytes
) -> None:
    instance = str(uuid.uuid4())
    request = pb.RecordFaultRequest(instance_id=instance, message="from a newer client")
    code, _, response = await call_raw(
        channel, "RecordFault", request.SerializeToString() + unknown
    )
    assert code == grpc.StatusCode.OK
    fault = pb.RecordFaultResponse.FromString(response).fault
    assert (fault.instance_id, fault.message) == (instance, "from a newer client")


async def test_every_truncation_of_a_request_is_ok_or_invalid_and_never_half_stored(
    server: FaultServer, channel: grpc.aio.Channel
) -> None:
    whole = pb.RecordFaultRequest(
        instance_id="i-truncated",
        message="m" * 130,  # a two-byte length
        details="détails ✓",
        source="s",
        host="h",
        fault_id=str(uuid.uuid4()),
    )
    whole.occur_time.GetCurrentTime()
    data = whole.SerializeToString()
    outcomes = set()
    for end in range(len(data)):
        rows = await stored_rows(server.engine)
        code, _, response = await call_raw(channel, "RecordFault", data[:end])
        outcomes.add(code)
        if code == grpc.StatusCode.OK:
            assert pb.RecordFaultResponse.FromString(response).fault.instance_id == "i-truncated"
        else:
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (end, code)
            assert await stored_rows(server.engine) == rows, end
    assert outcomes == {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}


@pytest.mark.parametrize(
    "data",
    [
        length_delimited(2, b"m") + tag(1, 2) + varint(100) + b"short",
        length_delimited(1, b"i") + length_delimited(2, b"m") + b"\x0a",
        length_delimited(1, b"i") + tag(7, 2) + varint(5) + number(1, 1),
        b"\xff" * 11,
        tag(0, VARINT) + b"\x01",
        tag(5, 7),
        tag(9, END_GROUP),
        tag(9, START_GROUP) + number(1, 1),
        tag(1, VARINT) + b"\x80" * 11,
    ],
    ids=[
        "length-past-the-end",
        "tag-without-value",
        "nested-message-cut-short",
        "varint-too-long",
        "field-number-zero",
        "invalid-wire-type",
        "end-group-without-start",
        "group-never-closed",
        "eleven-byte-varint",
    ],
)
async def test_corrupt_protobuf_is_invalid_argument_naming_no_field(
    server: FaultServer, channel: grpc.aio.Channel, data: bytes
) -> None:
    rows = await stored_rows(server.engine)
    code, fields, _ = await call_raw(channel, "RecordFault", data)
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, [])
    assert await stored_rows(server.engine) == rows


@pytest.mark.parametrize(
    "filler",
    [tag(9, VARINT) + b"\x01", tag(1, VARINT) + b"\x01", length_delimited(2, b"m")],
    ids=["unknown-fields", "wrong-wire-types", "repeated-strings"],
)
@pytest.mark.parametrize(
    ("last", "named"),
    [(tag(1, 2) + varint(100) + b"short", []), (length_delimited(1, b"\xff"), ["instance_id"])],
    ids=["cut-short", "not-utf8"],
)
async def test_four_megabytes_that_do_not_parse_never_hold_up_other_callers(
    server: FaultServer,
    channel: grpc.aio.Channel,
    filler: bytes,
    last: bytes,
    named: list[str],
) -> None:
    limit = server.settings.max_receive_message_bytes
    data = filler * ((limit - 64) // len(filler)) + last
    rows = await stored_rows(server.engine)

    async def hostile_calls() -> None:
        for _ in range(3):
            assert await call_raw(channel, "RecordFault", data) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                named,
                b"",
            )

    worst = await slowest_health_check_during(server.target, hostile_calls())
    assert worst < HEALTH_CHECK_BOUND_SECONDS, f"a health check waited {worst * 1000:.0f} ms"
    assert await stored_rows(server.engine) == rows


async def test_a_request_beyond_the_receive_limit_is_resource_exhausted(
    server: FaultServer, channel: grpc.aio.Channel
) -> None:
    limit = server.settings.max_receive_message_bytes
    rows = await stored_rows(server.engine)
    oversize = pb.RecordFaultRequest(instance_id="i-big", message="m", details="x" * limit)
    code, _, _ = await call_raw(channel, "RecordFault", oversize.SerializeToString())
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await stored_rows(server.engine) == rows

    # Just under the limit is a fault like any other, its details cut to 65,535 bytes.
    fits = pb.RecordFaultRequest(instance_id="i-big", message="m", details="x" * (limit - 100))
    code, _, response = await call_raw(channel, "RecordFault", fits.SerializeToString())
    assert code == grpc.StatusCode.OK
    assert pb.RecordFaultResponse.FromString(response).fault.instance_id == "i-big"


@pytest.mark.parametrize(
    ("page_size", "expected"),
    [(2**31 - 1, grpc.StatusCode.OK), (2**40, grpc.StatusCode.OK), (-1, "page_size")],
    ids=["int32-max", "beyond-int32", "minus-one"],
)
async def test_huge_page_sizes_are_capped(
    stub: Stub, channel: grpc.aio.Channel, page_size: int, expected: object
) -> None:
    instance = str(uuid.uuid4())
    for n in range(3):
        await record(stub, instance, f"fault {n}", fingerprint=str(n))
    data = length_delimited(1, instance.encode()) + number(2, page_size)
    code, named, response = await call_raw(channel, "ListFaults", data)
    if expected == grpc.StatusCode.OK:
        assert code == grpc.StatusCode.OK
        assert len(pb.ListFaultsResponse.FromString(response).faults) == 3
    else:
        assert (code, named) == (grpc.StatusCode.INVALID_ARGUMENT, [expected])


def token_of(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def position_in(token: str) -> tuple[datetime, str] | None:
    """The (created, fault id) a page token names, read as faultsvc writes its tokens.

    base64url of the JSON [instance_id, created in naive UTC, fault_id]; None
    when the token names no position.
    """
    try:
        payload = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        _instance, created, fault_id = json.loads(payload)
        moment = datetime.fromisoformat(created)
    except (ValueError, TypeError, RecursionError):
        return None
    if moment.tzinfo is not None or not isinstance(fault_id, str):
        return None
    return moment, fault_id


async def full_history(stub: Stub, instance: str) -> list[fault_pb2.Fault]:
    history = await stub.ListFaults(pb.ListFaultsRequest(instance_id=instance, page_size=1000))
    assert not history.next_page_token
    return list(history.faults)


async def assert_refused_or_paged_from_its_position(
    stub: Stub, history: list[fault_pb2.Fault], token: str
) -> None:
    """A token is INVALID_ARGUMENT naming page_token, or pages on from the position it names.

    Never ignored: a token that names no position, answered with the first
    page, fails; so does a page that holds a fault newer than the position.
    """
    instance = history[0].instance_id
    page = await outcome(
        stub.ListFaults(
            pb.ListFaultsRequest(instance_id=instance, page_token=token, page_size=1000)
        )
    )
    if isinstance(page, grpc.aio.AioRpcError):
        assert named_field(page) == "page_token", token
        return
    position = position_in(token)
    assert position is not None, f"{token!r} names no position, yet a page came back"
    older = [f.id for f in history if (f.create_time.ToDatetime(), f.id) < position]
    assert [fault.id for fault in page.faults] == older, token


# Forged positions fall on this date; the history of "i-token" is a fault a day around it.
FORGED_DATE = datetime(2026, 1, 1)
HISTORY_DAYS = range(-3, 3)

FORGED_TOKENS = {
    "not-base64": "!!!",
    "not-json": base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    "json-object": token_of({"a": 1}),
    "wrong-arity": token_of([1, 2]),
    "wrong-types": token_of([1, 2, 3]),
    "not-a-date": token_of(["i-token", "yesterday", "x"]),
    "date-with-zone": token_of(["i-token", "2026-01-01T00:00:00+02:00", "x"]),
    "deeply-nested": base64.urlsafe_b64encode(b"[" * 100_000).decode(),
    "megabyte": "A" * 1_000_000,
    "another-instance": token_of(["i-other", FORGED_DATE.isoformat(), "x"]),
    "sql": token_of(["i-token", FORGED_DATE.isoformat(), "x' OR '1'='1"]),
    "before-the-history": token_of(["i-token", "2000-01-01T00:00:00", "x"]),
    "after-the-history": token_of(["i-token", "2100-01-01T00:00:00", "x"]),
}


@pytest.mark.parametrize("token", list(FORGED_TOKENS.values()), ids=list(FORGED_TOKENS))
async def test_forged_page_tokens_are_invalid_or_page_from_their_position(
    stub: Stub, token: str
) -> None:
    for days in HISTORY_DAYS:
        occurred = timestamp_pb2.Timestamp()
        occurred.FromDatetime(FORGED_DATE + timedelta(days=days, hours=12))
        await record(stub, "i-token", f"day {days}", occur_time=occurred)
        await record(stub, "i-other", f"day {days}", occur_time=occurred)
    history = await full_history(stub, "i-token")
    await assert_refused_or_paged_from_its_position(stub, history, token)


async def test_every_corruption_of_a_real_page_token_is_invalid_or_pages_from_its_position(
    stub: Stub,
) -> None:
    instance = str(uuid.uuid4())
    for n in range(3):
        await record(stub, instance, f"fault {n}", fingerprint=str(n))
    history = await full_history(stub, instance)
    first = await stub.ListFaults(pb.ListFaultsRequest(instance_id=instance, page_size=1))
    token = first.next_page_token
    await assert_refused_or_paged_from_its_position(stub, history, token)
    for position in range(len(token)):
        for replacement in ("A", "_", "=", "é"):
            forged = token[:position] + replacement + token[position + 1 :]
            await assert_refused_or_paged_from_its_position(stub, history, forged)


@pytest.mark.parametrize("count", [1001, 100_000])
async def test_more_than_a_thousand_ids_in_a_batch_is_invalid(stub: Stub, count: int) -> None:
    request = pb.BatchGetLatestFaultsRequest(instance_ids=[f"i-{n}" for n in range(count)])
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.BatchGetLatestFaults(request)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(failure.value) == ["instance_ids"]


SQL = [
    "'; DROP TABLE instance_faults; --",
    '" OR ""="',
    "1' OR '1'='1' /*",
    "%",
    "_",
    "\\'; SELECT SLEEP(10); --",
    "i-1' UNION SELECT id, instance_id FROM instance_faults --",
]


@pytest.mark.parametrize("text", SQL)
async def test_sql_looking_strings_are_data_in_every_field(
    server: FaultServer, stub: Stub, text: str
) -> None:
    recorded = await record(stub, text, text, details=text, source=text, host=text)
    assert recorded.instance_id == text
    latest = await stub.GetLatestFault(pb.GetLatestFaultRequest(instance_id=text), metadata=ADMIN)
    assert (latest.fault.message, latest.fault.details, latest.fault.host) == (text, text, text)
    batch = await stub.BatchGetLatestFaults(
        pb.BatchGetLatestFaultsRequest(instance_ids=[text, "%", "_"])
    )
    assert [fault.id for fault in batch.faults if fault.instance_id == text] == [recorded.id]
    assert {fault.instance_id for fault in batch.faults} <= {text, "%", "_"}
    page = await stub.ListFaults(pb.ListFaultsRequest(instance_id=text))
    assert [fault.id for fault in page.faults] == [recorded.id]
    cleared = await stub.ClearFaults(pb.ClearFaultsRequest(instance_id=text))
    assert cleared.cleared_count == 1
    # The one fault, kept and cleared: no statement wrote, deleted or cleared another.
    assert await stored_rows(server.engine) == 1
    assert await stored_rows(server.engine, live_only=True) == 0


@pytest.mark.parametrize("padded", ["i-pad ", " i-pad", "i-pad\t", "i-pad\u00a0"])
async def test_instance_ids_with_surrounding_whitespace_are_invalid(
    server: FaultServer, stub: Stub, padded: str
) -> None:
    """MariaDB compares "i-pad" and "i-pad " as equal (PAD SPACE): they would be one instance."""
    await record(stub, "i-pad", "the real instance's fault")
    rows = await stored_rows(server.engine, live_only=True)
    for call in (
        stub.RecordFault(pb.RecordFaultRequest(instance_id=padded, message="m")),
        stub.GetLatestFault(pb.GetLatestFaultRequest(instance_id=padded)),
        stub.ListFaults(pb.ListFaultsRequest(instance_id=padded)),
        stub.ClearFaults(pb.ClearFaultsRequest(instance_id=padded)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await call
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_request_fields(failure.value) == ["instance_id"]
    assert await stored_rows(server.engine, live_only=True) == rows
