"""Arbitrary input in every field, against the running server (property-based, hypothesis).

The property, for every RPC: the call succeeds and what is read back is exactly
what was sent (after the documented truncation), or it fails INVALID_ARGUMENT
with a google.rpc.BadRequest naming a field that is wrong; never another code,
never anything stored by a call that failed, and the server keeps serving.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from faultsvc.app import FaultServer
from faultsvc.v1 import fault_pb2
from faultsvc.v1 import fault_service_pb2 as pb
from tests.robustness.outcomes import named_field, outcome, stored_rows
from tests.robustness.wire import raw_method
from tests.support.calls import ADMIN, Stub, record
from tests.support.rpcs import METHODS, SCOPED_METHODS, SERVICE

# The documented limits (DESIGN.md), written out here rather than imported from the server.
MARKER = "... [truncated]"
MESSAGE_CHARS = 255
LABEL_CHARS = 255
DETAILS_BYTES = 65_535
ID_CHARS = 64
CLOCK_SKEW = timedelta(minutes=5)

FUZZ = settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Every Unicode code point but lone surrogates, which no UTF-8 string can hold
# (those are sent as bytes in test_request_bytes.py).
texts = st.text()
long_texts = st.builds(
    lambda chunk, times: chunk * times, st.text(min_size=1, max_size=4), st.integers(1, 80)
)
huge_texts = st.builds(
    lambda chunk, times: chunk * times, st.text(min_size=1, max_size=4), st.integers(8_000, 70_000)
)
instance_ids = st.one_of(texts, st.text(min_size=60, max_size=70), st.uuids().map(str))


def cut_chars(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(MARKER)] + MARKER


def cut_details(text: str) -> str:
    encoded = text.encode()
    if len(encoded) <= DETAILS_BYTES:
        return text
    marker = "\n" + MARKER
    return encoded[: DETAILS_BYTES - len(marker.encode())].decode(errors="ignore") + marker


def instance_id_is_valid(value: str) -> bool:
    return bool(value.strip()) and value == value.strip() and len(value) <= ID_CHARS


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def occur_time_is_valid(stamp: Timestamp, now: datetime) -> bool | None:
    """Whether the server must accept `stamp`; None within a minute of its limit (clock race)."""
    if not 0 <= stamp.nanos <= 999_999_999 or stamp.seconds < 0:
        return False
    if stamp.seconds > (now + CLOCK_SKEW + timedelta(minutes=1)).timestamp():
        return False
    if stamp.seconds > (now + CLOCK_SKEW - timedelta(minutes=1)).timestamp():
        return None
    return True


fault_ids: st.SearchStrategy[Callable[[], str] | None] = st.one_of(
    st.none(),
    # A fresh UUID, spelled in any way uuid.UUID accepts: stored in canonical form.
    st.sampled_from(
        [
            lambda: str(uuid.uuid4()),
            lambda: str(uuid.uuid4()).upper(),
            lambda: "{%s}" % uuid.uuid4(),  # noqa: UP031
            lambda: uuid.uuid4().hex,
            lambda: uuid.uuid4().urn,
        ]
    ),
    texts.filter(lambda text: not is_uuid(text)).map(lambda text: lambda: text),
)
occur_times = st.one_of(
    st.none(),
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2026, 1, 1)).map(
        lambda moment: Timestamp(
            seconds=int(moment.replace(tzinfo=UTC).timestamp()), nanos=moment.microsecond * 1000
        )
    ),
    st.builds(
        Timestamp,
        seconds=st.integers(-(2**63), 2**63 - 1),
        nanos=st.integers(-(2**31), 2**31 - 1),
    ),
)


@pytest.fixture(autouse=True)
async def still_serving_afterwards(stub: Stub) -> AsyncIterator[None]:
    yield
    instance = f"after-{uuid.uuid4()}"
    recorded = await record(stub, instance, "still serving")
    latest = await stub.GetLatestFault(pb.GetLatestFaultRequest(instance_id=instance))
    assert latest.fault == recorded


async def history_fault(stub: Stub, instance_id: str, fault_id: str) -> fault_pb2.Fault:
    """The fault `fault_id` as ListFaults pages through its instance's history."""
    token = ""
    while True:
        page = await stub.ListFaults(
            pb.ListFaultsRequest(instance_id=instance_id, page_size=1000, page_token=token),
            metadata=ADMIN,
        )
        for fault in page.faults:
            if fault.id == fault_id:
                return fault
        assert page.next_page_token, f"{fault_id} is not in the history of {instance_id!r}"
        token = page.next_page_token


