"""WatchFaults against the real server: every occurrence, live, resumable, redacted for tenants."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from faultsvc.app import FaultServer
from faultsvc.faults import utc_now
from faultsvc.feed import encode_resume_token
from faultsvc.v1 import fault_pb2
from faultsvc.v1 import fault_service_pb2 as pb
from faultsvc.v1.fault_service_pb2_grpc import FaultServiceStub
from tests.support.calls import ADMIN, Metadata, Stub, bad_request_fields, record, stub_of
from tests.support.redaction import admin_only_values
from tests.support.servers import MakeServer

POLL = {"watch_poll_seconds": 0.05}
WAIT_SECONDS = 15.0
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TENANT: Metadata = (("x-roles", "member"),)
Watch = grpc.aio.UnaryStreamCall[pb.WatchFaultsRequest, pb.WatchFaultsResponse]


@pytest.fixture
async def server(make_server: MakeServer) -> FaultServer:
    return await make_server(**POLL)


def watch(stub: Stub, filter_: str = "", metadata: Metadata = ADMIN, **fields: Any) -> Watch:
    request = pb.WatchFaultsRequest(filter=filter_, **fields)
    call: Watch = stub.WatchFaults(request, metadata=metadata)
    return call


async def first_token(call: Watch) -> str:
    """The first response of a watch from now: no occurrence, its resume token."""
    first = await call.read()
    assert isinstance(first, pb.WatchFaultsResponse)
    assert not first.occurrences
    assert first.resume_token
    return first.resume_token


async def occurrences(call: Watch, count: int) -> list[fault_pb2.FaultOccurrence]:
    """The next `count` occurrences the watch streams."""
    return (await streamed(call, count))[0]


async def streamed(call: Watch, count: int) -> tuple[list[fault_pb2.FaultOccurrence], str]:
    """The next `count` occurrences the watch streams, and the last resume token it sent."""
    found: list[fault_pb2.FaultOccurrence] = []
    token = ""
    async with asyncio.timeout(WAIT_SECONDS):
        while len(found) < count:
            response = await call.read()
            assert isinstance(response, pb.WatchFaultsResponse), response
            found += response.occurrences
            token = response.resume_token
    return found, token


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    raise AssertionError("no ErrorInfo")


async def test_an_admin_watches_every_instance_as_faults_are_recorded(stub: Stub) -> None:
    before = await record(stub, "i-before", "before the watch")
    call = watch(stub)
    await first_token(call)
    fault_ids = [str(uuid.uuid4()) for _ in range(3)]
    await record(stub, "i-1", "Volume attach failed", fault_id=fault_ids[0], host="db-7")
    await record(
        stub, "i-1", "Volume attach failed", fault_id=fault_ids[1], request_id="req-2", host="db-8"
    )
    await record(stub, "i-2", "Resize failed", fault_id=fault_ids[2], details="trace")
    streamed = await occurrences(call, 3)
    call.cancel()
    assert [o.id for o in streamed] == fault_ids
    assert before.id not in [o.fault.id for o in streamed]
    first, repeat, other = streamed
    assert (first.fault.id, first.fault.occurrence_count) == (fault_ids[0], 1)
    assert (repeat.fault.id, repeat.fault.occurrence_count) == (fault_ids[0], 2)
    assert repeat.request_id == "req-2"
    assert repeat.fault.host == "db-8"  # an admin's: host is shown
    assert other.fault.details == ""  # BASIC unless asked: no details in a stream
    assert other.record_time.ToDatetime() >= first.record_time.ToDatetime()
    assert abs(other.record_time.ToDatetime() - utc_now()) < timedelta(minutes=1)


async def test_an_admin_who_asks_sees_the_details(stub: Stub) -> None:
    call = watch(stub, view=pb.FAULT_VIEW_FULL)
    await first_token(call)
    await record(stub, "i-1", details="Traceback: frame", trace_id=TRACE_ID, host="db-7")
    (occurrence,) = await occurrences(call, 1)
    call.cancel()
    assert occurrence.fault.details == "Traceback: frame"
    assert {path.rpartition(".")[2] for path in admin_only_values(occurrence)} == {
        "details",
        "host",
        "trace_id",
    }


@pytest.mark.parametrize("view", [pb.FAULT_VIEW_UNSPECIFIED, pb.FAULT_VIEW_FULL])
async def test_someone_not_admin_watches_one_instance_without_admin_only_fields(
    stub: Stub, view: pb.FaultView.ValueType
) -> None:
    instance = str(uuid.uuid4())
    call = watch(stub, f'instance_id = "{instance}"', TENANT, view=view)
    await first_token(call)
    await record(stub, "another", details="trace", host="db-7", trace_id=TRACE_ID)
    await record(stub, instance, details="trace", host="db-7", trace_id=TRACE_ID)
    (occurrence,) = await occurrences(call, 1)
    call.cancel()
    assert occurrence.fault.instance_id == instance
    assert admin_only_values(occurrence) == []
    assert occurrence.fault.message == "boom"


@pytest.mark.parametrize(
    "filter_",
    ["", 'source = "api"', 'instance_id = "i-1" AND host = "db-7"'],
    ids=["every instance", "by source", "by host"],
)
async def test_someone_not_admin_may_not_watch_the_fleet_or_by_host(
    stub: Stub, filter_: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await watch(stub, filter_, TENANT).read()
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(denied.value).reason == "ADMIN_ONLY"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"filter": 'last_occur_time > "2026-11-29T08:00:00Z"'}, "filter"),
        ({"filter": "source = api"}, "filter"),
        ({"resume_token": "not-a-token"}, "resume_token"),
        ({"resume_token": encode_resume_token(utc_now() + timedelta(hours=1))}, "resume_token"),
        ({"view": 7}, "view"),
    ],
)
async def test_a_watch_it_cannot_follow_is_invalid_naming_the_field(
    stub: Stub, fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.WatchFaults(pb.WatchFaultsRequest(**fields), metadata=ADMIN).read()
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(refused.value) == [field]


async def test_a_token_older_than_the_replay_window_is_out_of_range(stub: Stub) -> None:
    old = encode_resume_token(utc_now() - timedelta(hours=2))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await watch(stub, resume_token=old).read()
    assert refused.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert error_info(refused.value).reason == "RESUME_TOKEN_EXPIRED"
    assert "SearchFaults" in (refused.value.details() or "")


async def test_a_watch_resumes_from_its_token_without_missing_anything(stub: Stub) -> None:
    call = watch(stub)
    await first_token(call)
    seen = await record(stub, "i-1", "seen")
    _, token = await streamed(call, 1)
    call.cancel()
    missed = [await record(stub, f"i-{n}", "missed") for n in range(2, 5)]
    resumed = watch(stub, resume_token=token)
    replayed = await occurrences(resumed, 3)
    live = await record(stub, "i-5", "live")
    replayed += await occurrences(resumed, 1)
    resumed.cancel()
    # What was recorded shortly before the token may come again; nothing after it is missed.
    assert [o.fault.id for o in replayed if o.fault.id != seen.id] == [
        *(fault.id for fault in missed),
        live.id,
    ]


async def until_it_ends(call: Watch, token: str) -> tuple[list[str], str, grpc.aio.AioRpcError]:
    """The fault ids a watch streams until it fails, its last token, and how it failed."""
    ids: list[str] = []
    try:
        async with asyncio.timeout(WAIT_SECONDS):
            while isinstance(response := await call.read(), pb.WatchFaultsResponse):
                ids += [o.fault.id for o in response.occurrences]
                token = response.resume_token
    except grpc.aio.AioRpcError as error:
        return ids, token, error
    raise AssertionError("the watch ended without an error")


async def test_a_watcher_that_cannot_keep_up_is_told_so_with_its_resume_token(
    make_server: MakeServer,
) -> None:
    """Large faults fill the stream's flow-control window; then the watcher's queue fills.

    The client keeps the window at HTTP/2's initial 64 KiB (no BDP probing, which would grow
    it to megabytes), so that a few unread faults are enough.
    """
    server = await make_server(**POLL, watch_queue_size=5)
    big = "x" * 60_000
    options = [("grpc.http2.bdp_probe", 0)]
    async with (
        stub_of(server.target) as stub,
        grpc.aio.insecure_channel(server.target, options=options) as narrow,
    ):
        call = watch(FaultServiceStub(narrow), view=pb.FAULT_VIEW_FULL)
        token = await first_token(call)
        recorded = [await record(stub, f"i-{n}", details=big) for n in range(40)]
        await asyncio.sleep(1)  # the watcher reads nothing meanwhile
        ids, token, ended = await until_it_ends(call, token)
        assert ended.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info = error_info(ended)
        assert info.reason == "WATCHER_TOO_SLOW"
        assert info.metadata["resume_token"] == token
        assert "resume" in (ended.details() or "")
        assert len(ids) < len(recorded)
        resumed = watch(stub, resume_token=info.metadata["resume_token"])
        ids += [o.fault.id for o in await occurrences(resumed, len(recorded) - len(ids))]
        resumed.cancel()
    assert {fault.id for fault in recorded} <= set(ids)


async def test_stopping_the_server_ends_watches_at_once_with_their_token(
    make_server: MakeServer,
) -> None:
    server = await make_server(**POLL, grace_seconds=30)
    async with stub_of(server.target) as stub:
        call = watch(stub)
        token = await first_token(call)
        started = time.monotonic()
        await server.stop()
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await call.read()
    assert time.monotonic() - started < 10  # not the grace period
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    info = error_info(ended.value)
    assert info.reason == "WATCH_INTERRUPTED"
    assert info.metadata["resume_token"] == token


async def test_a_watch_counts_in_the_metrics_with_the_status_it_ended_with(
    server: FaultServer, stub: Stub
) -> None:
    denied = watch(stub, metadata=TENANT)
    with pytest.raises(grpc.aio.AioRpcError):
        await denied.read()

    def denied_watches() -> float | None:
        samples = {
            tuple(sorted(sample.labels.items())): sample.value
            for family in server.metrics_registry.collect()
            for sample in family.samples
            if sample.name == "faultsvc_rpc_requests_total"
        }
        return samples.get((("code", "PERMISSION_DENIED"), ("method", "WatchFaults")))

    # The caller has its status as soon as it is sent; the server counts the
    # call when its handler returns, a moment later: up to 5 s for that.
    for _ in range(500):
        if denied_watches() is not None:
            break
        await asyncio.sleep(0.01)
    assert denied_watches() == 1