@settings(FUZZ, max_examples=150)
@given(
    instance_id=instance_ids,
    message=st.one_of(texts, long_texts),
    details=st.one_of(texts, huge_texts),
    source=st.one_of(texts, long_texts),
    host=st.one_of(texts, long_texts),
    make_fault_id=fault_ids,
    occur_time=occur_times,
)
async def test_record_stores_exactly_what_was_sent_or_names_the_field(
    server: FaultServer,
    stub: Stub,
    instance_id: str,
    message: str,
    details: str,
    source: str,
    host: str,
    make_fault_id: Callable[[], str] | None,
    occur_time: Timestamp | None,
) -> None:
    fault_id = make_fault_id() if make_fault_id else None
    request = pb.RecordFaultRequest(
        instance_id=instance_id,
        message=message,
        details=details,
        source=source,
        host=host,
        fault_id=fault_id,
        occur_time=occur_time,
        fingerprint=str(uuid.uuid4()),  # a fault of its own: stored as sent, not counted into
    )
    now = datetime.now(UTC)
    occur_time_valid = True if occur_time is None else occur_time_is_valid(occur_time, now)
    assume(occur_time_valid is not None)
    invalid = {
        name
        for name, valid in [
            ("instance_id", instance_id_is_valid(instance_id)),
            ("message", bool(message.strip())),
            ("fault_id", fault_id is None or is_uuid(fault_id)),
            ("occur_time", occur_time_valid),
        ]
        if not valid
    }
    rows = await stored_rows(server.engine)
    response = await outcome(stub.RecordFault(request, metadata=ADMIN))
    if isinstance(response, grpc.aio.AioRpcError):
        event(f"rejected: {named_field(response)}")
        assert named_field(response) in invalid
        assert await stored_rows(server.engine) == rows
        return
    event("stored")
    fault = response.fault
    assert not invalid, f"accepted a request with invalid {invalid}"
    assert await stored_rows(server.engine) == rows + 1
    expected = {
        "instance_id": instance_id,
        "message": cut_chars(message, MESSAGE_CHARS),
        "details": cut_details(details),
        "source": cut_chars(source, LABEL_CHARS),
        "host": cut_chars(host, LABEL_CHARS),
    }
    assert {name: getattr(fault, name) for name in expected} == expected
    if fault_id is not None:
        assert fault.id == str(uuid.UUID(fault_id))
    if occur_time is not None:
        assert (fault.create_time.seconds, fault.create_time.nanos) == (
            occur_time.seconds,
            occur_time.nanos // 1000 * 1000,
        )
    assert await history_fault(stub, instance_id, fault.id) == fault


@FUZZ
@given(instance_id=instance_ids)
async def test_latest_and_clear_answer_or_name_the_instance_id(
    server: FaultServer, stub: Stub, instance_id: str
) -> None:
    live = await stored_rows(server.engine, live_only=True)
    latest = await outcome(stub.GetLatestFault(pb.GetLatestFaultRequest(instance_id=instance_id)))
    cleared = await outcome(stub.ClearFaults(pb.ClearFaultsRequest(instance_id=instance_id)))
    if instance_id_is_valid(instance_id):
        assert not isinstance(latest, grpc.aio.AioRpcError), latest
        assert not isinstance(cleared, grpc.aio.AioRpcError), cleared
    else:
        assert isinstance(latest, grpc.aio.AioRpcError)
        assert isinstance(cleared, grpc.aio.AioRpcError)
        assert named_field(latest) == named_field(cleared) == "instance_id"
        assert await stored_rows(server.engine, live_only=True) == live


@FUZZ
@given(ids=st.lists(instance_ids, max_size=30))
async def test_batch_answers_or_names_the_first_bad_id(stub: Stub, ids: list[str]) -> None:
    first_invalid = next(
        (index for index, value in enumerate(ids) if not instance_id_is_valid(value)), None
    )
    batch = await outcome(
        stub.BatchGetLatestFaults(pb.BatchGetLatestFaultsRequest(instance_ids=ids))
    )
    if isinstance(batch, grpc.aio.AioRpcError):
        assert named_field(batch) == f"instance_ids[{first_invalid}]"
    else:
        assert first_invalid is None


def token_of(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda children: st.lists(children) | st.dictionaries(texts, children),
    max_leaves=10,
)


@FUZZ
@given(
    instance_id=st.one_of(st.just("i-fuzz"), instance_ids),
    page_size=st.integers(-(2**31), 2**31 - 1),
    data=st.data(),
)
async def test_list_answers_a_page_of_the_instance_or_names_the_field(
    stub: Stub, instance_id: str, page_size: int, data: st.DataObject
) -> None:
    for n in range(3):
        await record(stub, "i-fuzz", f"fault {n}")
    page_token = data.draw(
        st.one_of(
            st.just(""),
            texts,
            json_values.map(token_of),
            st.tuples(
                st.just(instance_id),
                st.one_of(st.datetimes().map(datetime.isoformat), texts),
                texts,
            ).map(lambda cursor: token_of(list(cursor))),
        ),
        label="page_token",
    )
    request = pb.ListFaultsRequest(
        instance_id=instance_id, page_size=page_size, page_token=page_token
    )
    page = await outcome(stub.ListFaults(request))
    if isinstance(page, grpc.aio.AioRpcError):
        field = named_field(page)
        assert field in {"instance_id", "page_size", "page_token"}
        if field == "instance_id":
            assert not instance_id_is_valid(instance_id)
        if field == "page_size":
            assert page_size < 0
    else:
        assert instance_id_is_valid(instance_id)
        assert page_size >= 0
        assert len(page.faults) <= min(page_size or 50, 1000)
        assert {fault.instance_id for fault in page.faults} <= {instance_id}


@FUZZ
@given(method=st.sampled_from(METHODS), data=st.binary(max_size=300))
async def test_any_bytes_are_ok_or_invalid_argument(
    server: FaultServer, method: str, data: bytes
) -> None:
    rows = await stored_rows(server.engine)
    async with grpc.aio.insecure_channel(server.target) as channel:
        answer = await outcome(raw_method(channel, f"/{SERVICE.full_name}/{method}")(data))
    if isinstance(answer, grpc.aio.AioRpcError):
        # The caller is not an admin: an admin-only RPC refuses it, whatever it sends, and so
        # does WatchFaults unless it names one instance.
        allowed = {grpc.StatusCode.INVALID_ARGUMENT}
        if method in SCOPED_METHODS:
            allowed.add(grpc.StatusCode.PERMISSION_DENIED)
        assert answer.code() in allowed, (answer.code(), answer.details())
        assert await stored_rows(server.engine) == rows
